#!/usr/bin/env python3
"""Does the caller get the right answer? Understanding measured as real calls, with clarifying turns.

    .venv/bin/python scripts/bench_understanding.py                      # test split: typed, clean, phone
    .venv/bin/python scripts/bench_understanding.py --channels typed,phone --limit 20
    .venv/bin/python scripts/bench_understanding.py --calibrate          # tuning split -> decision settings
    .venv/bin/python scripts/bench_understanding.py --url ws://127.0.0.1:8765/v1/voice

The questions: ``scripts/data/bench_understanding.jsonl`` (fresh kk and ru
paraphrases of the demo bank's questions, about a tenth out of scope with
``expected: null``; written for this benchmark, none of them a knowledge-base
example or in tests/data/kb_heldout.jsonl), with a ``tune`` and a ``test``
split.

Calls (the default, on the test split). For each question and channel, one
session over the native protocol against a real ``dauys serve`` (started here
with the embedded defaults, or ``--url``), the language fixed to the
question's:

* typed: the question as a ``text`` message;
* clean: spoken by espeak-ng, sent as 16 kHz PCM;
* phone: the same speech through the repo's phone leg (models.finetune.degrade
  ``phone_degrade``: 300-3400 Hz, gain, noise at 15-30 dB SNR, mu-law) sent
  as 8 kHz mu-law, as a phone platform sends it;
* human (``--channels ...,human``): the shared human Kazakh recordings
  (``--audio-dir``, default ../shared/audio); they are not bank questions, so
  the right outcome is no answer (counted as declined), any answer is wrong.

The test split is spoken by espeak-ng voices and rates never used for tuning
(``kk+f3``/``ru+f3`` at 135 wpm and ``kk+m3``/``ru+m3`` at 170 wpm, alternating;
tuning uses the plain voices at 150 wpm). The caller plays along with the
clarifying turns, truthfully from the expected entry: a confirmation gets
"иә"/"жоқ" ("да"/"нет"), a choice "біріншісі"/"екіншісі" ("первое"/"второе")
or "жоқ" when neither is right, spoken in the same voice (typed on the typed
channel); ``--answers dtmf`` presses 1/2 instead on the spoken channels (a
``keypad`` session). At most ``--max-turns`` (4) turns a call.

Per language and channel it prints: answered right on the first turn, right
after clarification, confidently wrong (an answer from another entry, or any
answer to an out-of-scope question), handed off, asked to rephrase or repeat
(for out-of-scope questions that is the right outcome, counted as "declined"),
and the mean number of turns to the right answer. ``--json OUT`` writes the
report with every call.

Calibration (``--calibrate``): the tuning split typed, and spoken with the
tuning voices clean and through the phone leg, recognised offline by the
server's own recogniser (the same code and weights, n-best), then the
decision settings (``settings.threshold``, ``answer_threshold``,
``answer_margin``, ``choose_margin`` of the knowledge base) are searched for the most questions
answered right (first turn or after one clarification, the caller assumed to
be heard saying yes or no), less half a point for each clarifying question
that offered only wrong topics (a turn wasted), with no typed question and at most
``--max-wrong`` (3 %) of spoken ones answered wrong. It prints the best
settings; they are what ``models/dialogue/kb.py`` ships as defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, beside this script
from benchlib import ROOT, BenchError, espeak, run_with_server, say  # noqa: E402  (also puts the project root on sys.path)

from models.audio import Encoding, encode_wire, resample  # noqa: E402

DEFAULT_DATA = ROOT / "scripts" / "data" / "bench_understanding.jsonl"
RATE = 16000
TUNE_VOICES = {"kk": [("kk", 150)], "ru": [("ru", 150)]}
TEST_VOICES = {"kk": [("kk+f3", 135), ("kk+m3", 170)], "ru": [("ru+f3", 135), ("ru+m3", 170)]}
ANSWERS = {
    "kk": {"yes": "Иә", "no": "Жоқ", "first": "Біріншісі", "second": "Екіншісі"},
    "ru": {"yes": "Да", "no": "Нет", "first": "Первое", "second": "Второе"},
}
CHANNELS = ("typed", "clean", "phone", "human")
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
MISS_COST = 0.5
"""--calibrate: a clarifying question that offered only wrong topics costs half a right answer."""
OUTCOMES = ("right_first", "right_clarified", "wrong", "handoff", "declined", "unanswered")


@dataclass
class Item:
    text: str
    language: str
    expected: str | None
    split: str
    index: int
    audio_path: str | None = None
    """A human recording (the ``human`` channel) instead of synthesised speech."""


def human_items(audio_dir: Path) -> list[Item]:
    """The shared human clips in kk/ru (not bank questions: the right outcome is no answer)."""
    manifest = audio_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise BenchError(f"no {manifest}: --audio-dir names the shared clips (../shared/audio)", 2)
    out = []
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            row = json.loads(line)
            if row.get("lang") in ("kk", "ru"):
                out.append(Item(row["text"], row["lang"], None, "test", 10_000 + n, str(audio_dir / row["file"])))
    return out


def load_items(path: Path, split: str | None) -> list[Item]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if split and row["split"] != split:
            continue
        items.append(Item(row["text"], row["language"], row.get("expected"), row["split"], n))
    return items


def voice_for(item: Item, split: str) -> tuple[str, int]:
    voices = (TUNE_VOICES if split == "tune" else TEST_VOICES)[item.language]
    return voices[item.index % len(voices)]


def phone_leg(audio: np.ndarray, seed: int, codec: bool = True) -> np.ndarray:
    """The repo's phone leg (16 kHz in and out); ``codec=False`` leaves mu-law to the wire."""
    from models.finetune.degrade import phone_degrade

    return phone_degrade(audio, seed, codec=codec)


