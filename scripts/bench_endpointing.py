#!/usr/bin/env python3
"""Endpointing: false cut-offs and voice-to-voice latency, adaptive endpointing against fixed.

    python scripts/bench_endpointing.py                        # adaptive and fixed, each its own `dauys serve`
    python scripts/bench_endpointing.py --limit 6 --configs adaptive --json
    python scripts/bench_endpointing.py --url ws://127.0.0.1:8765/v1/voice --configs adaptive

What it does
------------
* Per configuration in ``--configs`` (``adaptive``: ``DAUYS_VAD__ADAPTIVE=true``, the default
  settings; ``fixed``: ``DAUYS_VAD__ADAPTIVE=false``, every endpoint after ``vad.min_silence_ms``)
  a ``dauys serve`` is started (``scripts/benchlib``), or ``--url`` is used (one configuration,
  named by ``--configs``).  One untimed warm-up call first.
* Every call is ``bench_latency.run_call``: ONE caller, one WebSocket session per question,
  ``language`` fixed in ``start`` (kk or ru), 20 ms frames of pcm_s16le 16 kHz on absolute
  monotonic deadlines, the question sent once the spoken disclosure has played, then silence
  until the reply to the last final has started (at least ``--silence`` s).
* Two question sets, seeded (``--seed``) and reproducible:
    - ``single``: one-clause questions, the example questions of the knowledge base
      (models/data/demo_bank_kb.yaml; 12 kk + 12 ru entries drawn with the seed, one
      example each; not the greeting/thanks/goodbye/operator/identity/fraud entries),
      espeak-ng at ``--espeak-wpm`` (140) -- for latency;
    - ``multi``: multi-clause questions (scripts/data/bench_endpointing.jsonl, 2-3 clauses,
      written kk and ru: clauses that end in a conjunction and clauses that are complete on
      their own), each clause synthesised separately by espeak-ng, its silence trimmed, and
      joined with a seeded pause of 300-700 ms of digital silence; plus the shared human
      clips of ``kind`` "sentence" (kk_kscd_ex1.wav has a ~480 ms pause mid-sentence) as
      they are (``--no-real-clips``: without them).
  ``--limit N``: N questions per set (half kk, half ru), the real clips on top.

What is measured
----------------
* voice-to-voice (``single``; ``multi`` for information, its questions not cut off): end of the question's own
  audio (last 10 ms window within 26 dB of its loudest), mapped to its send time -> first
  byte of the reply audio to the question's last final transcript (bench_latency.analyse).
* endpoint silence: the same end of speech -> send time of the last final's ``t_endpoint``.
* false cut-off (``multi``): a ``reply`` event, or the first byte of any reply's audio
  (the disclosure aside), arrived before the question's last clause had been sent (the
  send time of its end of speech) -- the server answered while the caller had only paused.
  Counted apart by what precedes the pause: a clause ending in a conjunction (``CONJUNCTIONS``,
  the bench's own list) or one complete on its own (and "human" for the real clips).  A
  question cut off has no voice-to-voice figure (its reply answered the first clause).
* split question (``multi``, and ``single``): the question came back as more than one
  final transcript -- a cut, even when the caller's next clause barged in on its reply.
* ``dauys_endpoints_total{silence=...}`` deltas per set, scraped from the server's /metrics.

Targets (the issue): 1 caller, voice-to-voice p50 <= 350 ms, p95 <= 600 ms; false
cut-offs <= 2 % of the multi-clause questions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib and bench_latency, beside this script
from bench_asr import FRAME_S, RATE  # noqa: E402
from bench_latency import Call, Question, ReplyKinds, analyse, load_clips, run_call, speech_end  # noqa: E402

# benchlib also puts the project root on sys.path
from benchlib import (  # noqa: E402
    DEFAULT_AUDIO,
    ROOT,
    BenchError,
    CpuMeter,
    ServerProcess,
    emit,
    espeak,
    fmt,
    http_base,
    machine,
    median,
    ms,
    p95,
    print_table,
    ready_info,
    run_with_server,
    say,
    scrape_metrics,
)

TARGET_P50_MS = 350
TARGET_P95_MS = 600
TARGET_CUTOFF_PCT = 2.0
DEFAULT_DATA = ROOT / "scripts" / "data" / "bench_endpointing.jsonl"
CONFIGS = {"adaptive": {"DAUYS_VAD__ADAPTIVE": "true"}, "fixed": {"DAUYS_VAD__ADAPTIVE": "false"}}
SKIP_ENTRIES = {"greeting", "thanks", "goodbye", "operator", "bot_identity", "fraud"}  # end the call or are no question
SILENCE_KINDS = ("default", "short", "long", "undecided", "forced")
# a clause that ends in one of these is not finished (the bench's own list, independent of the server's)
CONJUNCTIONS = ("және", "бірақ", "өйткені", "немесе", "әлде", "и", "но", "а", "или", "потому что", "поэтому")
ENDPOINTS = re.compile(r'^dauys_endpoints_total\{silence="(\w+)"\}$')


# --------------------------------------------------------------------------
# question sets
# --------------------------------------------------------------------------
def speech_start(samples: np.ndarray) -> float:
    """Start of the first 10 ms window within 26 dB of the loudest (seconds into the clip)."""
    return len(samples) / RATE - speech_end(samples[::-1])


def per_language(items: list, limit: int | None, key) -> list:
    """kk and ru interleaved (kk first), at most ``limit`` in all."""
    langs = [[it for it in items if key(it) == lang] for lang in ("kk", "ru")]
    mixed = [it for pair in zip(*langs) for it in pair] + [it for group in langs for it in group[min(map(len, langs)):]]
    return mixed[:limit] if limit is not None else mixed


def single_set(seed: int, per_lang: int, limit: int | None, wpm: int) -> list[Question]:
    from models.dialogue.kb import KnowledgeBase

    rng = random.Random(f"single-{seed}")
    kb = KnowledgeBase.load(None)
    picks = []
    for lang in ("kk", "ru"):
        entries = sorted(e.id for e in kb.entries if e.id not in SKIP_ENTRIES and e.questions.get(lang))
        for entry in rng.sample(entries, min(per_lang, len(entries))):
            picks.append((lang, entry, rng.choice(kb.by_id[entry].questions[lang])))
    out = []
    for lang, entry, text in per_language(picks, limit, lambda p: p[0]):
        x = espeak(text, lang, wpm)
        out.append(Question(f"single-{lang}-{entry}", lang, entry, text, x, speech_end(x)))
    return out


def pause_kind(clause: str) -> str:
    """What precedes a pause: a clause ending in a conjunction, or one that is complete on its own."""
    words = " ".join(clause.casefold().replace(",", " ").split())
    return "conjunction" if any(words == c or words.endswith(" " + c) for c in CONJUNCTIONS) else "complete"


def multi_set(path: Path, seed: int, limit: int | None, wpm: int, audio_dir: Path | None) -> tuple[list[Question], dict[str, list]]:
    """The multi-clause questions and, by name, the pauses (ms) put between their clauses and what precedes
    each (:func:`pause_kind`; "human" for the real clips)."""
    rng = random.Random(f"multi-{seed}")
    recs = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for i, r in enumerate(recs):
        r["name"] = f"multi-{r['language']}-{i:02d}"
    rng.shuffle(recs)
    out, pauses = [], {}
    for r in per_language(recs, limit, lambda r: r["language"]):
        lang, parts, gaps = r["language"], [], []
        for k, clause in enumerate(r["clauses"]):
            x = espeak(clause, lang, wpm)
            first, last = k == 0, k == len(r["clauses"]) - 1
            a = 0 if first else int(speech_start(x) * RATE)
            b = len(x) if last else int(speech_end(x) * RATE)
            if not first:
                gap = round(rng.uniform(0.3, 0.7), 2)
                gaps.append((round(gap * 1000), pause_kind(r["clauses"][k - 1])))
                parts.append(np.zeros(int(gap * RATE), dtype=np.float32))
            parts.append(x[a:b].astype(np.float32))
        x = np.concatenate(parts)
        out.append(Question(r["name"], lang, r.get("entry"), " | ".join(r["clauses"]), x, speech_end(x)))
        pauses[r["name"]] = gaps
    if audio_dir is not None:
        for q in load_clips(audio_dir):
            out.append(q)
            pauses[q.name] = [(None, "human")]  # a pause as recorded (if any)
    return out, pauses


# --------------------------------------------------------------------------
# per-call figures
# --------------------------------------------------------------------------
def cut_off(call: Call) -> dict:
    """Did anything of a reply reach the caller before the question's last clause had been sent?"""
    if call.q_frame0 is None:
        return {"false_cutoff": None}
    q_start_t = call.q_frame0 * FRAME_S
    asked = call.sent_at[call.q_frame0]
    last_sent = call.sent_time(q_start_t + call.question.speech_end_s)
    early = [a for a, ev in call.events if ev.get("type") == "reply" and asked <= a < last_sent]
    early += [a for rid, a in call.first_audio.items() if rid != "disclosure" and asked <= a < last_sent]
    return {"false_cutoff": bool(early), "cutoff_before_end_ms": ms(last_sent - min(early)) if early else None}


