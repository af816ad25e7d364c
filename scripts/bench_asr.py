#!/usr/bin/env python3
"""Streaming ASR benchmark: latency and cost of the real server under concurrent real-time callers.

    .venv/bin/python scripts/bench_asr.py                 # start `dauys serve`, streams 1 and 4
    .venv/bin/python scripts/bench_asr.py --streams 1,2,4 --clips all --json
    .venv/bin/python scripts/bench_asr.py --url ws://127.0.0.1:8765/v1/voice --server-pid 1234
    .venv/bin/python scripts/bench_asr.py --batch-size 8          # the started server batches (asr.batch_size)
    .venv/bin/python scripts/bench_asr.py --compare-batching      # in process: ASR throughput, batch 1 vs 8, 1/4/8 streams

What it does
------------
* Starts the real server (``python -m server serve --port 0`` with
  ``DAUYS_ASR__DOWNLOAD=false``) and waits for its ``dauys: ready:`` line, or
  uses ``--url``.  One short untimed warm-up call is made first.
* For each concurrency level N in ``--streams``, N callers run at once.  Each
  caller streams every selected clip, one after another (caller k starts at
  clip k, rotating, so callers are not all in the same clip), with ONE
  WebSocket session PER CLIP: ``start``, the clip followed by ``--silence``
  seconds of silence so the VAD endpoint fires, then ``{"type": "end"}``;
  the next clip once ``session_end`` has come (after the spoken disclosure
  and reply have played at real-time pace; ``--hang-up`` instead closes the
  socket, without ``end``, as soon as every utterance seen to start has its
  final, as a phone caller hangs up).  Per clip, because the server's
  dialogue hands a call to an operator -- and ends the session -- after a
  few utterances it does not understand, which the test clips are; a
  session the server ends early stops sending and is counted, not failed.
  Audio is 16 kHz pcm_s16le in 20 ms frames paced like a microphone: frame i
  (audio [20i, 20i+20) ms) is sent at t0 + (i+1) * 20 ms on the monotonic
  clock (absolute deadlines, so sleep overshoot never accumulates).  Callers
  start staggered by a seeded random 0..``--stagger-ms`` delay.

How each figure is measured
---------------------------
Every session keeps ``sent_at[i]``, the monotonic time at which frame i had
actually been handed to the socket.  The server's event times are seconds of
input audio from the start of the session (16 kHz in, so no resampling), so
"the client had sent the audio up to t" is ``sent_at`` of the frame holding
sample round(t * 16000) - 1.  Arrival times are monotonic times at which the
client's receive loop got the event.

* endpoint->final: arrival of the final ``transcript`` (source "audio")
  minus send time of its ``t_endpoint`` (the input time at which the
  server's VAD decided the utterance had ended).  This is the latency the
  server is responsible for: decode + queueing + delivery.
* speech-end->final: the same from ``t_end`` (end of speech incl. the
  speech pad); adds the endpointing silence the VAD waits for.
* first partial: arrival of the utterance's first partial minus send time of
  its ``speech_started`` ``t`` (so it includes the ``asr.partial_interval_s``
  of speech the server waits for before its first partial decode).
* partials/utterance: partial transcripts received per final utterance.
* server CPU s per audio s: (utime+stime+cutime+cstime of the server process,
  from /proc/PID/stat, after the level minus before it) / seconds of audio
  actually streamed by all callers at that level (appended silence included:
  the server runs the VAD over it).  Everything the server process does is in
  it: VAD, ASR, and any dialogue/TTS replies it makes.  "server cores busy"
  is the same CPU time over the level's wall time.
* offline RTF: after the server is stopped, the ASR engine is loaded in this
  process (``models.whisper.load_whisper`` with ``server.config.load_settings``
  and the same model flags), warmed up, and each clip is decoded whole
  ``--offline-repeats`` times with ``WhisperEngine.recognize`` (language
  auto); per clip the median ``decode_s / duration``; reported: the median
  over clips (and each clip).
* From the server's own log (when this script started it): its
  ``decode`` and ``endpoint->final`` timings per final, a cross-check of the
  client-side figures (the difference is delivery: outbox, socket, client).

Batching comparison (``--compare-batching``)
--------------------------------------------
No server: the ASR engine is loaded in this process and driven through the
server's own queue (``server.services.make_scheduler`` with ``asr.batch_size``
set to each value of ``--batch-sizes``, ``asr.batch_window_ms`` as
configured).  For each level N in ``--streams`` (default 1,4,8 in this mode),
N streams run at once, closed loop: stream k submits the selected clips whole
as final decodes (language auto), rotated to start at clip k, one after
another (the next when the previous result is back), ``--rounds`` times.
Clips of different lengths have different encoder windows on the CPU, so
only some of the streams' requests can share a batch, as in a server.

* aggregate RTF: wall time of the level / seconds of audio decoded by all
  streams (lower is better; 1 / RTF = how many real-time streams of this
  mix one machine decodes).  Speed-up: aggregate RTF at batch size 1 / this.
* latency: per request, submit -> result (queueing + decode), median, p95.
* mean batch: requests per engine call (``decoded / batches`` of the queue).
* CPU s/audio s: this process's CPU time (getrusage) over the audio seconds.
Each level and batch size is run ``--batch-repeats`` times; the table shows
the medians over repeats.  Partials and VAD are not in this load: it measures
the decoder's throughput, which batching changes, not the end-to-end latency
(use the streaming mode with ``--batch-size`` or scripts/bench_load.py).

Percentiles: ``statistics.median`` and nearest-rank p95 (the ceil(0.95 n)-th
smallest value).  The benchmark client runs on the same machine as the
server and competes with it for CPU; "client send lag" (actual send time
minus the frame's deadline) shows whether it kept real-time pace, and
"other processes' CPU" (machine busy time from /proc/stat minus server and
client) shows whether anything else was competing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, beside this script (when loaded from elsewhere)
# benchlib also puts the project root on sys.path
from benchlib import (  # noqa: E402
    DEFAULT_AUDIO,
    BenchError,
    CpuMeter,
    ServerProcess,
    emit,
    fmt,
    machine,
    machine_busy_seconds,
    median,
    ms,
    p95,
    print_server_trouble,
    print_table,
    ready_info,
    run_callers,
    run_with_server,
    say,
    server_log_summary,
)

from models.audio import Encoding, encode_wire, read_audio  # noqa: E402
from pipeline.events import AudioFormat, End, Start  # noqa: E402

RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * Encoding.PCM_S16LE.sample_width
FRAME_S = FRAME_MS / 1000


# --------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------
@dataclass
class Clip:
    file: str
    lang: str
    kind: str
    samples: np.ndarray  # 16 kHz float32

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def load_clips(audio_dir: Path, which: str) -> list[Clip]:
    manifest = audio_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise BenchError(f"no clip manifest at {manifest} (use --audio-dir or DAUYS_SHARED_AUDIO)", 2)
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if which == "sentences" and rec.get("kind") == "single_word":
            continue
        clips.append(Clip(rec["file"], rec.get("lang", ""), rec.get("kind", ""), read_audio(audio_dir / rec["file"], RATE).samples))
    if not clips:
        raise BenchError(f"no clips selected from {manifest}", 2)
    return clips


def build_stream(clips: list[Clip], silence_s: float) -> bytes:
    """One caller's whole session as wire bytes: clip, silence, clip, silence, ..."""
    silence = encode_wire(np.zeros(int(round(silence_s * RATE)), np.float32), Encoding.PCM_S16LE)
    return b"".join(encode_wire(c.samples, Encoding.PCM_S16LE) + silence for c in clips)




