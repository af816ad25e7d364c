#!/usr/bin/env python3
"""Speak in-domain sentences in several synthetic voices: a bootstrap fine-tuning corpus.

An operator without recordings yet can still teach the recogniser their
domain's words (product names, the bank's own vocabulary) by speaking their
knowledge base with espeak-ng in several voices, rates and pitches.  Output: a
folder of 16 kHz WAV files and a ``manifest.jsonl`` in the format
``scripts/finetune_asr.py`` and ``scripts/evaluate_asr.py`` read
(``audio``, ``text``, ``language``, ``speaker``).  The ``speaker`` is the voice
used, so a split by speaker holds voices out.

    python scripts/synth_corpus.py --kb models/data/demo_bank_kb.yaml --language kk OUT/
    python scripts/synth_corpus.py --text-file lines.txt --language kk --voices m1,f2 OUT/
    python scripts/synth_corpus.py --heldout tests/data/kb_heldout.jsonl --language kk OUT/

Real recordings of real callers are worth far more than this (see
docs/finetuning.md); synthetic speech only adapts the model to the domain's
words and to a synthetic timbre, so always evaluate on held-out human speech too.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, beside this script
from benchlib import RATE, EspeakMissing, espeak  # noqa: E402  (benchlib also puts the project root on sys.path)

from models.audio import AudioChunk, write_wav  # noqa: E402

DEFAULT_VOICES = ["m1", "m3", "f1", "f3", "m5"]
"""espeak-ng voice variants (``kk+m3``): timbre, not language."""


def kb_sentences(kb_path: Path, language: str) -> list[str]:
    """Example questions and answer sentences of a knowledge base, in ``language``."""
    import yaml

    from models.text import MIN_CHARS, split_sentences

    kb = yaml.safe_load(Path(kb_path).read_text(encoding="utf-8"))
    out: list[str] = []
    for entry in kb.get("entries", []):
        out.extend(entry.get("questions", {}).get(language, []) or [])
        answer = (entry.get("answer") or {}).get(language)
        if answer:
            out.extend(split_sentences(answer, min_chars=MIN_CHARS))
    return _unique(out)


def heldout_sentences(path: Path, language: str) -> list[str]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return _unique(r["text"] for r in rows if r.get("language") == language and not r.get("noisy"))


def _unique(texts) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in texts:
        t = re.sub(r"\s+", " ", str(t)).strip()
        if t and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def speak(text: str, voice: str, rate_wpm: int, pitch: int, out: Path) -> float:
    """espeak-ng -> 16 kHz mono WAV at ``out``; returns the duration in seconds."""
    try:
        audio = AudioChunk(espeak(text, voice, rate_wpm, pitch=pitch), RATE)
    except EspeakMissing as e:
        raise SystemExit(str(e)) from None
    write_wav(out, audio)
    return len(audio.samples) / audio.rate


def synthesize(
    texts: list[str],
    language: str,
    out_dir: Path,
    *,
    voices: list[str],
    per_text: int = 1,
    seed: int = 0,
    prefix: str = "utt",
    jobs: int = 2,
) -> Path:
    """Speak each text ``per_text`` times (distinct voices drawn at random); write the manifest."""
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    plan = []
    for i, text in enumerate(texts):
        for v in rng.sample(voices, min(per_text, len(voices))):
            rate = rng.randint(130, 185)
            pitch = rng.randint(35, 65)
            name = f"{prefix}{i:05d}_{v}.wav"
            plan.append((text, v, rate, pitch, name))

    def one(item):
        text, v, rate, pitch, name = item
        dur = speak(text, f"{language}+{v}" if v != "default" else language, rate, pitch, out_dir / "audio" / name)
        return {"audio": f"audio/{name}", "text": text, "language": language, "speaker": f"espeak-{v}", "duration_s": round(dur, 3), "source": "espeak-ng (synthetic)"}

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        rows = list(pool.map(one, plan))
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--kb", type=Path, help="a knowledge base YAML (questions + answer sentences)")
    src.add_argument("--heldout", type=Path, help="a held-out questions JSONL (scripts/eval_kb.py format; noisy rows skipped)")
    src.add_argument("--text-file", type=Path, help="one sentence per line")
    p.add_argument("--language", default="kk")
    p.add_argument("--voices", default=",".join(DEFAULT_VOICES), help="espeak-ng variants, comma-separated (default: %(default)s)")
    p.add_argument("--per-text", type=int, default=1, help="voices per sentence")
    p.add_argument("--limit", type=int, default=0, help="at most this many sentences (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    if a.kb:
        texts = kb_sentences(a.kb, a.language)
    elif a.heldout:
        texts = heldout_sentences(a.heldout, a.language)
    else:
        texts = _unique(a.text_file.read_text(encoding="utf-8").splitlines())
    if a.limit:
        texts = texts[: a.limit]
    if not texts:
        raise SystemExit(f"no {a.language} sentences found")
    voices = [v.strip() for v in a.voices.split(",") if v.strip()]
    manifest = synthesize(texts, a.language, a.out, voices=voices, per_text=a.per_text, seed=a.seed, jobs=a.jobs)
    n = sum(1 for _ in manifest.open(encoding="utf-8"))
    print(f"{n} utterances of {len(texts)} sentences -> {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