def with_silence(audio: np.ndarray, lead_s: float = 0.3, tail_s: float = 1.2) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead_s * RATE), np.float32), audio, np.zeros(int(tail_s * RATE), np.float32)])


# --------------------------------------------------------------------------- calls


@dataclass
class CallResult:
    text: str
    language: str
    expected: str | None
    channel: str
    outcome: str
    turns: int
    acts: list[str] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    answered: str | None = None
    seconds: float = 0.0


class Caller:
    """One call: the question, then truthful answers to clarifying questions."""

    def __init__(self, url: str, item: Item, channel: str, args) -> None:
        self.url, self.item, self.channel, self.args = url, item, channel, args
        self.voice = voice_for(item, args.split)
        self.seed = 1000 + item.index

    def audio(self, text: str) -> bytes:
        if self.channel == "human" and text == self.item.text:
            from models.audio import read_audio

            return encode_wire(with_silence(read_audio(self.item.audio_path).samples), Encoding.PCM_S16LE)
        samples = with_silence(espeak(text, self.voice[0], self.voice[1]))
        if self.channel == "phone":
            samples = phone_leg(samples, self.seed, codec=False)
            return encode_wire(resample(samples, RATE, 8000), Encoding.MULAW)
        return encode_wire(samples, Encoding.PCM_S16LE)

    async def say(self, ws, text: str) -> None:
        if self.channel == "typed":
            await ws.send(json.dumps({"type": "text", "text": text}, ensure_ascii=False))
            return
        data = self.audio(text)
        step = 1600 if self.channel == "phone" else 3200  # 100 ms frames
        for i in range(0, len(data), step):
            await ws.send(data[i : i + step])

    async def press(self, ws, digit: str) -> None:
        await ws.send(json.dumps({"type": "dtmf", "digit": digit}))

    async def next_reply(self, ws, transcripts: list[str]) -> dict | None:
        deadline = time.monotonic() + self.args.reply_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except asyncio.TimeoutError:
                return None
            if isinstance(raw, bytes):
                continue
            ev = json.loads(raw)
            if ev["type"] == "transcript" and ev.get("final"):
                transcripts.append(ev["text"])
            elif ev["type"] == "reply":
                return ev
            elif ev["type"] == "session_end":
                return None

    async def run(self) -> CallResult:
        from websockets.asyncio.client import connect

        item, ch = self.item, self.channel
        res = CallResult(item.text, item.language, item.expected, ch, "unanswered", 0)
        t0 = time.monotonic()
        phone = ch == "phone"
        start = {
            "type": "start", "language": item.language,
            "audio": {"encoding": "mulaw" if phone else "pcm_s16le", "sample_rate": 8000 if phone else RATE, "channels": 1},
            "output": {"encoding": "pcm_s16le", "sample_rate": RATE, "pacing": "none"},
        }
        keypad = self.args.answers == "dtmf" and ch != "typed"
        if keypad:
            start["keypad"] = True
        async with connect(self.url, max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps(start))
            await self.say(ws, item.text)
            words = ANSWERS[item.language]
            for turn in range(1, self.args.max_turns + 1):
                ev = await self.next_reply(ws, res.transcripts)
                res.turns = turn
                if ev is None:
                    res.outcome = "unanswered"
                    break
                d = ev.get("dialogue") or infer_act(ev["text"], ev["language"])
                act = d.get("act", "?")
                res.acts.append(act)
                if act in ("answer", "confirmed", "chosen"):
                    res.answered = d.get("entry")
                    right = res.answered == item.expected
                    res.outcome = ("right_first" if turn == 1 else "right_clarified") if right else "wrong"
                    break
                if act == "handoff":
                    res.outcome = "handoff"
                    break
                if act in ("rephrase", "not_heard"):
                    res.outcome = "declined" if item.expected is None else "unanswered"
                    break
                if act in ("confirm", "reask") and len(d.get("entries", [])) == 1:
                    key = "yes" if d["entries"][0] == item.expected else "no"
                elif act in ("choose", "reask"):
                    entries = d.get("entries", [])
                    key = "first" if entries[:1] == [item.expected] else "second" if entries[1:2] == [item.expected] else "no"
                else:
                    res.outcome = "unanswered"
                    break
                if keypad and not (act != "confirm" and key == "no" and len(d.get("entries", [])) == 2):
                    await self.press(ws, "1" if key in ("yes", "first") else "2")  # (in a choice 2 is the second: "neither" is said)
                else:
                    await self.say(ws, words[key])
            else:
                res.outcome = "unanswered"
        if res.outcome == "unanswered" and item.expected is None and res.acts and res.acts[-1] in ("rephrase", "not_heard"):
            res.outcome = "declined"
        res.seconds = round(time.monotonic() - t0, 2)
        return res


