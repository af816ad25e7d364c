#!/usr/bin/env python3
"""Load: how many real-time callers this machine holds with voice-to-voice p95 <= 1.5 s.

    .venv/bin/python scripts/bench_load.py                                  # search up to 16 callers, batch sizes 1 and 4
    .venv/bin/python scripts/bench_load.py --max-callers 4 --turns 1 --batch-sizes 1
    .venv/bin/python scripts/bench_load.py --callers 1,2,4 --json           # fixed levels, no search
    .venv/bin/python scripts/bench_load.py --url ws://127.0.0.1:8765/v1/voice --server-pid 1234

What it does
------------
* The callers and the measurement are ``scripts/bench_latency.py``'s, imported, not copied:
  every turn is one WebSocket session (pcm_s16le 16 kHz in and out, real-time output pacing,
  the question's language in ``start``); the caller's line streams 20 ms frames at real-time
  pace from ``ready`` on -- silence while the spoken disclosure plays, then the question, then
  silence until the reply's first audio byte (at least ``--silence`` s, at most
  ``--reply-timeout``) -- and hangs up.  The questions are the knowledge-base questions spoken by
  espeak-ng (four Kazakh, four Russian) and the real Kazakh recordings of the shared clips
  (``../shared/audio``, ``DAUYS_SHARED_AUDIO``); caller k asks questions k, k+1, ... (rotating).
* Voice-to-voice per turn: the end of the question's speech (from its own audio: its last 10 ms
  within 26 dB of its loudest), mapped to the moment the caller had sent it, to the arrival of the
  first binary frame of the reply (bench_latency.analyse, stage ``total``).
* One level = N callers at once, each making ``--turns`` calls one after another, their starts
  staggered by a seeded random 0..``--stagger-ms``.  A turn that ends without reply audio (no
  final, an error event, a timeout, a refused connection) counts as an infinitely late reply, so
  the level's p95 (nearest rank over all turns) is at most the target only if at least 95 % of
  the turns were answered within it.  A level HOLDS when that p95 <= ``--target-p95-ms``.
* Search, per batch size: N = 1, 2, 4, ... doubling while the level holds (up to
  ``--max-callers``), then bisection between the last level that held and the first that did
  not.  The answer is the largest N that held (assuming latency grows with N; every level run is
  printed, so a noisy, non-monotonic result shows).
* Batch sizes: each value of ``--batch-sizes`` gets its own fresh ``dauys serve`` with
  ``DAUYS_ASR__BATCH_SIZE`` (and ``DAUYS_ASR__BATCH_WINDOW_MS`` if ``--batch-window-ms``) in its
  environment; 1 is the unbatched server.  Batch sizes above 1 are skipped, with a note, when
  this build's configuration has no ``asr.batch_size``.
* Contention: the machine's busy CPU seconds (``/proc/stat``) minus the server's and this
  client's own are other processes' load; levels where that exceeds 10 % of a core are flagged,
  since their latencies are skewed.  The client runs on the same machine and competes with the
  server: its send lag (how late frames went out) is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib and bench_latency, beside this script
import bench_latency  # noqa: E402
from bench_latency import Call, ReplyKinds, analyse, load_questions, metrics_snapshot, run_call  # noqa: E402

# benchlib also puts the project root on sys.path
from benchlib import (  # noqa: E402
    BenchError,
    CpuMeter,
    ServerProcess,
    emit,
    fmt,
    get_json,
    http_base,
    machine,
    median,
    ms,
    p95,
    say,
    server_flags,
)

TARGET_P95_MS = 1500


def has_batching() -> bool:
    from server.config import AsrSettings

    return "batch_size" in AsrSettings.model_fields


def p95_with_failures(latencies: list[float], failures: int) -> float | None:
    """Nearest-rank p95 where each failed turn counts as an infinitely late reply."""
    return p95(list(latencies) + [math.inf] * failures)


# --------------------------------------------------------------------------
# one level: N callers, each making --turns calls
# --------------------------------------------------------------------------
async def caller(k: int, url: str, questions, turns: int, delay: float, args) -> list[Call | str]:
    await asyncio.sleep(delay)
    out: list[Call | str] = []
    for t in range(turns):
        q = questions[(k + t) % len(questions)]
        try:
            out.append(await run_call(k, q, url, args))
        except BenchError as e:  # under load: count it as a failed turn and go on
            out.append(str(e))
    return out


async def run_level(n: int, url: str, questions, args, rng: random.Random, server_pid, pad_s: float, kinds: ReplyKinds) -> dict:
    say(f"{n} caller(s) x {args.turns} turn(s)")
    base = http_base(url)
    delays = sorted(rng.uniform(0, args.stagger_ms / 1000) for _ in range(n))
    meter = CpuMeter(server_pid)
    results = [r for rs in await asyncio.gather(*(caller(k, url, questions, args.turns, delays[k], args) for k in range(n))) for r in rs]
    use = meter.stop()
    wall, busy, cpu, client_cpu = use.wall, use.busy, use.server, use.client
    await asyncio.sleep(1.0)
    after = await asyncio.to_thread(metrics_snapshot, base)

    calls = [r for r in results if isinstance(r, Call)]
    errors = [r for r in results if isinstance(r, str)]
    per = [analyse(c, pad_s, kinds, "audio") for c in calls]
    totals = [p["stages"]["total"] for p in per if p["outcome"] == "reply"]
    failures = len(results) - len(totals)
    p95 = p95_with_failures(totals, failures)
    med = median(sorted(totals) + [math.inf] * failures) if results else None
    lags = [s - d for c in calls for s, d in zip(c.sent_at, c.deadline)]
    other = use.other
    level = {
        "callers": n,
        "turns": len(results),
        "answered": len(totals),
        "outcomes": {k: sum(p["outcome"] == k for p in per) for k in sorted({p["outcome"] for p in per})} | ({"error": len(errors)} if errors else {}),
        "errors": errors[:5],
        "median_ms": None if med is None else (ms(med) if math.isfinite(med) else "inf"),
        "p95_ms": None if p95 is None else (ms(p95) if math.isfinite(p95) else "inf"),
        "max_ms": ms(max(totals, default=None)),
        "stages_median_ms": {s: ms(median([p["stages"][s] for p in per if p["outcome"] == "reply"]))
                             for s in ("endpoint", "asr_final", "dialogue", "first_tts_chunk", "first_audio")},
        "holds": p95 is not None and p95 <= args.target_p95_ms / 1000,
        "wall_s": round(wall, 1),
        "server_cores_busy": None if cpu is None else round(cpu / wall, 2),
        "machine_cores_busy": round(busy / wall, 2),
        "other_cpu_s": None if other is None else round(other, 1),
        "client_cpu_s": round(client_cpu, 1),
        "client_send_lag_ms_p99": ms(sorted(lags)[int(0.99 * (len(lags) - 1))] if lags else None),
        "sessions_active_after": after.get("dauys_sessions_active"),
    }
    say(f"  {n} callers: {level['answered']}/{level['turns']} answered, median {level['median_ms']} ms, p95 {level['p95_ms']} ms "
        f"-> {'holds' if level['holds'] else 'does not hold'}")
    return level


async def search(url: str, questions, args, server_pid, pad_s: float, kinds: ReplyKinds) -> list[dict]:
    rng = random.Random(args.seed)
    levels: dict[int, dict] = {}

    async def level(n: int) -> dict:
        if n not in levels:
            levels[n] = await run_level(n, url, questions, args, rng, server_pid, pad_s, kinds)
        return levels[n]

    if args.callers:
        for n in args.callers:
            await level(n)
        return [levels[n] for n in sorted(levels)]
    ok, bad, n = 0, None, 1
    while n <= args.max_callers:
        if (await level(n))["holds"]:
            ok = n
            if n == args.max_callers:
                break
            n = min(2 * n, args.max_callers)
        else:
            bad = n
            break
    while bad is not None and bad - ok > 1:
        mid = (ok + bad) // 2
        if (await level(mid))["holds"]:
            ok = mid
        else:
            bad = mid
    return [levels[n] for n in sorted(levels)]


# --------------------------------------------------------------------------
# servers, one per batch size
# --------------------------------------------------------------------------
def start_server(batch: int | None, args) -> ServerProcess:
    env = {}
    if batch is not None:
        env["DAUYS_ASR__BATCH_SIZE"] = str(batch)
        if args.batch_window_ms is not None:
            env["DAUYS_ASR__BATCH_WINDOW_MS"] = str(args.batch_window_ms)
    env["DAUYS_SERVER__MAX_SESSIONS"] = str(max(64, 2 * args.max_callers))
    return ServerProcess(server_flags(args), env)


async def bench(args) -> dict:
    from pipeline.segmenter import WINDOW_S
    from server.config import load_settings

    settings = load_settings(environ=dict(os.environ, DAUYS_ASR__DOWNLOAD="false"))
    pad_s = round(settings.vad.speech_pad_ms / 1000 / WINDOW_S) * WINDOW_S
    kinds = ReplyKinds(settings.session.handoff)
    say("synthesising the questions with espeak-ng")
    questions = load_questions(args.audio_dir, args.espeak_wpm, not args.no_real_clips)
    batching = has_batching()
    configs: list[dict] = []
    for b in ([None] if args.url else args.batch_sizes):
        if b is not None and b > 1 and not batching:
            say(f"batch size {b}: skipped, this build has no asr.batch_size setting")
            configs.append({"batch_size": b, "skipped": "no asr.batch_size in this build", "levels": []})
            continue
        server = None if args.url else start_server(b if batching else None, args)
        try:
            if server is not None:
                url = await asyncio.to_thread(server.wait_ready, args.start_timeout)
                if settings.tts.prefill and settings.tts.cache_mb > 0:
                    await asyncio.to_thread(server.wait_settled)
                pid = server.pid
            else:
                url, pid = args.url, args.server_pid
            info = await asyncio.to_thread(get_json, http_base(url) + "/readyz")
            if not info.get("ready"):
                raise BenchError(f"the server is not ready: {info}", 2)
            say(f"batch size {b if b is not None else 'as configured'}: warm-up call (untimed)")
            await run_call(-1, next(q for q in questions if q.lang == "ru"), url, args)
            levels = await search(url, questions, args, pid, pad_s, kinds)
        finally:
            if server is not None:
                server.stop()
        held = [lv["callers"] for lv in levels if lv["holds"]]
        configs.append({"batch_size": b, "asr": info.get("asr", {}), "levels": levels,
                        "largest_holding": max(held) if held and not args.callers else None})
    return {
        "machine": machine(),
        "config": {"turns": args.turns, "max_callers": args.max_callers, "target_p95_ms": args.target_p95_ms,
                   "questions": [q.name for q in questions], "stagger_ms": args.stagger_ms, "seed": args.seed,
                   "batching_available": batching, "batch_window_ms": args.batch_window_ms, "fixed_levels": args.callers},
        "configs": configs,
    }


def print_report(report: dict) -> None:
    m, c = report["machine"], report["config"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']} (Python {m['python']})")
    print(f"turns:   {c['turns']} per caller, one session each ({len(c['questions'])} questions: espeak-ng kk/ru KB questions + real kk clips), "
          f"real-time audio both ways, starts staggered 0-{c['stagger_ms']} ms")
    print(f"holds:   voice-to-voice p95 <= {c['target_p95_ms']} ms, unanswered turns counted as infinitely late")
    head = ["batch", "callers", "answered", "median ms", "p95 ms", "max ms", "asr_final med ms", "server cores", "other CPU s",
            "send lag p99 ms", "holds"]
    rows = []
    for cfg in report["configs"]:
        b = "server" if cfg["batch_size"] is None else str(cfg["batch_size"])
        if cfg.get("skipped"):
            continue
        for lv in cfg["levels"]:
            rows.append([b, str(lv["callers"]), f"{lv['answered']}/{lv['turns']}", fmt(lv["median_ms"]), fmt(lv["p95_ms"]), fmt(lv["max_ms"]),
                         fmt(lv["stages_median_ms"]["asr_final"]), fmt(lv["server_cores_busy"]), fmt(lv["other_cpu_s"]),
                         fmt(lv["client_send_lag_ms_p99"]), "yes" if lv["holds"] else "NO"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    print()
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))
    print()
    for cfg in report["configs"]:
        if cfg.get("skipped"):
            print(f"batch size {cfg['batch_size']}: not run ({cfg['skipped']})")
            continue
        if c["fixed_levels"]:
            continue
        b = "as configured" if cfg["batch_size"] is None else cfg["batch_size"]
        tried = max((lv["callers"] for lv in cfg["levels"]), default=0)
        n = cfg["largest_holding"]
        capped = " (the --max-callers cap; it may hold more)" if n == c["max_callers"] else ""
        print(f"batch size {b}: largest number of callers with p95 <= {c['target_p95_ms']} ms: {n or 0}{capped} (tried up to {tried})")
    noisy = [(cfg["batch_size"], lv["callers"]) for cfg in report["configs"] for lv in cfg["levels"]
             if lv["other_cpu_s"] is not None and lv["other_cpu_s"] > 0.1 * lv["wall_s"]]
    if noisy:
        print(f"warning: other processes used over 10% of a core during {', '.join(f'batch {b} x {n}' for b, n in noisy)}: "
              "those latencies are skewed by contention")
    errs = [e for cfg in report["configs"] for lv in cfg["levels"] for e in lv["errors"]]
    if errs:
        print("failed turns (first few):")
        for e in errs[:5]:
            print(f"  {e}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-callers", type=int, default=16, help="largest number of simultaneous callers tried (default 16)")
    p.add_argument("--turns", type=int, default=2, help="calls (questions) per caller per level, one after another (default 2)")
    p.add_argument("--batch-sizes", default="1,4", help="asr.batch_size values to compare, one fresh server each (default 1,4; 1 = unbatched)")
    p.add_argument("--batch-window-ms", type=float, help="asr.batch_window_ms for the batched servers (default: the server's)")
    p.add_argument("--callers", help="run exactly these levels (comma-separated) instead of searching")
    p.add_argument("--target-p95-ms", type=float, default=TARGET_P95_MS, help=f"a level holds when p95 <= this (default {TARGET_P95_MS})")
    p.add_argument("--url", help="benchmark an already-running server (its own batch setting) instead of starting one per batch size")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its CPU time (same machine only)")
    p.add_argument("--audio-dir", type=Path, default=bench_latency.DEFAULT_AUDIO, help="real clips and manifest.jsonl")
    p.add_argument("--no-real-clips", action="store_true", help="only the espeak-ng KB questions")
    p.add_argument("--espeak-wpm", type=int, default=140)
    p.add_argument("--model", help="passed to `dauys serve --model`")
    p.add_argument("--compute-type", help="passed to `dauys serve --compute-type`")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="passed to `dauys serve --device`")
    p.add_argument("--stagger-ms", type=int, default=1000, help="callers start at a random 0..N ms (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--silence", type=float, default=2.5, help="seconds of silence after each question, at least (default 2.5)")
    p.add_argument("--reply-timeout", type=float, default=15.0, help="seconds after the question to wait for reply audio (default 15)")
    p.add_argument("--disclosure-wait", type=float, default=10.0, help="seconds to wait for the spoken disclosure before asking anyway")
    p.add_argument("--call-timeout", type=float, default=90.0, help="seconds one call may take in all (default 90)")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    args.speech_end = "audio"
    try:
        args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
        args.callers = sorted({int(x) for x in args.callers.split(",") if x.strip()}) if args.callers else None
    except ValueError:
        p.error("--batch-sizes and --callers take comma-separated integers")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes needs values >= 1")
    if args.max_callers < 1 or args.turns < 1 or (args.callers and min(args.callers) < 1):
        p.error("--max-callers, --turns and --callers must be >= 1")
    if args.callers:
        args.max_callers = max(args.max_callers, max(args.callers))
    if args.server_pid and not args.url:
        p.error("--server-pid goes with --url")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # servers are stopped on SIGTERM too
    try:
        report = asyncio.run(bench(args))
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    emit(report, args.json, print_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
