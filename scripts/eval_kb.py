#!/usr/bin/env python3
"""Top-1 retrieval accuracy of a knowledge base on held-out questions (docs/knowledge_base.md).

    python scripts/eval_kb.py                              # the demo KB, tests/data/kb_heldout.jsonl
    python scripts/eval_kb.py --kb my_kb.yaml --heldout my_questions.jsonl
    python scripts/eval_kb.py --asr                        # also: spoken by espeak-ng, transcribed by the server's ASR

The held-out file has one JSON object per line:
    {"text": "...", "language": "kk", "expected": "card_blocked", "noisy": false}
``expected`` is an entry id, or null for a question the knowledge base should
not answer (then the engine must ask to rephrase: its score must stay below
the threshold).  ``noisy`` marks hand-written recognition-error variants.

Reported: top-1 accuracy (the best entry is the expected one), "answered
correctly" (top-1 right and above the threshold, so the caller hears the right
answer) and "answered wrongly" (a wrong entry above the threshold: the caller
hears a wrong answer; the rest are asked to rephrase), overall, by language and
clean vs noisy, plus every miss.  With
``--asr`` each question is synthesised with espeak-ng (voice = its language),
transcribed by the project's recogniser with the language fixed, and the
transcript is retrieved; the same figures are reported for that text.
Exit status 1 if a held-out question is also an example question of the KB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, beside this script
from benchlib import ROOT, EspeakMissing, espeak  # noqa: E402  (benchlib also puts the project root on sys.path)

from models.dialogue.kb import KnowledgeBase, normalise  # noqa: E402

DEFAULT_HELDOUT = ROOT / "tests" / "data" / "kb_heldout.jsonl"
ESPEAK_VOICES = {"kk": "kk", "ru": "ru", "uz": "uz", "ky": "ky", "tt": "tt", "tr": "tr", "az": "az", "en": "en"}


def load_heldout(path: str | Path) -> list[dict]:
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}: line {n}: not JSON: {e.msg}")
        for key in ("text", "language", "expected"):
            if key not in row:
                raise SystemExit(f"{path}: line {n}: missing {key!r}")
        row.setdefault("noisy", False)
        items.append(row)
    return items


def leaks(kb: KnowledgeBase, items: list[dict]) -> list[str]:
    """Held-out questions that are (after normalisation) example questions of the KB."""
    known = {normalise(q) for e in kb.entries for qs in e.questions.values() for q in qs}
    return [it["text"] for it in items if normalise(it["text"]) in known]


def evaluate(kb: KnowledgeBase, items: list[dict], texts: list[str] | None = None) -> dict:
    """Accuracy figures for ``items`` (retrieving ``texts`` instead of the items' own text when given),
    under the knowledge base's decision settings: answered at once, confirmed (the expected entry
    is put to the caller, who says yes), answered wrongly (another entry answered at once)."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # top1, answered right, confirmed right, answered wrong, n
    misses, ood = [], [0, 0]
    for i, it in enumerate(items):
        text = it["text"] if texts is None else texts[i]
        scores = kb.scores_for(text)
        act, picks, score, _ = kb.decide(scores)
        ids = [kb.entries[p].id for p in picks]
        best = kb.entries[int(scores.argmax())].id
        if it["expected"] is None:
            ood[1] += 1
            ood[0] += act != "answer"
            if act == "answer":
                misses.append({"text": text, "language": it["language"], "expected": None, "got": ids[0], "score": score, "why": "answered"})
            continue
        right = best == it["expected"]
        answered = act == "answer" and ids[0] == it["expected"]
        confirmed = act in ("confirm", "choose") and it["expected"] in ids
        wrong = act == "answer" and ids[0] != it["expected"]
        keys = ["all", f"lang:{it['language']}", "noisy" if it.get("noisy") else "clean"]
        for key in keys:
            g = groups[key]
            g[0] += right
            g[1] += answered
            g[2] += confirmed
            g[3] += wrong
            g[4] += 1
        if not answered:
            misses.append({
                "text": text, "source": it["text"] if texts is not None else None, "language": it["language"],
                "expected": it["expected"], "got": best, "score": score,
                "why": "ANSWERED WRONGLY" if wrong else f"{act} {'/'.join(ids)}" if ids else "below threshold (rephrase)",
            })
    figures = {
        k: {"top1": g[0] / g[4], "answered": g[1] / g[4], "confirmed": g[2] / g[4], "wrong_answer": g[3] / g[4], "n": g[4]}
        for k, g in groups.items()
    }
    if ood[1]:
        figures["out_of_scope_rejected"] = {"rate": ood[0] / ood[1], "n": ood[1]}
    return {"figures": figures, "misses": misses}