# --------------------------------------------------------------------------
# one caller: a session per clip
# --------------------------------------------------------------------------
@dataclass
class SessionResult:
    caller: int
    clip: str
    sent_at: np.ndarray  # monotonic time at which frame i had been sent (NaN: never sent)
    deadline: np.ndarray  # the schedule: when frame i was due
    events: list[tuple[float, dict]] = field(default_factory=list)  # (arrival time, event)
    reply_audio_bytes: int = 0
    end_reason: str = ""

    @property
    def frames_sent(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.sent_at)))

    def sent_time(self, t: float) -> float:
        """Monotonic time at which all audio up to input time ``t`` (seconds) had been sent."""
        n = int(round(t * RATE))  # samples up to t
        i = (n + FRAME_SAMPLES - 1) // FRAME_SAMPLES - 1  # the frame holding sample n - 1
        i = min(max(i, 0), self.frames_sent - 1)
        return float(self.sent_at[i])


async def run_session(caller: int, clip: str, url: str, pcm: bytes, language: str, timeout: float, hang_up: bool = False) -> SessionResult:
    """One session: ``start``, the clip (+ silence) at real-time pace, ``end``, every event timed
    until ``session_end`` (which comes once the spoken disclosure and replies have played).

    ``hang_up``: send no ``end``; close the WebSocket as soon as the audio is sent and every
    utterance seen to start has its final (or ``speech_discarded``), as a phone caller hangs up.
    (Not ``end`` and then close: the server then leaks the session when more reply audio is
    still to come than its outbox holds -- the reply blocks on the full outbox forever.)
    The server may also end the session itself (the dialogue hands the call to an operator
    after utterances it did not understand, or the caller said goodbye): then sending stops,
    what arrived is kept and ``end_reason`` says why.
    """
    frames = [pcm[off : off + FRAME_BYTES] for off in range(0, len(pcm), FRAME_BYTES)]
    res = SessionResult(caller, clip, np.full(len(frames), np.nan), np.full(len(frames), np.nan))
    fmt = AudioFormat(Encoding.PCM_S16LE, RATE, 1)
    where = f"caller {caller}, clip {clip}"
    open_utts: set[str] = set()  # started, no final or discard yet
    tasks: list[asyncio.Task] = []
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, max_size=None, open_timeout=30) as ws:
                await ws.send(Start(fmt, fmt, language).to_json())

                async def sender() -> None:
                    t0 = time.monotonic()
                    for i, frame in enumerate(frames):
                        # like a microphone: a frame leaves once its 20 ms have been "captured";
                        # absolute deadlines from t0, so sleep overshoot does not accumulate
                        due = t0 + (i + 1) * FRAME_S
                        res.deadline[i] = due
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        await ws.send(frame)
                        res.sent_at[i] = time.monotonic()
                    if not hang_up:
                        await ws.send(End().to_json())

                async def hang_up_when_transcribed(send_task: asyncio.Task) -> None:
                    await send_task
                    await asyncio.sleep(0.25)  # events about the last audio are on their way
                    while open_utts:
                        await asyncio.sleep(0.05)  # only delays the hang-up, not any measurement
                    if not res.end_reason:
                        res.end_reason = "hung_up"
                    await ws.close(1000, "caller hung up")

                async for msg in ws:
                    now = time.monotonic()
                    if isinstance(msg, bytes):  # reply speech (TTS): counted, not part of the figures
                        res.reply_audio_bytes += len(msg)
                        continue
                    ev = json.loads(msg)
                    res.events.append((now, ev))
                    kind = ev.get("type")
                    if kind == "error":
                        raise BenchError(f"{where}: the server sent an error event: {ev.get('code')}: {ev.get('message')}")
                    if kind == "ready" and not tasks:
                        tasks.append(asyncio.ensure_future(sender()))
                        if hang_up:
                            tasks.append(asyncio.ensure_future(hang_up_when_transcribed(tasks[0])))
                    elif kind == "speech_started":
                        open_utts.add(ev.get("utterance_id"))
                    elif kind == "speech_discarded" or (kind == "transcript" and ev.get("final") and ev.get("source", "audio") == "audio"):
                        open_utts.discard(ev.get("utterance_id"))
                    elif kind == "session_end" and res.end_reason != "hung_up":
                        res.end_reason = ev.get("reason", "")
                if ws.close_code != 1000:
                    raise BenchError(f"{where}: the session closed with code {ws.close_code} ({ws.close_reason!r})")
    except TimeoutError:
        raise BenchError(f"{where}: no final transcripts / session_end within {timeout:.0f}s") from None
    except ConnectionClosed as e:
        raise BenchError(f"{where}: the connection failed: {e}") from None
    except OSError as e:
        raise BenchError(f"{where}: cannot connect to {url}: {e}") from None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # e.g. the sender's ConnectionClosed after a handoff
    if not tasks:
        raise BenchError(f"{where}: the connection closed before 'ready'")
    if not res.end_reason:
        raise BenchError(f"{where}: the server closed the session without session_end")
    if res.end_reason in ("client_end", "hung_up") and res.frames_sent < len(frames):
        raise BenchError(f"{where}: the session ended before all audio was sent")
    if open_utts:
        raise BenchError(f"{where}: no final transcript for {sorted(open_utts)} before the session ended ({res.end_reason})")
    return res