def endpoint_counts(base: str) -> dict[str, float] | None:
    """``dauys_endpoints_total`` by ``silence``; None when /metrics cannot be read."""
    series_ = scrape_metrics(base)
    if not series_:
        return None
    out = dict.fromkeys(SILENCE_KINDS, 0.0)
    for series, value in series_.items():
        m = ENDPOINTS.match(series)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


def delta(a: dict[str, float] | None, b: dict[str, float] | None) -> dict[str, int] | None:
    if a is None or b is None:
        return None
    return {k: round(b.get(k, 0.0) - a.get(k, 0.0)) for k in sorted(set(a) | set(b))}


def pct(k: int, n: int) -> float | None:
    return None if n == 0 else round(100 * k / n, 1)


async def run_set(name: str, questions: list[Question], url: str, args, pad_s: float, kinds: ReplyKinds, pauses: dict | None = None) -> dict:
    base = http_base(url)
    say(f"{name}: {len(questions)} questions, one session each")
    m0 = await asyncio.to_thread(endpoint_counts, base)
    per = []
    for q in questions:
        call = await run_call(0, q, url, args)
        p = {**analyse(call, pad_s, kinds, "audio"), **cut_off(call)}
        p["finals_text"] = [ev.get("text") for _, ev in call.events
                            if ev.get("type") == "transcript" and ev.get("final") and ev.get("source", "audio") == "audio"]
        if pauses is not None:
            p["pauses_ms"] = [ms_ for ms_, _ in pauses.get(q.name) or []]
            p["pause_kind"] = "conjunction" if any(k == "conjunction" for _, k in pauses.get(q.name) or []) else (pauses.get(q.name) or [(0, "-")])[0][1]
        per.append(p)
        say(f"  {q.name}: {p['outcome']}, {p['finals']} final(s)" + (", FALSE CUT-OFF" if p["false_cutoff"] else "")
            + (f", total {ms(p['stages']['total']):g} ms" if "stages" in p else ""))
    await asyncio.sleep(0.5)
    m1 = await asyncio.to_thread(endpoint_counts, base)
    ok = [p for p in per if p["outcome"] == "reply"]
    # a question cut off at a pause was answered before it ended: no voice-to-voice figure for it
    timed = [p for p in ok if not p["false_cutoff"]]
    total = [p["stages"]["total"] for p in timed]
    endpoint = [p["stages"]["endpoint"] for p in timed]
    sent = [p for p in per if p["false_cutoff"] is not None]
    cuts = sum(1 for p in sent if p["false_cutoff"])
    splits = sum(1 for p in sent if p["finals"] > 1)
    by_kind = {}
    for kind in sorted({p.get("pause_kind") for p in sent if p.get("pause_kind")}):
        its = [p for p in sent if p.get("pause_kind") == kind]
        by_kind[kind] = {"n": len(its), "false_cutoffs": sum(1 for p in its if p["false_cutoff"])}
    return {
        "n": len(per),
        "replies": len(ok),
        "timed": len(timed),
        "outcomes": {k: sum(p["outcome"] == k for p in per) for k in sorted({p["outcome"] for p in per})},
        "voice_to_voice_ms": {"p50": ms(median(total)), "p95": ms(p95(total)), "max": ms(max(total, default=None))},
        "endpoint_silence_ms": {"p50": ms(median(endpoint)), "p95": ms(p95(endpoint))},
        "false_cutoffs": cuts,
        "false_cutoff_pct": pct(cuts, len(sent)),
        "split_questions": splits,
        "split_pct": pct(splits, len(sent)),
        "false_cutoffs_by_pause": by_kind,
        "endpoints_total": delta(m0, m1),
        "per_call": [{**{k: v for k, v in p.items() if k not in ("stages", "vad_minus_audio_speech_end", "caller")},
                      **({"stages_ms": {k: ms(v) for k, v in p["stages"].items()}} if "stages" in p else {})} for p in per],
    }


