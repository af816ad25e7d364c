#!/usr/bin/env python3
"""Voice-to-voice latency: from the end of a caller's question to the first byte of the spoken reply.

    .venv/bin/python scripts/bench_latency.py                 # start `dauys serve`, 1 and 4 callers
    .venv/bin/python scripts/bench_latency.py --streams 1,2,4 --json
    .venv/bin/python scripts/bench_latency.py --url ws://127.0.0.1:8765/v1/voice --server-pid 1234

What it does
------------
* Starts the real server (``python -m server serve --port 0``, with
  ``DAUYS_ASR__DOWNLOAD=false``) and waits for its ``dauys: ready:`` line, or
  uses ``--url`` -- the server plumbing is ``scripts/benchlib``'s.
  One untimed warm-up call is made first, once the server has made the
  speech of its fixed texts (`tts.prefill`, a few CPU seconds in the
  background after start-up, which would otherwise slow the first calls).
* The questions: knowledge-base questions (models/data/demo_bank_kb.yaml)
  synthesised with ``espeak-ng -v kk|ru -s 140`` (``benchlib.espeak``), four in Kazakh and
  four in Russian, plus the real Kazakh recordings of the shared clip
  manifest (``kind`` "sentence", lang "kk"; these are not bank questions, so
  the expected reply to them is a rephrase request).
* For each concurrency level N in ``--streams``, N callers run at once, their
  starts staggered by a seeded random 0..``--stagger-ms``.  Every caller asks
  every question, one after another (caller k starts at question k, rotating),
  ONE WebSocket session PER QUESTION, as a caller who phones in with one
  question:
    - ``start`` with pcm_s16le 16 kHz in and out, default (real-time) output
      pacing, and ``language`` set to the question's language ("kk" or "ru";
      the real clips "kk") -- a line that knows its caller's language, so the
      figures do not depend on language identification;
    - from ``ready`` on, the caller's line streams 16 kHz audio continuously
      in 20 ms frames at real-time pace (frame i, audio [20i, 20i+20) ms, is
      sent at t0 + (i + 1) * 20 ms on the monotonic clock, absolute
      deadlines): digital silence while the spoken disclosure plays (it is not
      interruptible), then -- once the disclosure has finished PLAYING (the
      ``audio_end`` with reply_id "disclosure" has come and the received
      audio's duration, counted from its first byte, has elapsed; the server
      sends with a 0.3 s lead) -- the question, then silence again;
    - only silence follows the question, so the caller never barges in on its
      own reply; the silence lasts at least ``--silence`` (2.5 s) and until
      the first audio byte of the reply to the question's last final
      transcript has arrived (at most ``--reply-timeout`` s after the
      question); then the caller hangs up (closes the socket; no ``end``,
      which would make the server finish the reply at real-time pace first).

How each figure is measured
---------------------------
Every session keeps ``sent_at[i]``, the monotonic time at which frame i had
been handed to the socket.  Server event times are seconds of input audio
from the start of the session (16 kHz in: no resampling), so "the caller had
sent the audio up to t" is ``sent_at`` of the frame holding sample
round(t * 16000) - 1.  Arrival times are the monotonic times at which the
receive loop got an event (or binary frame).  Per question, for the LAST
final transcript of the question (normally the only one):

* end of speech (``--speech-end audio``, the default): the end of the
  question's own audio -- its last 10 ms window within 26 dB of its loudest
  (the client knows it: espeak-ng appends ~0.4 s of silence, which is not
  speech) -- mapped to its send time.  This is independent of the server.
  ``--speech-end server``: the final's ``t_end`` minus the server's speech
  pad (``vad.speech_pad_ms`` in whole 32 ms VAD windows, as the segmenter
  pads), meant to be the end of the last VAD speech window (for a forced
  final, ``t_end`` itself).  The other reference is printed as a cross-check
  row, with "(server t_end - pad) - audio speech end": Silero's last speech
  window ends some 10-70 ms after the audio's, so a negative value means the
  server reports ``t_end`` early (see the note printed then).
* endpoint: end of speech -> send time of ``t_endpoint`` (the input time at
  which the VAD decided the utterance had ended: ``vad.min_silence_ms`` of
  silence).  Mostly the configured endpointing silence itself.
* ASR final: send time of ``t_endpoint`` -> arrival of the final
  ``transcript`` (VAD + final decode + queueing + delivery).
* dialogue: final ``transcript`` arrival -> ``reply`` arrival (the server
  emits ``reply`` once the dialogue engine has produced the whole text; TTS
  of the first sentence has started meanwhile).
* first TTS chunk: ``reply`` arrival -> ``audio_start`` arrival (the server
  sends ``audio_start`` with the first synthesised chunk).
* first audio: ``audio_start`` arrival -> first binary frame arrival.
* total: end of speech -> first binary frame of the reply.
* reply kind: the reply text (whitespace-normalised) compared with the KB's
  ``rephrase(lang)`` and ``handoff(lang)`` texts (and the session handoff
  text); anything else is an answer, "right" if it is the KB answer of the
  entry the question was taken from.

Percentiles: ``statistics.median`` and nearest-rank p95 (the ceil(0.95 n)-th
smallest value).  The client runs on the same machine as the server and
competes with it for CPU; "client send lag" shows whether it kept real-time
pace.  After each level the server's /metrics is read for
``dauys_sessions_active`` (should be back to 0: every hung-up session was
cleaned up) and ``dauys_barge_ins_total`` (should not grow: callers only send
silence while a reply plays).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib and bench_asr, beside this script
from bench_asr import FRAME_BYTES, FRAME_S, FRAME_SAMPLES, RATE  # noqa: E402

# benchlib also puts the project root on sys.path
from benchlib import (  # noqa: E402
    DEFAULT_AUDIO,
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
    print_server_trouble,
    print_table,
    ready_info,
    run_callers,
    run_with_server,
    say,
    scrape_metrics,
    server_log_summary,
)

from models.audio import Encoding, encode_wire, read_audio  # noqa: E402
from pipeline.events import AudioFormat, Start  # noqa: E402

TARGET_MEDIAN_MS = 500
TARGET_P95_MS = 900

# (language, KB entry the question is taken from, question) -- from models/data/demo_bank_kb.yaml,
# as a caller would say them (some verbatim, some paraphrased)
QUESTIONS = [
    ("kk", "card_blocked", "Картам бұғатталып қалды"),
    ("kk", "branch_hours", "Филиалдарыңыз қашан жұмыс істейді"),
    ("kk", "balance", "Балансымды қалай білемін"),
    ("kk", "currency_exchange", "Доллар курсы қанша"),
    ("ru", "card_blocked", "Как разблокировать карту"),
    ("ru", "currency_exchange", "Какой у вас курс доллара"),
    ("ru", "card_lost", "Я потерял карту"),
    ("ru", "branch_hours", "Во сколько открывается отделение"),
]


# --------------------------------------------------------------------------
# questions
# --------------------------------------------------------------------------
@dataclass
class Question:
    name: str
    lang: str
    expected: str | None  # KB entry id, None for the real clips
    text: str
    samples: np.ndarray  # 16 kHz float32
    speech_end_s: float  # end of speech in the clip, from its energy

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def speech_end(samples: np.ndarray) -> float:
    """End of the last 10 ms window within 26 dB of the loudest one (seconds into the clip)."""
    w = RATE // 100
    n = len(samples) // w
    if n == 0:
        return len(samples) / RATE
    rms = np.sqrt(np.mean(samples[: n * w].reshape(n, w) ** 2, axis=1))
    loud = np.nonzero(rms >= max(rms.max() * 0.05, 1e-4))[0]
    return (int(loud[-1]) + 1) * w / RATE if len(loud) else len(samples) / RATE


def load_clips(audio_dir: Path, lang: str = "kk") -> list[Question]:
    """The shared clip manifest's real recordings of ``kind`` "sentence" in ``lang`` (not bank questions)."""
    manifest = audio_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise BenchError(f"no clip manifest at {manifest} (use --audio-dir or DAUYS_SHARED_AUDIO, or --no-real-clips)", 2)
    qs = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("kind") == "sentence" and rec.get("lang") == lang:
            x = read_audio(audio_dir / rec["file"], RATE).samples
            qs.append(Question(rec["file"], lang, None, rec.get("text", ""), x, speech_end(x)))
    return qs