async def run_caller(index: int, url: str, clips: list[Clip], start_delay: float, args) -> list[SessionResult]:
    """One caller: after ``start_delay``, the clips one after another, a session each."""
    await asyncio.sleep(start_delay)
    out = []
    for c in clips:
        pcm = build_stream([c], args.silence)
        timeout = len(pcm) / FRAME_BYTES * FRAME_S + args.timeout_slack
        out.append(await run_session(index, c.file, url, pcm, args.language, timeout, args.hang_up))
    return out


# --------------------------------------------------------------------------
# per-utterance figures
# --------------------------------------------------------------------------
@dataclass
class Utterance:
    caller: int
    clip: str
    uid: str
    endpoint_to_final: float
    speech_end_to_final: float
    partials: int
    first_partial: float | None
    forced: bool
    language: str


def analyse(res: SessionResult) -> tuple[list[Utterance], dict]:
    started: dict[str, float] = {}  # utterance id -> speech_started t
    partials: dict[str, list[float]] = {}  # utterance id -> arrival times of partials
    utts: list[Utterance] = []
    counts = {"discarded": 0, "replies": 0, "handoffs": 0}
    for arrival, ev in res.events:
        kind, uid = ev.get("type"), ev.get("utterance_id")
        if kind == "speech_started":
            started[uid] = float(ev["t"])
        elif kind == "speech_discarded":
            counts["discarded"] += 1
        elif kind == "reply":
            counts["replies"] += 1
        elif kind == "handoff":
            counts["handoffs"] += 1
        elif kind == "transcript" and ev.get("source", "audio") == "audio":
            if not ev.get("final"):
                partials.setdefault(uid, []).append(arrival)
                continue
            if ev.get("t_endpoint") is None or ev.get("t_end") is None:
                raise BenchError(f"caller {res.caller}, clip {res.clip}: final transcript {uid} lacks t_end/t_endpoint: {ev}")
            ps = partials.get(uid, [])
            first = ps[0] - res.sent_time(started[uid]) if ps and uid in started else None
            utts.append(
                Utterance(
                    res.caller, res.clip, uid,
                    endpoint_to_final=arrival - res.sent_time(float(ev["t_endpoint"])),
                    speech_end_to_final=arrival - res.sent_time(float(ev["t_end"])),
                    partials=len(ps), first_partial=first, forced=bool(ev.get("forced")), language=ev.get("language", ""),
                )
            )
    return utts, counts