_KB = None


def infer_act(text: str, language: str) -> dict:
    """A server without ``reply.dialogue`` (before clarifying questions): the act from the text,
    matched against the demo knowledge base's answers and fallback texts."""
    global _KB
    if _KB is None:
        from models.dialogue.kb import KnowledgeBase

        _KB = KnowledgeBase.load(None)
    for e in _KB.entries:
        if text == _KB.answer(e, language):
            return {"act": "answer", "entry": e.id}
    if text == _KB.rephrase(language):
        return {"act": "rephrase"}
    if text == _KB.handoff(language):
        return {"act": "handoff"}
    return {"act": "not_heard"}


def summarise(results: list[CallResult]) -> dict:
    groups: dict[tuple[str, str], list[CallResult]] = defaultdict(list)
    for r in results:
        groups[(r.language, r.channel)].append(r)
        groups[("all", r.channel)].append(r)
    out = {}
    for (lang, ch), rs in sorted(groups.items()):
        c = Counter(r.outcome for r in rs)
        in_scope = [r for r in rs if r.expected is not None]
        right = [r for r in rs if r.outcome in ("right_first", "right_clarified")]
        out[f"{lang}/{ch}"] = {
            "n": len(rs),
            "in_scope": len(in_scope),
            **{k: c.get(k, 0) for k in OUTCOMES},
            "right_pct": round(100 * len(right) / max(1, len(in_scope)), 1),
            "wrong_pct": round(100 * c.get("wrong", 0) / max(1, len(rs)), 1),
            "declined_of_out_of_scope": f"{sum(1 for r in rs if r.expected is None and r.outcome == 'declined')}/{len(rs) - len(in_scope)}",
            "mean_turns_to_right": round(statistics.mean(r.turns for r in right), 2) if right else None,
        }
    return out


def print_summary(summary: dict) -> None:
    head = "| language/channel | n | right 1st turn | right after clarification | right % (of in-scope) | confidently wrong | wrong % | handed off | asked again | out-of-scope declined | mean turns to right |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for key, s in summary.items():
        print(
            f"| {key} | {s['n']} | {s['right_first']} | {s['right_clarified']} | {s['right_pct']} | {s['wrong']} | {s['wrong_pct']} | "
            f"{s['handoff']} | {s['unanswered']} | {s['declined_of_out_of_scope']} | {s['mean_turns_to_right'] if s['mean_turns_to_right'] is not None else '-'} |"
        )