def load_questions(audio_dir: Path, rate_wpm: int, real_clips: bool) -> list[Question]:
    qs = []
    for lang, entry, text in QUESTIONS:
        x = espeak(text, lang, rate_wpm)
        qs.append(Question(f"tts-{lang}-{entry}", lang, entry, text, x, speech_end(x)))
    if real_clips:
        qs += load_clips(audio_dir)
    return qs


# --------------------------------------------------------------------------
# one call: one question in one session
# --------------------------------------------------------------------------
@dataclass
class Call:
    caller: int
    question: Question
    sent_at: list[float] = field(default_factory=list)  # monotonic time at which frame i had been sent
    deadline: list[float] = field(default_factory=list)  # when frame i was due
    q_frame0: int | None = None  # the frame the question starts in
    q_sent_end: float | None = None  # when its last frame had been sent
    events: list[tuple[float, dict]] = field(default_factory=list)
    first_audio: dict[str, float] = field(default_factory=dict)  # reply_id -> first binary frame arrival
    audio_bytes: dict[str, int] = field(default_factory=dict)
    end_reason: str = ""

    def sent_time(self, t: float) -> float:
        """Monotonic time at which all audio up to input time ``t`` (seconds) had been sent."""
        n = int(round(t * RATE))
        i = (n + FRAME_SAMPLES - 1) // FRAME_SAMPLES - 1  # the frame holding sample n - 1
        i = min(max(i, 0), len(self.sent_at) - 1)
        return self.sent_at[i]