# --------------------------------------------------------------------------
# one concurrency level
# --------------------------------------------------------------------------
async def run_level(n: int, url: str, clips: list[Clip], args, rng: random.Random, server: ServerProcess | None, server_pid: int | None) -> dict:
    # caller k starts at clip k (rotating), so concurrent callers are in different clips
    orders = [clips[k % len(clips):] + clips[: k % len(clips)] for k in range(n)]
    delays = sorted(rng.uniform(0, args.stagger_ms / 1000) for _ in range(n))
    per_caller = sum(c.seconds + args.silence for c in clips)
    say(f"{n} stream(s): {n * per_caller:.1f} s of audio in all, {per_caller:.1f} s each at real-time pace")

    log_mark = len(server.lines) if server else 0
    meter = CpuMeter(server_pid)
    sessions = await run_callers(run_caller(k, url, orders[k], delays[k], args) for k in range(n))
    use = meter.stop()
    wall, busy, cpu, client_cpu = use.wall, use.busy, use.server, use.client

    utts: list[Utterance] = []
    discarded = replies = handoffs = reply_bytes = 0
    lags: list[float] = []
    for r in sessions:
        u, c = analyse(r)
        utts += u
        discarded += c["discarded"]
        replies += c["replies"]
        handoffs += c["handoffs"]
        reply_bytes += r.reply_audio_bytes
        lags += [x for x in r.sent_at - r.deadline if not math.isnan(x)]
    # what was really streamed: a session the server ended early (handoff) stops sending
    audio_s = sum(r.frames_sent for r in sessions) * FRAME_S
    cut = [f"{r.clip} ({r.end_reason})" for r in sessions if r.frames_sent < len(r.sent_at)]

    e2f = [u.endpoint_to_final for u in utts]
    s2f = [u.speech_end_to_final for u in utts]
    firsts = [u.first_partial for u in utts if u.first_partial is not None]
    level = {
        "streams": n,
        "sessions": len(sessions),
        "sessions_cut_by_server": cut,
        "session_end_reasons": {k: sum(r.end_reason == k for r in sessions) for k in sorted({r.end_reason for r in sessions})},
        "utterances": len(utts),
        "forced_finals": sum(u.forced for u in utts),
        "discarded": discarded,
        "endpoint_to_final_ms": {"median": ms(median(e2f)), "p95": ms(p95(e2f)), "max": ms(max(e2f, default=None))},
        "speech_end_to_final_ms": {"median": ms(median(s2f)), "p95": ms(p95(s2f)), "max": ms(max(s2f, default=None))},
        "first_partial_ms": {"median": ms(median(firsts)), "p95": ms(p95(firsts)), "n": len(firsts)},
        "partials_per_utterance": round(sum(u.partials for u in utts) / len(utts), 2) if utts else None,
        "utterances_without_partial": sum(1 for u in utts if u.partials == 0),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "server_cpu_s": None if cpu is None else round(cpu, 2),
        "server_cpu_per_audio_s": None if cpu is None else round(cpu / audio_s, 3),
        "server_cores_busy": None if cpu is None else round(cpu / wall, 2),
        "client_cpu_s": round(client_cpu, 2),
        # CPU the rest of the machine used meanwhile: other load skews every figure on a small machine
        "other_cpu_s": None if use.other is None else round(use.other, 2),
        "machine_cores_busy": round(busy / wall, 2),
        "client_send_lag_ms": {"p99": ms(float(np.percentile(lags, 99))) if lags else None, "max": ms(max(lags, default=None))},
        "replies": replies,
        "handoffs": handoffs,
        "reply_audio_s": round(reply_bytes / (RATE * 2), 2),
        "per_utterance": [
            {
                "caller": u.caller, "clip": u.clip, "utterance": u.uid, "language": u.language, "forced": u.forced, "partials": u.partials,
                "endpoint_to_final_ms": ms(u.endpoint_to_final), "speech_end_to_final_ms": ms(u.speech_end_to_final),
                "first_partial_ms": ms(u.first_partial),
            }
            for u in utts
        ],
    }
    if server is not None:
        level["server_log"] = server_log_summary(server.lines[log_mark:])
    return level