def print_report(title: str, result: dict, threshold: float) -> None:
    print(f"\n== {title}  (threshold {threshold})")
    figs = result["figures"]
    order = ["all", "clean", "noisy"] + sorted(k for k in figs if k.startswith("lang:"))
    for key in order:
        if key in figs:
            f = figs[key]
            print(f"  {key:<10} top-1 {f['top1']:6.1%}   answered correctly {f['answered']:6.1%}   "
                  f"right after confirming {f['confirmed']:6.1%}   answered wrongly {f['wrong_answer']:6.1%}   (n={f['n']})")
    if "out_of_scope_rejected" in figs:
        f = figs["out_of_scope_rejected"]
        print(f"  out of scope: not answered (asked to rephrase or to confirm) {f['rate']:6.1%}   (n={f['n']})")
    if result["misses"]:
        print("  misses:")
        for m in result["misses"]:
            src = f"  [said: {m['source']}]" if m.get("source") else ""
            print(f"    {m['language']} {m['text']!r}{src} -> {m['got']} ({m['score']:.3f}), expected {m['expected']}"
                  + (f", {m['why']}" if m.get("why") else ""))


def synthesise(text: str, language: str, rate_wpm: int):
    """``text`` spoken by espeak-ng in ``language``'s voice, 16 kHz."""
    try:
        return espeak(text, ESPEAK_VOICES.get(language, language), rate_wpm)
    except EspeakMissing as e:
        raise SystemExit(str(e)) from None


def asr_transcripts(items: list[dict], config: str | None, rate_wpm: int) -> tuple[list[str], float]:
    """Each question spoken by espeak-ng and transcribed by the server's recogniser (language fixed)."""
    from models.vad import SileroVad
    from models.whisper import load_whisper
    from pipeline.offline import transcribe_audio
    from server.config import load_settings

    settings = load_settings(config, cli={"asr": {"download": False}})
    engine = load_whisper(settings.asr)
    vad = SileroVad()
    out = []
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        samples = synthesise(it["text"], it["language"], rate_wpm)
        segments = list(transcribe_audio(engine, vad, settings, samples, it["language"]))
        text = " ".join(s["text"].strip() for s in segments if s["text"].strip())
        out.append(text)
        print(f"  [{i + 1}/{len(items)}] {it['language']} {it['text']!r} -> {text!r}", file=sys.stderr, flush=True)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb", help="knowledge base file (default: the demo bank KB)")
    p.add_argument("--heldout", default=str(DEFAULT_HELDOUT), help="held-out questions (JSON lines)")
    p.add_argument("--asr", action="store_true", help="also speak each question with espeak-ng and retrieve the ASR transcript")
    p.add_argument("--config", help="Dauys config file for the recogniser (--asr)")
    p.add_argument("--rate", type=int, default=150, help="espeak-ng speaking rate, words per minute (--asr)")
    p.add_argument("--json", help="write all figures and misses to this file")
    args = p.parse_args(argv)

    kb = KnowledgeBase.load(args.kb)
    items = load_heldout(args.heldout)
    print(f"knowledge base {kb.model_id}: {len(kb)} entries; held-out {args.heldout}: {len(items)} questions")
    for entry, term, other, question in kb.shared_terms():
        print(f"warning: entry {entry!r} term {' '.join(term)!r} also matches a question of {other!r}: {question!r}")
    leaked = leaks(kb, items)
    if leaked:
        print(f"error: {len(leaked)} held-out question(s) are example questions of the KB: {leaked[:5]}", file=sys.stderr)
        return 1
    report = {"kb": kb.model_id, "threshold": kb.threshold, "n": len(items)}
    report["text"] = evaluate(kb, items)
    print_report("typed text", report["text"], kb.threshold)
    if args.asr:
        in_scope = [it for it in items if it["expected"] is not None]
        print(f"\nspeaking {len(in_scope)} questions with espeak-ng and transcribing them ...", file=sys.stderr)
        texts, seconds = asr_transcripts(in_scope, args.config, args.rate)
        report["asr"] = evaluate(kb, in_scope, texts)
        report["asr"]["transcripts"] = [{"said": it["text"], "heard": t, "language": it["language"]} for it, t in zip(in_scope, texts)]
        report["asr"]["seconds"] = round(seconds, 1)
        print_report(f"espeak-ng speech -> ASR transcript ({seconds:.0f} s)", report["asr"], kb.threshold)
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