# --------------------------------------------------------------------------
# one configuration
# --------------------------------------------------------------------------
async def bench(args, server: ServerProcess | None) -> dict:
    from pipeline.segmenter import WINDOW_S
    from server.config import load_settings

    env = dict(os.environ, DAUYS_ASR__DOWNLOAD="false", **CONFIGS.get(args.config, {}))
    settings = load_settings(environ=env)
    pad_s = round(settings.vad.speech_pad_ms / 1000 / WINDOW_S) * WINDOW_S
    kinds = ReplyKinds(settings.session.handoff)
    url = server.wait_ready(args.start_timeout) if server is not None else args.url
    if server is not None and settings.tts.prefill and settings.tts.cache_mb > 0:
        server.wait_settled()
    info = await ready_info(url)
    warm = next((q for q in args.single if q.lang == "ru"), args.single[0])
    say(f"[{args.config}] warm-up call ({warm.name}, untimed)")
    await run_call(-1, warm, url, args)
    meter = CpuMeter(server.pid if server is not None else None)
    single = await run_set(f"[{args.config}] single", args.single, url, args, pad_s, kinds)
    multi = await run_set(f"[{args.config}] multi", args.multi, url, args, pad_s, kinds, args.pauses)
    vad = settings.vad
    return {
        "config": args.config,
        "url": url,
        "started_by_bench": server is not None,
        "asr": info.get("asr", {}),
        "vad": {"adaptive": vad.adaptive, "min_silence_ms": vad.min_silence_ms, "short_silence_ms": vad.short_silence_ms,
                "long_silence_ms": vad.long_silence_ms, "speculative_ms": vad.speculative_ms, "speech_pad_ms": vad.speech_pad_ms},
        "single": single,
        "multi": multi,
        **cpu_use(meter.stop()),
    }