async def warm_up(url: str, clip: Clip, args) -> None:
    """One untimed session like the measured ones: first-session costs stay out of the figures."""
    pcm = build_stream([clip], args.silence)
    await run_session(-1, clip.file, url, pcm, args.language, len(pcm) / FRAME_BYTES * FRAME_S + args.timeout_slack, args.hang_up)


# --------------------------------------------------------------------------
# offline RTF, in process
# --------------------------------------------------------------------------
def offline_rtf(clips: list[Clip], asr_overrides: dict, repeats: int) -> dict:
    from models.whisper import load_whisper
    from server.config import load_settings

    settings = load_settings(cli={"asr": asr_overrides} if asr_overrides else None, environ=dict(os.environ, DAUYS_ASR__DOWNLOAD="false"))
    say(f"offline pass: loading {settings.asr.model} in process")
    engine = load_whisper(settings.asr)
    engine.warmup(settings.asr.languages)
    allowed = settings.asr.language_weights()  # what a session in 'auto' mode passes for its first utterance
    per_clip = {}
    for c in clips:
        decodes = [engine.recognize(c.samples, None, allowed).decode_s for _ in range(repeats)]
        per_clip[c.file] = {"duration_s": round(c.seconds, 3), "decode_s": round(statistics.median(decodes), 3), "rtf": round(statistics.median(decodes) / c.seconds, 3)}
    return {
        "model": engine.model_id,
        "device": engine.device,
        "compute_type": engine.compute_type,
        "repeats": repeats,
        "rtf_median": round(statistics.median(v["rtf"] for v in per_clip.values()), 3),
        "per_clip": per_clip,
    }


# --------------------------------------------------------------------------
# batching comparison, in process
# --------------------------------------------------------------------------
async def _batch_level(scheduler, clips: list[Clip], streams: int, rounds: int, allowed) -> dict:
    from models.scheduler import Priority

    latencies: list[float] = []

    async def stream(k: int) -> float:
        audio_s = 0.0
        order = clips[k % len(clips):] + clips[: k % len(clips)]
        for _ in range(rounds):
            for c in order:
                t = time.perf_counter()
                await scheduler.submit(c.samples, None, allowed, Priority.FINAL)
                latencies.append(time.perf_counter() - t)
                audio_s += c.seconds
        return audio_s

    b0, d0 = scheduler.batches, scheduler.decoded
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    audio = sum(await asyncio.gather(*(stream(k) for k in range(streams))))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    calls = scheduler.batches - b0
    return {
        "audio_s": audio, "wall_s": wall, "rtf": wall / audio, "cpu_per_audio_s": cpu / audio,
        "latency_median_s": median(latencies), "latency_p95_s": p95(latencies),
        "requests": len(latencies), "engine_calls": calls, "mean_batch": (scheduler.decoded - d0) / max(1, calls),
    }