async def run_call(caller: int, q: Question, url: str, args) -> Call:
    call = Call(caller, q)
    fmt_ = AudioFormat(Encoding.PCM_S16LE, RATE, 1)
    pcm = encode_wire(q.samples, Encoding.PCM_S16LE)
    pcm += b"\0" * (-len(pcm) % FRAME_BYTES)
    qframes = [pcm[o : o + FRAME_BYTES] for o in range(0, len(pcm), FRAME_BYTES)]
    silence = b"\0" * FRAME_BYTES
    where = f"caller {caller}, {q.name}"
    stop = asyncio.Event()
    state = {"disclosure_plays_until": None, "disclosure_started": False}
    open_utts: set[str] = set()
    finals: list[str] = []  # utterance ids of finals after the question started, in order
    reply_of: dict[str, str] = {}  # utterance id -> reply id
    current_audio: list[str | None] = [None]
    tasks: list[asyncio.Task] = []

    def settled(now: float) -> bool:
        if call.end_reason:  # the server ended the session (handoff, goodbye)
            return True
        if call.q_sent_end is None:
            return False
        waited = now - call.q_sent_end
        if waited >= args.reply_timeout:
            return True
        if waited < args.silence or open_utts:
            return False
        if not finals:
            return True  # nothing recognised in the question: no reply will come
        rid = reply_of.get(finals[-1])
        return rid is not None and rid in call.first_audio

    async def sender(ws) -> None:
        t0 = time.monotonic()
        i, qi = 0, None
        while not stop.is_set():
            due = t0 + (i + 1) * FRAME_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if qi is None:
                until = state["disclosure_plays_until"]
                if until is None and not state["disclosure_started"] and due - t0 > args.disclosure_wait:
                    until = state["disclosure_plays_until"] = due - FRAME_S  # no spoken disclosure came (no TTS?)
                if until is not None and due - FRAME_S >= until:  # this frame is "captured" after the disclosure
                    qi, call.q_frame0 = 0, i
            if qi is not None and qi < len(qframes):
                frame = qframes[qi]
                qi += 1
            else:
                frame = silence
            await ws.send(frame)
            now = time.monotonic()
            call.sent_at.append(now)
            call.deadline.append(due)
            if qi == len(qframes) and call.q_sent_end is None:
                call.q_sent_end = now
            i += 1
            if settled(now):
                stop.set()
        if not call.end_reason:  # hang up here: the server may have nothing more to send to wake the receive loop
            call.end_reason = "hung_up"
            await ws.close(1000, "caller hung up")

    try:
        async with asyncio.timeout(args.call_timeout):
            async with connect(url, max_size=None, open_timeout=30) as ws:
                await ws.send(Start(fmt_, fmt_, q.lang).to_json())
                closer = None
                async for msg in ws:
                    now = time.monotonic()
                    if isinstance(msg, bytes):
                        rid = current_audio[0]
                        if rid is not None:
                            call.first_audio.setdefault(rid, now)
                            call.audio_bytes[rid] = call.audio_bytes.get(rid, 0) + len(msg)
                        if settled(now):
                            stop.set()
                    else:
                        ev = json.loads(msg)
                        call.events.append((now, ev))
                        kind = ev.get("type")
                        if kind == "error":
                            raise BenchError(f"{where}: the server sent an error event: {ev.get('code')}: {ev.get('message')}")
                        if kind == "ready" and not tasks:
                            tasks.append(asyncio.ensure_future(sender(ws)))
                        elif kind == "audio_start":
                            current_audio[0] = ev.get("reply_id")
                            if ev.get("reply_id") == "disclosure":
                                state["disclosure_started"] = True
                        elif kind == "audio_end":
                            if ev.get("reply_id") == "disclosure":
                                # it has played once its duration has elapsed from its first byte
                                first = call.first_audio.get("disclosure", now)
                                dur = call.audio_bytes.get("disclosure", 0) / (2 * RATE)
                                state["disclosure_plays_until"] = max(now, first + dur)
                            current_audio[0] = None
                        elif kind == "speech_started":
                            open_utts.add(ev.get("utterance_id"))
                        elif kind == "speech_discarded":
                            open_utts.discard(ev.get("utterance_id"))
                        elif kind == "transcript" and ev.get("final") and ev.get("source", "audio") == "audio":
                            open_utts.discard(ev.get("utterance_id"))
                            finals.append(ev.get("utterance_id"))
                        elif kind == "reply":
                            reply_of[ev.get("utterance_id")] = ev.get("reply_id")
                        elif kind == "session_end":
                            call.end_reason = ev.get("reason", "") or "?"
                        if settled(now):
                            stop.set()
                    if stop.is_set() and closer is None and not call.end_reason:
                        call.end_reason = "hung_up"
                        closer = asyncio.ensure_future(ws.close(1000, "caller hung up"))
                        tasks.append(closer)
                if ws.close_code != 1000:
                    raise BenchError(f"{where}: the session closed with code {ws.close_code} ({ws.close_reason!r})")
    except TimeoutError:
        raise BenchError(f"{where}: the call did not finish within {args.call_timeout:.0f}s") from None
    except ConnectionClosed as e:
        raise BenchError(f"{where}: the connection failed: {e}") from None
    except OSError as e:
        raise BenchError(f"{where}: cannot connect to {url}: {e}") from None
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not tasks:
        raise BenchError(f"{where}: the connection closed before 'ready'")
    if not call.end_reason:
        raise BenchError(f"{where}: the server closed the session without session_end")
    return call