def cpu_use(use) -> dict:
    return {"wall_s": round(use.wall, 1), "server_cpu_s": None if use.server is None else round(use.server, 1),
            "other_cpu_s": None if use.other is None else round(use.other, 1), "machine_cores_busy": round(use.busy / use.wall, 2)}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def print_report(report: dict) -> None:
    runs = report["runs"]
    m = report["machine"]
    print(f"command: {report['command']}")
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}; ASR {runs[0]['asr'].get('model')} on {runs[0]['asr'].get('device')}")
    c = report["settings"]
    print(f"sets:    single {runs[0]['single']['n']} espeak-ng KB questions (kk+ru, {c['espeak_wpm']} wpm); multi {runs[0]['multi']['n']} "
          f"multi-clause questions (espeak-ng clauses + seeded 300-700 ms pauses{', + real kk clips' if c['real_clips'] else ''}); "
          f"seed {c['seed']}, 1 caller, one session per question")
    print(f"targets: voice-to-voice p50 <= {TARGET_P50_MS} ms, p95 <= {TARGET_P95_MS} ms (single); false cut-offs <= {TARGET_CUTOFF_PCT:g} % (multi)")

    def mp(d, n=None):
        return f"{fmt(d['p50'])} / {fmt(d['p95'])}" + ("" if n is None else f" (n {n})")

    def share(k, n, p):
        return f"{k}/{n} ({fmt(p)}%)"

    def counts(d):
        return "-" if d is None else " ".join(f"{k[0]}{d.get(k, 0)}" for k in SILENCE_KINDS)

    def vad(r):
        v = r["vad"]
        return (f"adaptive {v['short_silence_ms']}/{v['min_silence_ms']}/{v['long_silence_ms']}" if v["adaptive"]
                else f"fixed {v['min_silence_ms']}")

    rows = [
        ("endpoint silence ms (short/default/long)", [vad(r) for r in runs]),
        ("single: answered with audio", [f"{r['single']['replies']} of {r['single']['n']}" for r in runs]),
        ("single: voice-to-voice p50 / p95 ms", [mp(r["single"]["voice_to_voice_ms"], r["single"]["timed"]) for r in runs]),
        ("single: endpoint silence p50 / p95 ms", [mp(r["single"]["endpoint_silence_ms"]) for r in runs]),
        ("single: cut-offs / split questions", [f"{r['single']['false_cutoffs']} / {r['single']['split_questions']} of {r['single']['n']}" for r in runs]),
        ("single: endpoints d/s/l/u/f", [counts(r["single"]["endpoints_total"]) for r in runs]),
        ("multi: answered with audio", [f"{r['multi']['replies']} of {r['multi']['n']}" for r in runs]),
        ("multi: FALSE CUT-OFFS", [share(r["multi"]["false_cutoffs"], r["multi"]["n"], r["multi"]["false_cutoff_pct"]) for r in runs]),
        *[("  real clips (human pauses)" if kind == "human" else f"  after a {kind} clause", [share(r["multi"]["false_cutoffs_by_pause"].get(kind, {}).get("false_cutoffs", 0),
                                               r["multi"]["false_cutoffs_by_pause"].get(kind, {}).get("n", 0),
                                               pct(r["multi"]["false_cutoffs_by_pause"].get(kind, {}).get("false_cutoffs", 0),
                                                   r["multi"]["false_cutoffs_by_pause"].get(kind, {}).get("n", 0))) for r in runs])
          for kind in sorted({k for r in runs for k in r["multi"]["false_cutoffs_by_pause"]})],
        ("multi: split questions (>1 final)", [share(r["multi"]["split_questions"], r["multi"]["n"], r["multi"]["split_pct"]) for r in runs]),
        ("multi, not cut: voice-to-voice p50 / p95 ms", [mp(r["multi"]["voice_to_voice_ms"], r["multi"]["timed"]) for r in runs]),
        ("multi, not cut: endpoint silence p50 / p95 ms", [mp(r["multi"]["endpoint_silence_ms"]) for r in runs]),
        ("multi: endpoints d/s/l/u/f", [counts(r["multi"]["endpoints_total"]) for r in runs]),
        ("wall s / server CPU s / other processes' CPU s", [f"{fmt(r['wall_s'])} / {fmt(r['server_cpu_s'])} / {fmt(r['other_cpu_s'])}" for r in runs]),
    ]
    head = ["config"] + [r["config"] for r in runs]
    print_table(head, rows)
    print()
    for r in runs:
        v2v, cut = r["single"]["voice_to_voice_ms"], r["multi"]["false_cutoff_pct"]
        ok_lat = v2v["p50"] is not None and v2v["p50"] <= TARGET_P50_MS and v2v["p95"] <= TARGET_P95_MS
        ok_cut = cut is not None and cut <= TARGET_CUTOFF_PCT
        print(f"[{r['config']}] latency target {'MET' if ok_lat else 'NOT MET'}; false cut-off target {'MET' if ok_cut else 'NOT MET'}")
        cuts = [p for p in r["multi"]["per_call"] if p.get("false_cutoff") or p["finals"] > 1]
        for p in cuts:
            print(f"    {'cut ' if p.get('false_cutoff') else 'split'} {p['question']:<18} {p.get('pause_kind')} {p.get('pauses_ms')} ms: {p['finals_text']}")
    noisy = [r["config"] for r in runs if (r["other_cpu_s"] or 0) > 0.1 * r["wall_s"]]
    if noisy:
        print(f"warning: other processes used over 10% of a core during {', '.join(noisy)}; latency figures are skewed")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="adaptive,fixed", help="comma-separated: adaptive (vad.adaptive=true), fixed (vad.adaptive=false); default both")
    p.add_argument("--url", help="an already-running server (ws://HOST:PORT/v1/voice); then one config, named by --configs")
    p.add_argument("--seed", type=int, default=1, help="seed of the question sets and the pauses (default 1)")
    p.add_argument("--limit", type=int, help="questions per set (half kk, half ru), for a quick run; default 24 single, all multi")
    p.add_argument("--per-language", type=int, default=12, help="single set: KB entries per language (default 12)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the multi-clause questions (default {DEFAULT_DATA.relative_to(ROOT)})")
    p.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO, help=f"real clips and manifest.jsonl (default {DEFAULT_AUDIO})")
    p.add_argument("--no-real-clips", action="store_true", help="without the shared human clips in the multi set")
    p.add_argument("--espeak-wpm", type=int, default=140, help="espeak-ng speaking rate (default 140)")
    p.add_argument("--model", help="passed to `dauys serve --model`")
    p.add_argument("--compute-type", help="passed to `dauys serve --compute-type`")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="passed to `dauys serve --device`")
    p.add_argument("--silence", type=float, default=2.5, help="seconds of silence after each question, at least (default 2.5)")
    p.add_argument("--reply-timeout", type=float, default=15.0, help="seconds after the question to wait for the reply's first audio (default 15)")
    p.add_argument("--disclosure-wait", type=float, default=10.0, help="seconds to wait for the spoken disclosure to start (default 10)")
    p.add_argument("--call-timeout", type=float, default=90.0, help="seconds one call may take in all (default 90)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server's ready line")
    p.add_argument("--server-log", type=Path, help="write the started server's output to this file (the last config's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    args.config_names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.config_names if c not in CONFIGS]
    if bad or not args.config_names:
        p.error(f"--configs takes adaptive and/or fixed, got {args.configs!r}")
    if args.url and len(args.config_names) != 1:
        p.error("--url benchmarks one server: name its configuration with --configs adaptive or --configs fixed")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    say("synthesising the questions with espeak-ng")
    try:
        args.single = single_set(args.seed, args.per_language, args.limit, args.espeak_wpm)
        args.multi, args.pauses = multi_set(args.data, args.seed, args.limit, args.espeak_wpm, None if args.no_real_clips else args.audio_dir)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.code
    runs = []
    for name in args.config_names:
        args.config = name
        run = run_with_server(args, bench, CONFIGS[name])
        if isinstance(run, int):
            return run
        runs.append(run)
    report = {
        "command": "python scripts/bench_endpointing.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "settings": {"seed": args.seed, "limit": args.limit, "espeak_wpm": args.espeak_wpm, "real_clips": not args.no_real_clips,
                     "silence_s": args.silence, "frame_ms": round(FRAME_S * 1000)},
        "targets": {"p50_ms": TARGET_P50_MS, "p95_ms": TARGET_P95_MS, "false_cutoff_pct": TARGET_CUTOFF_PCT},
        "questions": {"single": [{"name": q.name, "language": q.lang, "entry": q.expected, "text": q.text} for q in args.single],
                      "multi": [{"name": q.name, "language": q.lang, "entry": q.expected, "text": q.text, "pauses": args.pauses.get(q.name),
                                 "seconds": round(q.seconds, 2)} for q in args.multi]},
        "runs": runs,
    }
    emit(report, args.json, print_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