def compare_batching(args) -> dict:
    from models.whisper import load_whisper
    from server.config import load_settings
    from server.services import make_scheduler

    overrides = {k: v for k, v in (("model", args.model), ("compute_type", args.compute_type), ("device", args.device)) if v}
    settings = load_settings(cli={"asr": overrides} if overrides else None, environ=dict(os.environ, DAUYS_ASR__DOWNLOAD="false"))
    clips = load_clips(args.audio_dir, args.clips)
    say(f"batching comparison: loading {settings.asr.model} in process")
    engine = load_whisper(settings.asr)
    engine.warmup(settings.asr.languages)
    allowed = settings.asr.language_weights()
    busy0 = machine_busy_seconds()
    t0 = time.perf_counter()
    rows = []
    for n in args.levels:
        for b in args.batch_sizes:
            runs = []
            for r in range(args.batch_repeats):
                sched = make_scheduler(engine, settings.asr.model_copy(update={"batch_size": b}))
                try:
                    say(f"  {n} stream(s), batch size {b}, run {r + 1}/{args.batch_repeats}")
                    runs.append(asyncio.run(_batch_level(sched, clips, n, args.rounds, allowed)))
                finally:
                    sched.close()
            row = {"streams": n, "batch_size": b, "runs": len(runs)}
            for key in runs[0]:
                row[key] = statistics.median(run[key] for run in runs)
            rows.append(row)
    wall = time.perf_counter() - t0
    for row in rows:
        base = next(r for r in rows if r["streams"] == row["streams"] and r["batch_size"] == min(args.batch_sizes))
        row["speedup"] = base["rtf"] / row["rtf"]
    return {
        "machine": machine(),
        "model": engine.model_id, "device": engine.device, "compute_type": engine.compute_type,
        "batch_window_ms": settings.asr.batch_window_ms,
        "clips": [c.file for c in clips], "rounds": args.rounds, "repeats": args.batch_repeats,
        "machine_cores_busy": (machine_busy_seconds() - busy0) / wall if wall > 0 else None,
        "rows": rows,
    }