async def run_caller(index: int, url: str, questions: list[Question], start_delay: float, args) -> list[Call]:
    await asyncio.sleep(start_delay)
    return [await run_call(index, q, url, args) for q in questions]


# --------------------------------------------------------------------------
# per-call figures
# --------------------------------------------------------------------------
def norm(text: str) -> str:
    return " ".join(text.split()).strip().casefold()


class ReplyKinds:
    def __init__(self, session_handoff: dict[str, str]) -> None:
        from models.dialogue.kb import KnowledgeBase

        self.kb = KnowledgeBase.load(None)
        self.session_handoff = {norm(v) for v in session_handoff.values()}

    def classify(self, text: str, lang: str, expected: str | None, handed_off: bool, dialogue: dict | None = None) -> str:
        act = (dialogue or {}).get("act")
        if act in ("confirm", "choose"):  # a clarifying question (README, Understanding): right if it offers the entry
            return "clarify_right" if expected in (dialogue.get("entries") or []) else "clarify_other"
        t = norm(text)
        if t == norm(self.kb.rephrase(lang)):
            return "rephrase"
        if t == norm(self.kb.handoff(lang)) or t in self.session_handoff or handed_off:
            return "handoff"
        if expected is not None and expected in self.kb.by_id and t == norm(self.kb.answer(expected, lang)):
            return "answer_right"
        return "answer_other"


def analyse(call: Call, pad_s: float, kinds: ReplyKinds, reference: str = "audio") -> dict:
    q = call.question
    out = {
        "caller": call.caller, "question": q.name, "language": q.lang, "expected": q.expected, "end_reason": call.end_reason,
        "outcome": None, "transcript": None, "reply": None, "reply_kind": None, "finals": 0,
    }
    q_start_t = (call.q_frame0 or 0) * FRAME_S
    finals = [(a, ev) for a, ev in call.events
              if ev.get("type") == "transcript" and ev.get("final") and ev.get("source", "audio") == "audio"
              and float(ev.get("t_end", 0)) > q_start_t]
    out["finals"] = len(finals)
    out["discarded"] = sum(1 for _, ev in call.events if ev.get("type") == "speech_discarded")
    if call.q_frame0 is None:
        out["outcome"] = "question_not_sent"
        return out
    if not finals:
        out["outcome"] = "no_final"
        return out
    f_arr, fin = finals[-1]
    uid = fin["utterance_id"]
    out["transcript"] = fin.get("text")
    reply = next(((a, ev) for a, ev in call.events if ev.get("type") == "reply" and ev.get("utterance_id") == uid), None)
    if reply is None:
        out["outcome"] = "no_reply"
        return out
    r_arr, rev = reply
    rid = rev.get("reply_id")
    handed_off = any(ev.get("type") == "handoff" for _, ev in call.events)
    out["reply"] = rev.get("text")
    out["reply_kind"] = kinds.classify(rev.get("text", ""), rev.get("language") or q.lang, q.expected, handed_off, rev.get("dialogue"))
    out["models"] = (rev.get("provenance") or {}).get("models")
    a_arr = next((a for a, ev in call.events if ev.get("type") == "audio_start" and ev.get("reply_id") == rid), None)
    b_arr = call.first_audio.get(rid)
    if a_arr is None or b_arr is None:
        out["outcome"] = "no_audio"
        return out
    # an earlier reply of this session still playing (not interrupted) when the caller had
    # already started this utterance: it was spoken over the caller, and this reply waited for it
    started = next((a for a, ev in call.events if ev.get("type") == "speech_started" and ev.get("utterance_id") == uid), f_arr)
    out["talked_over"] = any(
        ev.get("type") == "audio_end" and ev.get("reply_id") not in (rid, "disclosure") and not ev.get("interrupted") and a > started
        for a, ev in call.events
    )
    forced = bool(fin.get("forced"))
    t_server_end = float(fin["t_end"]) - (0.0 if forced else pad_s)
    t_audio_end = q_start_t + q.speech_end_s
    s_server = call.sent_time(t_server_end)
    s_audio = call.sent_time(t_audio_end)
    s = s_audio if reference == "audio" else s_server
    e = call.sent_time(float(fin["t_endpoint"]))
    out.update(
        outcome="reply",
        forced=forced,
        stages={
            "endpoint": e - s,
            "asr_final": f_arr - e,
            "dialogue": r_arr - f_arr,
            "first_tts_chunk": a_arr - r_arr,
            "first_audio": b_arr - a_arr,
            "total": b_arr - s,
            "total_from_audio_speech_end": b_arr - s_audio,
            "total_from_server_t_end": b_arr - s_server,
        },
        vad_minus_audio_speech_end=(t_audio_end, t_server_end),
    )
    return out