async def bench_calls(args, server) -> dict:
    url = args.url or server.wait_ready(args.start_timeout)
    items = load_items(args.data, args.split)
    if args.limit:
        per_lang: dict[str, list[Item]] = defaultdict(list)
        for it in items:
            per_lang[it.language].append(it)
        items = [it for lst in per_lang.values() for it in lst[: args.limit]]
    results: list[CallResult] = []
    jobs = [(it, ch) for ch in args.channels if ch != "human" for it in items]
    if "human" in args.channels:
        jobs += [(it, "human") for it in human_items(args.audio_dir)]
    say(f"{len(jobs)} calls: {len(items)} questions x {', '.join(args.channels)}; {args.concurrency} at a time")
    sem = asyncio.Semaphore(args.concurrency)
    done = 0

    async def one(it: Item, ch: str) -> None:
        nonlocal done
        async with sem:
            try:
                r = await Caller(url, it, ch, args).run()
            except (OSError, asyncio.TimeoutError) as e:
                r = CallResult(it.text, it.language, it.expected, ch, "unanswered", 0, acts=[f"error: {type(e).__name__}"])
            results.append(r)
            done += 1
            if done % 25 == 0:
                say(f"{done}/{len(jobs)} calls")

    t0 = time.monotonic()
    await asyncio.gather(*(one(it, ch) for it, ch in jobs))
    summary = summarise(results)
    return {"split": args.split, "channels": args.channels, "answers": args.answers, "seconds": round(time.monotonic() - t0, 1),
            "summary": summary, "calls": [asdict(r) for r in results]}


# --------------------------------------------------------------------------- calibration


def recognise_offline(items: list[Item], nbest: int) -> dict:
    """Per item and channel: [(text, avg_logprob), ...] best first (the server's recogniser, offline)."""
    from models.whisper import load_whisper  # the embedded weights, as the server loads them
    from server.config import Settings

    asr = load_whisper(Settings().asr)
    out: dict[tuple[int, str], list[tuple[str, float]]] = {}
    for k, it in enumerate(items):
        voice, rate = voice_for(it, "tune")
        clean = espeak(it.text, voice, rate)  # (the VAD trims silence in calls; none here)
        for ch, audio in (("clean", clean), ("phone", resample(resample(phone_leg(with_silence(clean), 1000 + it.index), RATE, 8000), 8000, RATE))):
            for n in sorted({1, nbest}):  # greedy (asr.nbest = 1) and the n-best beam
                rec = asr.recognize(audio.astype(np.float32), it.language, [it.language], n)
                out[(it.index, ch, n)] = [] if rec.rejected else [(rec.text, rec.avg_logprob), *rec.alternatives]
        if (k + 1) % 20 == 0:
            say(f"recognised {k + 1}/{len(items)}")
    return out


def question_scores(kb, text_hyps: list[tuple[str, float]], nbest: bool):
    """The entry scores of one question (None: nothing recognised)."""
    if not text_hyps:
        return None
    (text, lp), alts = text_hyps[0], text_hyps[1:] if nbest else []
    return kb.scores_for(text, alts, lp if alts else None)


def simulate(kb, scores, expected: str | None) -> str:
    """Outcome of one question under kb's current settings; the caller's yes/no is assumed heard."""
    if scores is None:
        return "unanswered" if expected is not None else "declined"
    act, picks, _, _ = kb.decide(scores)
    ids = [kb.entries[i].id for i in picks]
    if act == "answer":
        return "right_first" if ids[0] == expected else "wrong"
    if act in ("confirm", "choose"):
        return "right_clarified" if expected in ids else "clarify_miss"  # a turn spent on a wrong guess
    return "declined" if expected is None else "unanswered"