def print_batching(report: dict) -> None:
    m = report["machine"]
    print(f"ASR batching, in process: {report['model']} on {report['device']}/{report['compute_type']}, "
          f"{m['nproc']} cores ({m['cpu_model']}), batch window {report['batch_window_ms']:g} ms")
    print(f"load: N closed-loop streams, each decoding {', '.join(report['clips'])} whole (language auto) x{report['rounds']}; "
          f"medians of {report['repeats']} run(s)")
    head = ["streams", "batch", "aggregate RTF", "speed-up", "latency med s", "latency p95 s", "mean batch", "CPU s/audio s", "audio s", "wall s"]
    table = [head]
    for r in report["rows"]:
        table.append([str(r["streams"]), str(r["batch_size"]), f"{r['rtf']:.3f}", f"{r['speedup']:.2f}x", f"{r['latency_median_s']:.2f}",
                      f"{r['latency_p95_s']:.2f}", f"{r['mean_batch']:.2f}", f"{r['cpu_per_audio_s']:.3f}", f"{r['audio_s']:.0f}", f"{r['wall_s']:.1f}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    busy = report.get("machine_cores_busy")
    if busy is not None:
        print(f"machine cores busy during the comparison (all processes): {busy:.2f} of {m['nproc']}")


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def print_report(report: dict) -> None:
    m, s = report["machine"], report["server"]
    asr = s.get("asr", {})
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']} (Python {m['python']})")
    print(f"server:  {s['url']}  ASR {asr.get('model')} on {asr.get('device')}/{asr.get('compute_type')}")
    c = report["config"]
    print(
        f"clips:   {c['clips']} ({len(c['clip_files'])} clips, {c['clip_audio_s']:.1f} s) per caller, one after another, "
        f"one WebSocket session per clip, +{c['silence_s']:g} s silence after each clip, "
        f"20 ms frames at real-time pace, starts staggered 0-{c['stagger_ms']} ms; "
        + ("the caller hangs up (no 'end') once its finals are in" if c["hang_up"] else "'end', then wait for session_end")
    )
    levels = report["levels"]
    rows: list[tuple[str, list[str]]] = [
        ("utterances (finals)", [str(lv["utterances"]) for lv in levels]),
        ("  sessions (one per clip) / forced / discarded", [f"{lv['sessions']} / {lv['forced_finals']} / {lv['discarded']}" for lv in levels]),
        ("  sessions the server cut short (handoff)", [str(len(lv["sessions_cut_by_server"])) for lv in levels]),
        ("  session ends", [" ".join(f"{k}:{v}" for k, v in lv["session_end_reasons"].items()) for lv in levels]),
        ("endpoint->final median ms", [fmt(lv["endpoint_to_final_ms"]["median"]) for lv in levels]),
        ("endpoint->final p95 ms", [fmt(lv["endpoint_to_final_ms"]["p95"]) for lv in levels]),
        ("endpoint->final max ms", [fmt(lv["endpoint_to_final_ms"]["max"]) for lv in levels]),
        ("speech-end->final median ms", [fmt(lv["speech_end_to_final_ms"]["median"]) for lv in levels]),
        ("speech-end->final p95 ms", [fmt(lv["speech_end_to_final_ms"]["p95"]) for lv in levels]),
        ("first partial median ms (from speech start)", [fmt(lv["first_partial_ms"]["median"]) for lv in levels]),
        ("partials / utterance", [fmt(lv["partials_per_utterance"]) for lv in levels]),
        ("  utterances without a partial", [str(lv["utterances_without_partial"]) for lv in levels]),
        ("server CPU s / audio s", [fmt(lv["server_cpu_per_audio_s"]) for lv in levels]),
        ("  server CPU s / audio s streamed", [f"{fmt(lv['server_cpu_s'])} / {lv['audio_s']:g}" for lv in levels]),
        ("  server cores busy (CPU s / wall s)", [fmt(lv["server_cores_busy"]) for lv in levels]),
    ]
    if any("server_log" in lv for lv in levels):
        rows += [
            ("server log: decode median ms", [fmt(lv.get("server_log", {}).get("decode_ms_median")) for lv in levels]),
            ("server log: endpoint->final median ms", [fmt(lv.get("server_log", {}).get("endpoint_to_final_ms_median")) for lv in levels]),
            ("server log: endpoint->final p95 ms", [fmt(lv.get("server_log", {}).get("endpoint_to_final_ms_p95")) for lv in levels]),
        ]
    rows += [
        ("replies / handoffs / reply audio s received", [f"{lv['replies']} / {lv['handoffs']} / {lv['reply_audio_s']:g}" for lv in levels]),
        ("client CPU s", [fmt(lv["client_cpu_s"]) for lv in levels]),
        ("other processes' CPU s (machine - server - client)", [fmt(lv["other_cpu_s"]) for lv in levels]),
        ("machine cores busy (all processes)", [fmt(lv["machine_cores_busy"]) for lv in levels]),
        ("client send lag p99 / max ms", [f"{fmt(lv['client_send_lag_ms']['p99'])} / {fmt(lv['client_send_lag_ms']['max'])}" for lv in levels]),
        ("wall s", [fmt(lv["wall_s"]) for lv in levels]),
    ]
    head = ["streams"] + [str(lv["streams"]) for lv in levels]
    print_table(head, rows)
    off = report.get("offline")
    if off:
        print()
        print(f"offline RTF (in process, {off['model']} on {off['device']}/{off['compute_type']}, whole clip, median of {off['repeats']}): median {off['rtf_median']:g}")
        for name, v in off["per_clip"].items():
            print(f"  {name:<24} {v['duration_s']:7.2f} s audio  decode {v['decode_s']:6.3f} s  RTF {v['rtf']:.3f}")
    noisy = [lv["streams"] for lv in levels if (lv["other_cpu_s"] or 0) > 0.1 * lv["wall_s"]]
    if noisy:
        print()
        print(
            f"warning: other processes used over 10% of a core during the {', '.join(map(str, noisy))}-stream run(s); "
            "latency and CPU figures are skewed (see \"other processes' CPU s\")"
        )
    print_server_trouble(levels, "streams")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="1,4", help="concurrency levels, comma-separated (default 1,4)")
    p.add_argument("--clips", choices=["sentences", "all"], default="sentences", help="sentences (kind != single_word, default) or all")
    p.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO, help=f"clips and manifest.jsonl (default {DEFAULT_AUDIO})")
    p.add_argument("--url", help="benchmark an already-running server (ws://HOST:PORT/v1/voice) instead of starting one")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its CPU time (same machine only)")
    p.add_argument("--model", help="passed to `dauys serve --model` (and used by the offline pass)")
    p.add_argument("--compute-type", help="passed to `dauys serve --compute-type` (and the offline pass)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="passed to `dauys serve --device` (and the offline pass)")
    p.add_argument("--language", default="auto", help="session language (default auto)")
    p.add_argument("--silence", type=float, default=1.0, help="seconds of silence after each clip (default 1.0)")
    p.add_argument("--stagger-ms", type=int, default=500, help="callers start at a random 0..N ms (default 500)")
    p.add_argument("--seed", type=int, default=1, help="seed of the start stagger (default 1)")
    p.add_argument("--offline-repeats", type=int, default=3, help="decodes per clip in the offline pass (default 3; 0 skips it)")
    p.add_argument("--server-log", type=Path, help="write the started server's output (its log) to this file")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server's ready line")
    p.add_argument("--timeout-slack", type=float, default=120.0, help="seconds a caller may take beyond its audio")
    p.add_argument("--hang-up", action="store_true", help="no 'end': close each session once its finals are in, instead of waiting for session_end (spoken replies played)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--batch-size", type=int, help="asr.batch_size of the started server (DAUYS_ASR__BATCH_SIZE; 1 = unbatched; default: the server's)")
    p.add_argument("--compare-batching", action="store_true", help="no server: ASR throughput in process through the server's queue, per --batch-sizes and --streams (default 1,4,8)")
    p.add_argument("--batch-sizes", default="1,8", help="with --compare-batching: asr.batch_size values (default 1,8)")
    p.add_argument("--rounds", type=int, default=1, help="with --compare-batching: passes over the clips per stream (default 1)")
    p.add_argument("--batch-repeats", type=int, default=1, help="with --compare-batching: runs per level and batch size, medians reported (default 1)")
    args = p.parse_args(argv)
    if args.compare_batching and args.streams == p.get_default("streams"):
        args.streams = "1,4,8"
    try:
        args.levels = [int(x) for x in args.streams.split(",") if x.strip()]
        args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    except ValueError:
        p.error(f"--streams and --batch-sizes must be comma-separated integers, got {args.streams!r}, {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.rounds < 1 or args.batch_repeats < 1:
        p.error("--batch-sizes values, --rounds and --batch-repeats must be >= 1")
    if args.compare_batching and args.url:
        p.error("--compare-batching runs in process; it takes no --url")
    if not args.levels or min(args.levels) < 1:
        p.error("--streams needs at least one level >= 1")
    if args.server_pid and not args.url:
        p.error("--server-pid goes with --url")
    return args


async def bench(args, server: ServerProcess | None) -> dict:
    clips = load_clips(args.audio_dir, args.clips)
    if server is not None:
        url = server.wait_ready(args.start_timeout)
        pid = server.pid
    else:
        url, pid = args.url, args.server_pid
    info = await ready_info(url)
    shortest = min(clips, key=lambda c: c.seconds)
    say(f"warm-up call ({shortest.file}, untimed)")
    await warm_up(url, shortest, args)
    rng = random.Random(args.seed)
    levels = [await run_level(n, url, clips, args, rng, server, pid) for n in args.levels]
    return {
        "machine": machine(),
        "server": {"url": url, "started_by_bench": server is not None, "asr": info.get("asr", {}), "languages": info.get("languages")},
        "config": {
            "clips": args.clips, "clip_files": [c.file for c in clips], "clip_audio_s": round(sum(c.seconds for c in clips), 2),
            "session_per": "clip", "silence_s": args.silence, "frame_ms": FRAME_MS, "stagger_ms": args.stagger_ms,
            "seed": args.seed, "language": args.language, "hang_up": args.hang_up,
        },
        "levels": levels,
    }




def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare_batching:
        try:
            report = compare_batching(args)
        except BenchError as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return e.code
        emit(report, args.json, print_batching)
        return 0
    env = {"DAUYS_ASR__BATCH_SIZE": str(args.batch_size)} if args.batch_size else None
    report = run_with_server(args, bench, env)
    if isinstance(report, int):
        return report
    if args.offline_repeats > 0:
        overrides = {k: v for k, v in (("model", args.model), ("compute_type", args.compute_type), ("device", args.device)) if v}
        try:
            report["offline"] = offline_rtf(load_clips(args.audio_dir, args.clips), overrides, args.offline_repeats)
        except Exception as e:  # the streaming figures stand on their own
            say(f"offline pass failed: {type(e).__name__}: {e}")
            report["offline"] = None
    emit(report, args.json, print_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