# --------------------------------------------------------------------------
# one concurrency level
# --------------------------------------------------------------------------
def metrics_snapshot(base: str) -> dict[str, float]:
    want = ("dauys_sessions_active", "dauys_barge_ins_total", "dauys_speculative_wasted_seconds_total")
    out: dict[str, float] = {}
    for series, value in scrape_metrics(base).items():
        name = series.split("{", 1)[0]
        if name in want:
            out[name] = out.get(name, 0.0) + value
        elif name == "dauys_speculative_replies_total":  # by result: hit, miss
            result = series.split('result="', 1)[1].split('"', 1)[0] if 'result="' in series else ""
            key = f"{name}:{result}"
            out[key] = out.get(key, 0.0) + value
    return out


STAGES = ["endpoint", "asr_final", "dialogue", "first_tts_chunk", "first_audio", "total", "total_from_audio_speech_end", "total_from_server_t_end"]


async def run_level(n: int, url: str, questions: list[Question], args, rng: random.Random, server, server_pid, pad_s: float, kinds: ReplyKinds) -> dict:
    orders = [questions[k % len(questions):] + questions[: k % len(questions)] for k in range(n)]
    delays = sorted(rng.uniform(0, args.stagger_ms / 1000) for _ in range(n))
    say(f"{n} caller(s), {len(questions)} questions each, one session per question")
    base = http_base(url)
    m0 = await asyncio.to_thread(metrics_snapshot, base)
    log_mark = len(server.lines) if server else 0
    meter = CpuMeter(server_pid)
    calls = await run_callers(run_caller(k, url, orders[k], delays[k], args) for k in range(n))
    use = meter.stop()
    wall, busy, cpu, client_cpu = use.wall, use.busy, use.server, use.client
    await asyncio.sleep(1.0)  # let the server clean up the hung-up sessions
    m1 = await asyncio.to_thread(metrics_snapshot, base)

    per = [analyse(c, pad_s, kinds, args.speech_end) for c in calls]
    ok = [p for p in per if p["outcome"] == "reply"]
    stage = {}
    for s in STAGES:
        xs = [p["stages"][s] for p in ok]
        stage[s] = {"median": ms(median(xs)), "p95": ms(p95(xs)), "max": ms(max(xs, default=None))}
    by_lang = {}
    for lang in sorted({p["language"] for p in ok}):
        xs = [p["stages"]["total"] for p in ok if p["language"] == lang]
        by_lang[lang] = {"n": len(xs), "median": ms(median(xs)), "p95": ms(p95(xs))}
    single = [p["stages"]["total"] for p in ok if p["finals"] == 1]
    kinds_count = {k: sum(p["reply_kind"] == k for p in per if p["reply"] is not None) for k in ("answer_right", "answer_other", "clarify_right", "clarify_other", "rephrase", "handoff")}
    lags = [s - d for c in calls for s, d in zip(c.sent_at, c.deadline)]
    audio_s = sum(len(c.sent_at) for c in calls) * FRAME_S
    vad_off = [v - a for p in ok for a, v in [p["vad_minus_audio_speech_end"]]]
    level = {
        "streams": n,
        "calls": len(calls),
        "replies": len(ok),
        "outcomes": {k: sum(p["outcome"] == k for p in per) for k in sorted({p["outcome"] for p in per})},
        "session_end_reasons": {k: sum(c.end_reason == k for c in calls) for k in sorted({c.end_reason for c in calls})},
        "reply_kinds": kinds_count,
        "multi_final_questions": sum(1 for p in per if p["finals"] > 1),
        "discarded": sum(p.get("discarded", 0) for p in per),
        "forced_finals": sum(1 for p in ok if p.get("forced")),
        "stages_ms": stage,
        "total_by_language_ms": by_lang,
        "total_single_utterance_ms": {"n": len(single), "median": ms(median(single)), "p95": ms(p95(single))},
        "talked_over": sum(1 for p in ok if p.get("talked_over")),
        "vad_minus_audio_speech_end_ms": {"median": ms(median(vad_off)), "min": ms(min(vad_off, default=None)), "max": ms(max(vad_off, default=None))},
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "server_cpu_s": None if cpu is None else round(cpu, 2),
        "server_cores_busy": None if cpu is None else round(cpu / wall, 2),
        "client_cpu_s": round(client_cpu, 2),
        "other_cpu_s": None if use.other is None else round(use.other, 2),
        "machine_cores_busy": round(busy / wall, 2),
        "client_send_lag_ms": {"p99": ms(float(np.percentile(lags, 99))) if lags else None, "max": ms(max(lags, default=None))},
        "sessions_active_after": m1.get("dauys_sessions_active"),
        "barge_ins": None if "dauys_barge_ins_total" not in m1 else round(m1["dauys_barge_ins_total"] - m0.get("dauys_barge_ins_total", 0.0)),
        "speculative": {
            k: round(m1.get(f"dauys_speculative_replies_total:{k}", 0.0) - m0.get(f"dauys_speculative_replies_total:{k}", 0.0)) for k in ("hit", "miss")
        } | {"wasted_s": round(m1.get("dauys_speculative_wasted_seconds_total", 0.0) - m0.get("dauys_speculative_wasted_seconds_total", 0.0), 3)},
        "per_call": [
            {**{k: v for k, v in p.items() if k not in ("stages", "vad_minus_audio_speech_end")},
             **({"stages_ms": {k: ms(v) for k, v in p["stages"].items()}} if "stages" in p else {})}
            for p in per
        ],
    }
    if server is not None:
        level["server_log"] = server_log_summary(server.lines[log_mark:])
    return level


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def print_report(report: dict) -> None:
    m, s, c = report["machine"], report["server"], report["config"]
    asr = s.get("asr", {})
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']} (Python {m['python']})")
    print(f"server:  {s['url']}  ASR {asr.get('model')} on {asr.get('device')}/{asr.get('compute_type')}; "
          f"dialogue {s.get('models', {}).get('dialogue')}; TTS {', '.join(sorted(set(s.get('tts', []))) or ['-'])}")
    print(f"         VAD min_silence {c['vad_min_silence_ms']} ms, speech pad {c['speech_pad_ms']} ms (= {c['speech_pad_effective_ms']:g} ms in 32 ms windows)")
    if c["speech_end"] == "audio":
        print("end of speech: from the question's audio (its last 10 ms within 26 dB of its loudest), mapped to its send time")
    else:
        print(f"end of speech: the final's t_end minus the speech pad ({c['speech_pad_effective_ms']:g} ms), mapped to its send time")
    print(f"calls:   {len(c['questions'])} questions per caller ({c['n_tts_questions']} espeak-ng kk/ru KB questions at {c['espeak_wpm']} wpm + "
          f"{len(c['questions']) - c['n_tts_questions']} real kk clips), one session each, start language = question language, "
          f"pcm_s16le 16 kHz in/out, realtime output pacing; question after the disclosure has played, then >= {c['silence_s']:g} s "
          f"silence until the reply's first audio byte, then hang up; 20 ms frames, starts staggered 0-{c['stagger_ms']} ms")
    print(f"target:  one caller on a 2-core CPU: voice-to-voice median <= {TARGET_MEDIAN_MS} ms, p95 <= {TARGET_P95_MS} ms")
    levels = report["levels"]

    if c["speech_end"] == "audio":
        other_ref, other_key = "server t_end - pad", "total_from_server_t_end"
    else:
        other_ref, other_key = "audio speech end", "total_from_audio_speech_end"

    def mp(lv, key):
        st = lv["stages_ms"][key]
        return f"{fmt(st['median'])} / {fmt(st['p95'])}"

    rows = [
        ("replies (questions answered with audio)", [f"{lv['replies']} of {lv['calls']}" for lv in levels]),
        ("TOTAL voice-to-voice median / p95 ms", [mp(lv, "total") for lv in levels]),
        (f"  endpoint ({'audio' if c['speech_end'] == 'audio' else 't_end - pad'} speech end -> endpoint decision)", [mp(lv, "endpoint") for lv in levels]),
        ("  ASR final (endpoint -> final transcript)", [mp(lv, "asr_final") for lv in levels]),
        ("  dialogue (final -> reply event)", [mp(lv, "dialogue") for lv in levels]),
        ("  first TTS chunk (reply -> audio_start)", [mp(lv, "first_tts_chunk") for lv in levels]),
        ("  first audio (audio_start -> first byte)", [mp(lv, "first_audio") for lv in levels]),
        ("TOTAL max ms", [fmt(lv["stages_ms"]["total"]["max"]) for lv in levels]),
        (f"total from {other_ref} median / p95 ms", [mp(lv, other_key) for lv in levels]),
        ("  (server t_end - pad) - audio speech end median ms", [fmt(lv["vad_minus_audio_speech_end_ms"]["median"]) for lv in levels]),
    ]
    rows.append(("total median / p95 ms, one-utterance questions",
                 [f"{fmt(lv['total_single_utterance_ms']['median'])} / {fmt(lv['total_single_utterance_ms']['p95'])}" for lv in levels]))
    langs = sorted({k for lv in levels for k in lv["total_by_language_ms"]})
    for lang in langs:
        rows.append((f"total median / p95 ms, {lang} questions",
                     [(lambda d: f"{fmt(d.get('median'))} / {fmt(d.get('p95'))}")(lv["total_by_language_ms"].get(lang, {})) for lv in levels]))

    def share(lv, *ks):
        n = sum(lv["reply_kinds"].values())
        k = sum(lv["reply_kinds"].get(x, 0) for x in ks)
        return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "-"

    rows += [
        ("replies: real answer (right entry + other)", [f"{share(lv, 'answer_right', 'answer_other')}: {lv['reply_kinds']['answer_right']} + {lv['reply_kinds']['answer_other']}" for lv in levels]),
        ("replies: clarifying question (offering the right entry + other)", [
            f"{share(lv, 'clarify_right', 'clarify_other')}: {lv['reply_kinds'].get('clarify_right', 0)} + {lv['reply_kinds'].get('clarify_other', 0)}" for lv in levels
        ]),
        ("replies: rephrase", [share(lv, "rephrase") for lv in levels]),
        ("replies: handoff", [share(lv, "handoff") for lv in levels]),
        ("outcomes", [" ".join(f"{k}:{v}" for k, v in lv["outcomes"].items()) for lv in levels]),
        ("questions split in >1 final / forced / discarded", [f"{lv['multi_final_questions']} / {lv['forced_finals']} / {lv['discarded']}" for lv in levels]),
        ("replies queued behind an earlier reply played over the caller", [str(lv["talked_over"]) for lv in levels]),
    ]
    if any("server_log" in lv for lv in levels):
        rows += [
            ("server log: decode median / p95 ms", [f"{fmt(lv['server_log']['decode_ms_median'])} / {fmt(lv['server_log']['decode_ms_p95'])}" for lv in levels]),
            ("server log: endpoint->final median / p95 ms", [f"{fmt(lv['server_log']['endpoint_to_final_ms_median'])} / {fmt(lv['server_log']['endpoint_to_final_ms_p95'])}" for lv in levels]),
        ]
    rows += [
        ("server cores busy (CPU s / wall s)", [fmt(lv["server_cores_busy"]) for lv in levels]),
        ("machine cores busy / other processes' CPU s", [f"{fmt(lv['machine_cores_busy'])} / {fmt(lv['other_cpu_s'])}" for lv in levels]),
        ("client CPU s / send lag p99 / max ms", [f"{fmt(lv['client_cpu_s'])} / {fmt(lv['client_send_lag_ms']['p99'])} / {fmt(lv['client_send_lag_ms']['max'])}" for lv in levels]),
        ("after: sessions active / barge-ins", [f"{fmt(lv['sessions_active_after'])} / {fmt(lv['barge_ins'])}" for lv in levels]),
        ("speculative replies: hit / miss (wasted s)", [f"{lv['speculative']['hit']} / {lv['speculative']['miss']} ({lv['speculative']['wasted_s']})" for lv in levels]),
        ("wall s", [fmt(lv["wall_s"]) for lv in levels]),
    ]
    head = ["callers"] + [str(lv["streams"]) for lv in levels]
    print_table(head, rows)
    one = next((lv for lv in levels if lv["streams"] == 1), None)
    if one and one["stages_ms"]["total"]["median"] is not None:
        med, p = one["stages_ms"]["total"]["median"], one["stages_ms"]["total"]["p95"]
        verdict = "MET" if med <= TARGET_MEDIAN_MS and p <= TARGET_P95_MS else "NOT MET"
        print()
        print(f"target (1 caller, 2-core CPU; this machine has {m['nproc']} CPUs): median {med:g} ms vs <= {TARGET_MEDIAN_MS}, "
              f"p95 {p:g} ms vs <= {TARGET_P95_MS}: {verdict}")
    offs = [lv["vad_minus_audio_speech_end_ms"]["median"] for lv in levels if lv["vad_minus_audio_speech_end_ms"]["median"] is not None]
    if offs and max(offs) < 0:
        print()
        print(f"note: the server's t_end - speech pad lies {-max(offs):g} ms or more BEFORE the end of the question's audio (median); "
              "Silero's last speech window ends after the audio's, so the finals' t_end look reported too early")
    print()
    print("per question (1st level listed, caller 0): total ms / kind / transcript")
    lv0 = levels[0]
    for p in lv0["per_call"]:
        if p["caller"] != 0:
            continue
        tot = p.get("stages_ms", {}).get("total")
        print(f"  {p['question']:<28} {fmt(tot):>7}  {p['reply_kind'] or p['outcome']:<12} {p['transcript']!r}")
    noisy = [lv["streams"] for lv in levels if (lv["other_cpu_s"] or 0) > 0.1 * lv["wall_s"]]
    if noisy:
        print()
        print(f"warning: other processes used over 10% of a core during the {', '.join(map(str, noisy))}-caller run(s); latency figures are skewed")
    print_server_trouble(levels, "callers")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="1,4", help="concurrent callers per level, comma-separated (default 1,4)")
    p.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO, help=f"real clips and manifest.jsonl (default {DEFAULT_AUDIO})")
    p.add_argument("--no-real-clips", action="store_true", help="only the espeak-ng KB questions")
    p.add_argument("--espeak-wpm", type=int, default=140, help="espeak-ng speaking rate (default 140)")
    p.add_argument("--url", help="benchmark an already-running server (ws://HOST:PORT/v1/voice) instead of starting one")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its CPU time (same machine only)")
    p.add_argument("--model", help="passed to `dauys serve --model`")
    p.add_argument("--compute-type", help="passed to `dauys serve --compute-type`")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="passed to `dauys serve --device`")
    p.add_argument("--silence", type=float, default=2.5, help="seconds of silence after each question, at least (default 2.5)")
    p.add_argument("--reply-timeout", type=float, default=15.0, help="seconds after the question to wait for the reply's first audio (default 15)")
    p.add_argument("--disclosure-wait", type=float, default=10.0, help="seconds to wait for the spoken disclosure to start before asking anyway (default 10)")
    p.add_argument("--call-timeout", type=float, default=90.0, help="seconds one call may take in all (default 90)")
    p.add_argument("--speech-end", choices=["audio", "server"], default="audio",
                   help="end of speech: 'audio' (default): from the question's own audio (energy); 'server': the final's t_end minus vad.speech_pad_ms")
    p.add_argument("--speech-pad-ms", type=int, help="the server's vad.speech_pad_ms (default: from this project's settings/environment)")
    p.add_argument("--stagger-ms", type=int, default=500, help="callers start at a random 0..N ms (default 500)")
    p.add_argument("--seed", type=int, default=1, help="seed of the start stagger (default 1)")
    p.add_argument("--server-log", type=Path, help="write the started server's output (its log) to this file")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server's ready line")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        p.error(f"--streams must be comma-separated integers, got {args.streams!r}")
    if not args.levels or min(args.levels) < 1:
        p.error("--streams needs at least one level >= 1")
    if args.server_pid and not args.url:
        p.error("--server-pid goes with --url")
    return args