def calibrate(args) -> dict:
    from models.dialogue.kb import KnowledgeBase

    items = load_items(args.data, "tune")
    say(f"calibrating on {len(items)} tuning questions (typed, clean and phone speech)")
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        hyps = {tuple(json.loads(k)): v for k, v in json.loads(cache.read_text(encoding="utf-8")).items()}
    else:
        hyps = recognise_offline(items, args.nbest)
        if cache is not None:
            cache.write_text(json.dumps({json.dumps(list(k)): v for k, v in hyps.items()}, ensure_ascii=False), encoding="utf-8")
    kb = KnowledgeBase.load(args.kb)
    typed = [([(it.text, 0.0)], it.expected) for it in items]
    data_for = {
        nb: {"typed": typed, **{ch: [(hyps[(it.index, ch, args.nbest if nb else 1)], it.expected) for it in items] for ch in ("clean", "phone")}}
        for nb in ([False, True] if args.nbest > 1 else [False])
    }
    # the scores do not depend on the decision settings: computed once
    data_for = {nb: {ch: [(question_scores(kb, h, nb), e) for h, e in rows_] for ch, rows_ in d.items()} for nb, d in data_for.items()}
    grid = itertools.product(
        [round(x, 3) for x in np.arange(0.10, 0.32, 0.02)],
        [round(x, 3) for x in np.arange(0.30, 0.75, 0.025)],
        [round(x, 3) for x in np.arange(0.0, 0.32, 0.02)],
        [0.0, 0.02, 0.04, 0.06],
        [False, True] if args.nbest > 1 else [False],
    )
    rows = []
    for th, at, am, cm, nb in grid:
        if at < th:
            continue
        kb.threshold, kb.answer_threshold, kb.answer_margin, kb.choose_margin = th, at, am, cm
        data = data_for[nb]
        res = {ch: Counter(simulate(kb, sc, e) for sc, e in rows_) for ch, rows_ in data.items()}
        n_in = {ch: sum(1 for _, e in rows_ if e is not None) for ch, rows_ in data.items()}
        n = {ch: len(rows_) for ch, rows_ in data.items()}
        right = {ch: (res[ch]["right_first"] + res[ch]["right_clarified"]) / n_in[ch] for ch in data}
        wrong = {ch: res[ch]["wrong"] / n[ch] for ch in data}
        first = sum(res[ch]["right_first"] for ch in data)
        missed = {ch: res[ch]["clarify_miss"] / n[ch] for ch in data}
        # the objective: right answers, less half a point per clarifying question that guessed wrong (a wasted turn)
        objective = sum(right[ch] - MISS_COST * missed[ch] for ch in data)
        rows.append({"threshold": th, "answer_threshold": at, "answer_margin": am, "choose_margin": cm, "nbest": nb,
                     "right": {k: round(v, 3) for k, v in right.items()}, "wrong": {k: round(v, 3) for k, v in wrong.items()},
                     "wasted_clarifications": {k: round(v, 3) for k, v in missed.items()}, "first": first, "objective": round(objective, 4)})
    ok = [r for r in rows if r["wrong"]["typed"] == 0 and r["wrong"]["clean"] <= args.max_wrong and r["wrong"]["phone"] <= args.max_wrong]
    ok.sort(key=lambda r: (r["objective"], r["first"]), reverse=True)
    best = ok[0] if ok else None
    by_threshold = {}
    for r in ok:  # the best feasible row per confirmation floor: how the trade-off moves
        by_threshold.setdefault(r["threshold"], r)
    return {"tune_questions": len(items), "nbest": args.nbest, "candidates": len(rows), "feasible": len(ok), "best": best,
            "by_threshold": sorted(by_threshold.values(), key=lambda r: r["threshold"]), "top": ok[:10]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", choices=["tune", "test"], default="test")
    p.add_argument("--channels", default="typed,clean,phone,human", help="comma list of typed, clean, phone, human")
    p.add_argument("--audio-dir", type=Path, default=SHARED_AUDIO, help="the shared human clips (the human channel)")
    p.add_argument("--answers", choices=["voice", "dtmf"], default="voice", help="how the caller answers clarifying questions on spoken channels")
    p.add_argument("--limit", type=int, help="only the first N questions per language")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--reply-timeout", type=float, default=30.0)
    p.add_argument("--url", help="a running server's ws://.../v1/voice (default: start one)")
    p.add_argument("--model", help="asr.model for the server started here")
    p.add_argument("--compute-type")
    p.add_argument("--device")
    p.add_argument("--server-log", type=Path)
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path, metavar="OUT")
    p.add_argument("--calibrate", action="store_true", help="search the decision settings on the tuning split (offline)")
    p.add_argument("--kb", help="knowledge base to calibrate (default: the demo bank)")
    p.add_argument("--nbest", type=int, default=1, help="--calibrate: recognition hypotheses weighed (asr.nbest)")
    p.add_argument("--cache", help="--calibrate: keep the offline recognitions in this JSON file (reused when present)")
    p.add_argument("--max-wrong", type=float, default=0.03, help="--calibrate: most spoken questions answered wrong")
    args = p.parse_args(argv)
    args.channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    bad = [c for c in args.channels if c not in CHANNELS]
    if bad:
        p.error(f"unknown channel {bad[0]!r} (typed, clean, phone, human)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.calibrate:
        report = calibrate(args)
        print(json.dumps(report["best"], ensure_ascii=False, indent=1))
        print("best per settings.threshold:")
        for r in report["by_threshold"]:
            print(json.dumps(r, ensure_ascii=False))
    else:
        report = run_with_server(args, bench_calls)
        if isinstance(report, int):
            return report
        print_summary(report["summary"])
        say(f"{len(report['calls'])} calls in {report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(e.code)