async def bench(args, server: ServerProcess | None) -> dict:
    from pipeline.segmenter import WINDOW_S
    from server.config import load_settings

    settings = load_settings(environ=dict(os.environ, DAUYS_ASR__DOWNLOAD="false"))
    pad_ms = args.speech_pad_ms if args.speech_pad_ms is not None else settings.vad.speech_pad_ms
    pad_s = round(pad_ms / 1000 / WINDOW_S) * WINDOW_S  # the segmenter pads in whole VAD windows
    kinds = ReplyKinds(settings.session.handoff)
    say("synthesising the questions with espeak-ng")
    questions = load_questions(args.audio_dir, args.espeak_wpm, not args.no_real_clips)
    if server is not None:
        url = server.wait_ready(args.start_timeout)
        pid = server.pid
        if settings.tts.prefill and settings.tts.cache_mb > 0:
            server.wait_settled()
    else:
        url, pid = args.url, args.server_pid
    info = await ready_info(url)
    warm = next(q for q in questions if q.lang == "ru")
    say(f"warm-up call ({warm.name}, untimed)")
    await run_call(-1, warm, url, args)
    rng = random.Random(args.seed)
    levels = [await run_level(n, url, questions, args, rng, server, pid, pad_s, kinds) for n in args.levels]
    models = next((p["models"] for lv in levels for p in lv["per_call"] if p.get("models")), {}) or {}
    tts = sorted({(p.get("models") or {}).get("tts") or "-" for lv in levels for p in lv["per_call"] if p.get("models")})
    return {
        "machine": machine(),
        "server": {"url": url, "started_by_bench": server is not None, "asr": info.get("asr", {}), "languages": info.get("languages"),
                   "models": models, "tts": tts},
        "config": {
            "questions": [{"name": q.name, "language": q.lang, "expected_entry": q.expected, "text": q.text, "seconds": round(q.seconds, 2),
                           "speech_end_s": round(q.speech_end_s, 2)} for q in questions],
            "n_tts_questions": sum(1 for q in questions if q.expected is not None),
            "espeak_wpm": args.espeak_wpm, "silence_s": args.silence, "reply_timeout_s": args.reply_timeout, "frame_ms": round(FRAME_S * 1000),
            "stagger_ms": args.stagger_ms, "seed": args.seed, "speech_pad_ms": pad_ms, "speech_pad_effective_ms": round(pad_s * 1000, 1),
            "vad_min_silence_ms": settings.vad.min_silence_ms, "speech_end": args.speech_end, "session_per": "question", "language": "per question (kk or ru)",
            "output_pacing": "realtime (default)",
        },
        "target": {"callers": 1, "cpus": 2, "median_ms": TARGET_MEDIAN_MS, "p95_ms": TARGET_P95_MS},
        "levels": levels,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run_with_server(args, bench)
    if isinstance(report, int):
        return report
    emit(report, args.json, print_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
