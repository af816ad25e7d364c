#!/usr/bin/env python3
"""Soak: real-time callers for an hour; per window, latency, anything lost, memory, descriptors, loop lag.

    .venv/bin/python scripts/bench_soak.py                       # 4 callers, 60 minutes, 10-minute windows
    .venv/bin/python scripts/bench_soak.py --minutes 2 --json    # what CI runs (tests/test_soak.py): 1-minute windows
    .venv/bin/python scripts/bench_soak.py --tts-voice kk=/path/kk_KZ-issai-high.onnx   # with Piper workers

What it does
------------
* Starts ``dauys serve`` (``scripts/benchlib``) with ``server.max_sessions`` = ``--callers`` + 1, or
  uses ``--url`` (then ``--server-pid`` for memory and descriptors).
* ``--callers`` callers phone in again and again until ``--minutes`` are over. Each call is one
  WebSocket session (pcm_s16le 16 kHz both ways, real-time output pacing, ``keypad`` on, the
  language of its first question) whose line streams 20 ms frames at real-time pace from ``ready``
  on: silence, the questions, silence. A call waits for the spoken disclosure, then makes 2 to 4
  turns, each drawn (seeded, ``--seed``) from:
    - ``voice``: a question (the espeak-ng knowledge-base questions of ``bench_latency.py``, kk and
      ru, and the shared human Kazakh clips), then silence until the reply has been spoken;
    - ``barge``: a question, and 0.4 s into the reply's audio the next question, over it (barge-in);
    - ``typed``: a typed question (``{"type": "text"}``);
  and ends with ``end`` (most calls), DTMF ``0`` or a typed "оператор" (handoffs: the server ends
  the call).
* Every ``--probe-every`` s, while all callers are in a call, a filler call takes the last slot
  and a newcomer connects: it must be refused with close code 1013, and no caller ever is (the
  spare slot is there because a caller who has just hung up may hold its slot a moment longer).
* Every 5 s: the server's and its child processes' (Piper workers) resident memory and open file
  descriptors (psutil), and the server's ``dauys_event_loop_lag_max_seconds`` (its loop-lag
  monitor's largest lag over the last 10 s) from ``/metrics``.

Figures per window (``--window-min``: 10 minutes, 1 in runs under 20 minutes)
-----------------------------------------------------------------------------
* voice-to-voice p50/p95: from the end of the question's speech (its own audio: the last 10 ms
  within 26 dB of its loudest, mapped to when that frame had been sent) to the first binary frame
  of the reply to its final (the barge-in questions and the ones after a hold notice included);
* finals lost: a question sent and neither a final transcript, nor ``speech_discarded``, nor an
  ``asr_failed`` error for it within ``--reply-timeout`` s (a rejected question is reported as
  discarded, not lost: the server decided about it);
* replies lost: a final (or a typed question) with no ``reply`` and its ``audio_end`` within
  ``--reply-timeout`` s, a DTMF 0 or "оператор" with no ``handoff``, a call without ``session_end``
  (a question put while the server was handing the call off -- the rejected speech of a caller
  who is not understood ends in a handoff that can still be playing -- is not answered, by design,
  and is not counted);
* RSS and open descriptors of the server and of its children (sampled at the window's end),
  the largest event-loop lag seen in the window.

Targets: 0 lost finals and replies, RSS growth after the first window < 5 % (last window's end
against the first's), voice-to-voice p95 drift < 10 % (last window against the first), loop lag
< 50 ms. A figure measured on a machine shared with other jobs is skewed by their load; the
memory, descriptor and loss figures are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib and bench_latency, beside this script
from bench_latency import QUESTIONS, load_questions  # noqa: E402
from benchlib import (  # noqa: E402
    DEFAULT_AUDIO,
    BenchError,
    ServerProcess,
    emit,
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

RATE = 16000
FRAME_S = 0.02
FRAME_BYTES = int(RATE * FRAME_S) * 2
OPERATOR = {"kk": "оператор", "ru": "оператор"}
TARGETS = {"lost_finals": 0, "lost_replies": 0, "rss_growth_pct": 5.0, "p95_drift_pct": 10.0, "loop_lag_ms": 50.0}


@dataclass
class Turn:
    t: float
    """When it began (monotonic)."""
    kind: str
    v2v: float | None = None
    lost_final: bool = False
    lost_reply: bool = False
    discarded: bool = False
    hold: bool = False
    barged: bool = False
    detail: str = ""


@dataclass
class Line:
    """One call: a real-time audio line (silence unless speech is queued) and what the server sent."""

    ws: object
    events: list = field(default_factory=list)
    first_audio: dict = field(default_factory=dict)
    audio_end: dict = field(default_factory=dict)
    queue: list = field(default_factory=list)
    """(frames, speech_end_frame, marker dict) to send, in order."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    current: str | None = None
    closed: bool = False

    async def sender(self) -> None:
        t0 = time.monotonic()
        i = 0
        silence = b"\0" * FRAME_BYTES
        while not self.closed:
            delay = t0 + (i + 1) * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = silence
            if self.queue:
                frames, end_at, mark = self.queue[0]
                k = mark.setdefault("sent", 0)
                frame = frames[k]
                mark["sent"] = k + 1
                if k + 1 == end_at:
                    mark["speech_end_at"] = time.monotonic()
                if k + 1 == len(frames):
                    self.queue.pop(0)
                    mark["done"] = True
            try:
                await self.ws.send(frame)
            except Exception:
                return
            i += 1

    async def receiver(self) -> None:
        try:
            async for msg in self.ws:
                now = time.monotonic()
                if isinstance(msg, bytes):
                    if self.current is not None:
                        self.first_audio.setdefault(self.current, now)
                        self.changed.set()
                    continue
                ev = json.loads(msg)
                ev["_at"] = now
                self.events.append(ev)
                if ev["type"] == "audio_start":
                    self.current = ev["reply_id"]
                elif ev["type"] == "audio_end":
                    self.audio_end[ev["reply_id"]] = ev
                    self.current = None
                self.changed.set()
        except Exception:
            pass
        finally:
            self.closed = True
            self.changed.set()

    async def wait(self, pred, timeout: float, start: int = 0):
        """The first event from index ``start`` on that satisfies ``pred``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[start:]:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def played(self, reply_id: str, timeout: float) -> bool:
        """The reply's audio_end has come."""
        return await self.wait(lambda e: e["type"] == "audio_end" and e["reply_id"] == reply_id, timeout) is not None

    def speak(self, q) -> dict:
        pcm = (np.clip(q.samples, -1, 1) * 32767).astype("<i2").tobytes()
        pcm += b"\0" * (-len(pcm) % FRAME_BYTES)
        frames = [pcm[o : o + FRAME_BYTES] for o in range(0, len(pcm), FRAME_BYTES)]
        mark: dict = {}
        self.queue.append((frames, max(1, math.ceil(q.speech_end_s / FRAME_S)), mark))
        return mark


def over(line: Line) -> bool:
    """The server ended the call (a handoff, a goodbye)."""
    return any(e["type"] in ("handoff", "session_end") for e in line.events)


class Soak:
    def __init__(self, args, url: str, pid: int | None, questions, typed) -> None:
        self.args, self.url, self.pid = args, url, pid
        self.questions, self.typed = questions, typed
        self.turns: list[Turn] = []
        self.samples: list[dict] = []
        self.calls = {"made": 0, "ended": 0, "handoffs": 0, "refused": 0, "refused_while_probing": 0, "no_session_end": 0}
        self.probing_until = 0.0
        """A caller refused before this (monotonic) time met the prober's filler in the last slot (a race the probe makes)."""
        self.probes = {"refused_1013": 0, "admitted": 0, "other": 0}
        self.in_call: list[bool] = [False] * args.callers
        self.gate = asyncio.Lock()
        self.t0 = time.monotonic()
        self.end = self.t0 + args.minutes * 60

    # ------------------------------------------------------------------ one caller
    async def caller(self, k: int) -> None:
        rng = random.Random(self.args.seed * 1000 + k)
        await asyncio.sleep(rng.uniform(0, 2.0))
        while time.monotonic() < self.end:
            try:
                await self.call(k, rng)
            except Exception as e:  # refused, or the connection failed: counted, and the caller calls again
                say(f"caller {k}: {type(e).__name__}: {str(e)[:120]}")
                self.calls["refused_while_probing" if time.monotonic() < self.probing_until else "refused"] += 1
                await asyncio.sleep(1.0)

    async def call(self, k: int, rng: random.Random) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        first = rng.choice(self.questions)
        lang = first.lang
        async with self.gate:
            ws = await connect(self.url, max_size=None, open_timeout=30)
            await ws.send(json.dumps({"type": "start", "language": lang, "keypad": True,
                                      "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 1},
                                      "output": {"encoding": "pcm_s16le", "sample_rate": RATE}}))
            try:
                msg = await asyncio.wait_for(ws.recv(), 30)
            except ConnectionClosed as e:
                raise BenchError(f"refused: close {e.rcvd.code if e.rcvd else '?'}") from None
            if json.loads(msg).get("type") != "ready":
                await ws.close()
                raise BenchError(f"no ready: {msg[:80]}")
            self.in_call[k] = True
        self.calls["made"] += 1
        line = Line(ws)
        tasks = [asyncio.ensure_future(line.receiver()), asyncio.ensure_future(line.sender())]
        try:
            # the disclosure plays first (not interruptible): listen to it
            await line.wait(lambda e: e["type"] == "audio_end" and e["reply_id"] == "disclosure", 30)
            await asyncio.sleep(0.5)
            handed_off = False
            for n in range(rng.randint(2, 4)):
                if over(line):  # handed off by the dialogue (a misunderstood turn too many, a request for a person)
                    handed_off = True
                    break
                if time.monotonic() >= self.end or line.closed:
                    break
                q = first if n == 0 else rng.choice([x for x in self.questions if x.lang == lang] or self.questions)
                kind = rng.choices(["voice", "barge", "typed"], [5, 2, 2])[0]
                if kind == "typed":
                    await self.typed_turn(line, lang, rng)
                else:
                    handed_off = await self.voice_turn(line, q, kind == "barge", lang)
                if handed_off:
                    break
            if not handed_off and not line.closed:
                ending = rng.choices(["end", "dtmf", "operator"], [6, 2, 2])[0]
                await self.finish(line, ending, lang)
            else:
                await self.finish(line, "handoff", lang)
        finally:
            self.in_call[k] = False
            line.closed = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()
            self.calls["ended"] += 1

    async def voice_turn(self, line: Line, q, barge: bool, lang: str) -> bool:
        """A spoken question (and with ``barge`` a second one over the reply). True if the call was handed off."""
        turn = Turn(time.monotonic(), "barge" if barge else "voice")
        self.turns.append(turn)
        start = len(line.events)
        mark = line.speak(q)
        handed = await self._answered(line, turn, mark, start, q)
        if handed or not barge or turn.lost_final or turn.lost_reply or turn.discarded:
            return handed
        # over the reply being spoken: the next question
        reply = turn.detail
        await line.wait(lambda e: False, 0.4)
        if line.audio_end.get(reply) is not None:
            return False  # the reply was over before the caller spoke again
        second = Turn(time.monotonic(), "barge_question")
        self.turns.append(second)
        start = len(line.events)
        q2 = next((x for x in self.questions if x.lang == lang and x is not q), q)
        mark = line.speak(q2)
        handed = await self._answered(line, second, mark, start, q2)
        end = await line.wait(lambda e: e["type"] == "audio_end" and e["reply_id"] == reply, 5)
        second.barged = bool(end and end.get("interrupted"))
        return handed

    async def _answered(self, line: Line, turn: Turn, mark: dict, start: int, q) -> bool:
        timeout = self.args.reply_timeout
        deadline = time.monotonic() + q.seconds + timeout
        while not mark.get("done") and time.monotonic() < deadline and not line.closed:
            await asyncio.sleep(0.05)
        heard = await line.wait(
            lambda e: (e["type"] == "transcript" and e.get("final") and e.get("source", "audio") == "audio")
            or e["type"] == "speech_discarded" or (e["type"] == "error" and e.get("code") == "asr_failed"),
            timeout, start,
        )
        if heard is None:
            turn.lost_final = True
            turn.detail = f"no final for {q.name}"
            return False
        if heard["type"] != "transcript":
            turn.discarded = True  # rejected: the server may say "please repeat" (a reply like any other)
            nh = await line.wait(lambda e: e["type"] == "reply" and e["utterance_id"] == heard.get("utterance_id"), 3, start)
            if nh is not None:
                await line.played(nh["reply_id"], timeout)
            return await self._handed_off(line, start)
        uid = heard["utterance_id"]
        reply = await line.wait(lambda e: e["type"] == "reply" and e["utterance_id"] == uid and (e.get("dialogue") or {}).get("act") != "hold", timeout, start)
        if reply is None:
            if over(line):  # said while the call was being handed off: not answered, by design
                turn.detail = "after the handoff"
                return True
            turn.lost_reply = True
            turn.detail = f"no reply to {uid} ({q.name})"
            return False
        turn.hold = any(e["type"] == "reply" and (e.get("dialogue") or {}).get("act") == "hold" for e in line.events[start:])
        rid = reply["reply_id"]
        turn.detail = rid
        await line.wait(lambda e: rid in line.first_audio or (e["type"] == "audio_end" and e["reply_id"] == rid), timeout, start)
        if rid in line.first_audio and "speech_end_at" in mark:
            turn.v2v = line.first_audio[rid] - mark["speech_end_at"]
        if turn.kind == "barge":
            return False  # the caller speaks over it
        if not await line.played(rid, 60):
            turn.lost_reply = True
            turn.detail = f"reply {rid} never ended"
        return await self._handed_off(line, start)

    async def _handed_off(self, line: Line, start: int) -> bool:
        return any(e["type"] == "handoff" for e in line.events[start:]) or await line.wait(lambda e: e["type"] == "handoff", 0.3, start) is not None

    async def typed_turn(self, line: Line, lang: str, rng: random.Random) -> None:
        turn = Turn(time.monotonic(), "typed")
        self.turns.append(turn)
        start = len(line.events)
        text = rng.choice([t for lg, _, t in self.typed if lg == lang] or [t for _, _, t in self.typed])
        await line.ws.send(json.dumps({"type": "text", "text": text}))
        final = await line.wait(lambda e: e["type"] == "transcript" and e.get("source") == "text", 10, start)
        reply = final and await line.wait(
            lambda e: e["type"] == "reply" and e["utterance_id"] == final["utterance_id"] and (e.get("dialogue") or {}).get("act") != "hold",
            self.args.reply_timeout, start,
        )
        if not reply and over(line):  # typed while the call was being handed off: not answered, by design
            turn.detail = "after the handoff"
        elif not reply or not await line.played(reply["reply_id"], 60):
            turn.lost_reply = True
            seen = [e["type"] + (f"({e.get('reply_id') or e.get('utterance_id') or ''})" if e["type"] != "transcript" else "") for e in line.events[start:]]
            turn.detail = f"typed question unanswered ({'final' if final else 'no final'}; then {' '.join(seen[-8:])})"

    async def finish(self, line: Line, how: str, lang: str) -> None:
        start = len(line.events)
        if how == "dtmf":
            await line.ws.send(json.dumps({"type": "dtmf", "digit": "0"}))
        elif how == "operator":
            await line.ws.send(json.dumps({"type": "text", "text": OPERATOR.get(lang, "operator")}))
        elif how == "end":
            await line.ws.send(json.dumps({"type": "end"}))
        if how in ("dtmf", "operator"):
            turn = Turn(time.monotonic(), how)
            self.turns.append(turn)
            if await line.wait(lambda e: e["type"] == "handoff", self.args.reply_timeout, start) is None:
                turn.lost_reply = True
                turn.detail = f"{how}: no handoff"
        if how != "end":
            self.calls["handoffs"] += 1
        if await line.wait(lambda e: e["type"] == "session_end", 60, start if how != "handoff" else 0) is None:
            self.calls["no_session_end"] += 1

    # ------------------------------------------------------------------ beside the calls
    async def probe(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        while time.monotonic() < self.end:
            await asyncio.sleep(self.args.probe_every)
            async with self.gate:  # no caller connects meanwhile
                if not all(self.in_call):
                    continue
                # server.max_sessions is callers + 1 (a caller who has just hung up may hold its slot a
                # moment longer): a filler takes the last slot, then the newcomer must get 1013
                self.probing_until = time.monotonic() + 30.0
                filler = await self._attempt(connect, ConnectionClosed, keep=True)
                if not isinstance(filler, str):
                    self.probes[await self._attempt(connect, ConnectionClosed)] += 1
                    await filler.close()
                self.probing_until = time.monotonic() + 1.0  # a redial already under way when the filler left

    async def _attempt(self, connect, closed, keep: bool = False):
        try:
            ws = await connect(self.url, open_timeout=10)
            await ws.send(json.dumps({"type": "start", "language": "kk"}))
            await asyncio.wait_for(ws.recv(), 10)
        except closed as e:
            return "refused_1013" if e.rcvd and e.rcvd.code == 1013 else "other"
        except (OSError, TimeoutError):
            return "other"
        if keep:
            return ws
        await ws.close()
        return "admitted"

    async def sampler(self) -> None:
        base = http_base(self.url)
        while True:
            self.samples.append(await asyncio.to_thread(sample, self.pid, base))
            if time.monotonic() >= self.end:
                return
            await asyncio.sleep(5.0)

    async def run(self) -> None:
        tasks = [asyncio.ensure_future(self.sampler()), asyncio.ensure_future(self.probe())]
        try:
            await asyncio.gather(*(self.caller(k) for k in range(self.args.callers)))
            self.samples.append(await asyncio.to_thread(sample, self.pid, http_base(self.url)))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def sample(pid: int | None, base: str) -> dict:
    """Memory and descriptors of the server and its children, and its loop lag (last 10 s)."""
    out: dict = {"t": time.monotonic()}
    m = scrape_metrics(base)
    lag = m.get("dauys_event_loop_lag_max_seconds")
    out["loop_lag_max_s"] = lag
    if pid is None:
        return out
    try:
        import psutil

        proc = psutil.Process(pid)
        out["rss_server"] = proc.memory_info().rss
        out["fds_server"] = proc.num_fds()
        kids = proc.children(recursive=True)
        rss, fds = 0, 0
        for c in kids:
            try:
                rss += c.memory_info().rss
                fds += c.num_fds()
            except psutil.Error:
                pass
        out.update(rss_workers=rss, fds_workers=fds, workers=len(kids))
    except ImportError:  # /proc
        out["rss_server"] = _proc_rss(pid)
        out["fds_server"] = len(os.listdir(f"/proc/{pid}/fd"))
    except Exception as e:  # the server is gone
        out["error"] = str(e)
    return out


def _proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------- report
def windows(soak: Soak, window_s: float) -> list[dict]:
    n = max(1, math.ceil((soak.end - soak.t0) / window_s))
    out = []
    for w in range(n):
        lo, hi = soak.t0 + w * window_s, soak.t0 + (w + 1) * window_s
        turns = [t for t in soak.turns if lo <= t.t < hi]
        v2v = sorted(t.v2v for t in turns if t.v2v is not None)
        samples = [s for s in soak.samples if lo <= s["t"] < hi + 2.5]  # the sample at the window's end belongs to it
        last = samples[-1] if samples else {}
        lags = [s["loop_lag_max_s"] for s in samples if s.get("loop_lag_max_s") is not None]
        out.append({
            "window": w + 1, "from_min": round(w * window_s / 60, 1), "turns": len(turns),
            "v2v_p50_ms": ms(median(v2v)), "v2v_p95_ms": ms(p95(v2v)), "v2v_n": len(v2v),
            "lost_finals": sum(t.lost_final for t in turns), "lost_replies": sum(t.lost_reply for t in turns),
            "discarded": sum(t.discarded for t in turns), "holds": sum(t.hold for t in turns), "barge_ins": sum(t.barged for t in turns),
            "rss_server_mb": _mb(last.get("rss_server")), "rss_workers_mb": _mb(last.get("rss_workers")),
            "fds_server": last.get("fds_server"), "fds_workers": last.get("fds_workers"), "workers": last.get("workers"),
            "loop_lag_max_ms": ms(max(lags)) if lags else None,
            "lost": [t.detail for t in turns if t.lost_final or t.lost_reply],
        })
    return out


def _mb(x) -> float | None:
    return None if x is None else round(x / 2**20, 1)


def targets(ws: list[dict]) -> dict:
    first, last = ws[0], ws[-1]
    rss = [(w["rss_server_mb"] or 0) + (w["rss_workers_mb"] or 0) for w in ws]
    growth = round(100 * (rss[-1] - rss[0]) / rss[0], 1) if len(ws) > 1 and rss[0] else None
    drift = (round(100 * (last["v2v_p95_ms"] - first["v2v_p95_ms"]) / first["v2v_p95_ms"], 1)
             if len(ws) > 1 and first["v2v_p95_ms"] and last["v2v_p95_ms"] else None)
    lag = max((w["loop_lag_max_ms"] for w in ws if w["loop_lag_max_ms"] is not None), default=None)
    got = {
        "lost_finals": sum(w["lost_finals"] for w in ws), "lost_replies": sum(w["lost_replies"] for w in ws),
        "rss_growth_pct": growth, "p95_drift_pct": drift, "loop_lag_ms": lag,
    }
    return {k: {"target": TARGETS[k], "measured": v, "met": None if v is None else (v <= TARGETS[k] if k.startswith("lost") else v < TARGETS[k])}
            for k, v in got.items()}


def print_report(report: dict) -> None:
    ws = report["windows"]
    cols = ["turns", "v2v p50", "v2v p95", "lost F", "lost R", "discard", "holds", "barge", "RSS srv", "RSS wrk", "fds srv", "fds wrk", "lag max"]
    rows = [(f"{w['from_min']:g} min", [str(w["turns"]), fmt(w["v2v_p50_ms"], " ms"), fmt(w["v2v_p95_ms"], " ms"), str(w["lost_finals"]),
             str(w["lost_replies"]), str(w["discarded"]), str(w["holds"]), str(w["barge_ins"]), fmt(w["rss_server_mb"], " MB"),
             fmt(w["rss_workers_mb"], " MB"), fmt(w["fds_server"]), fmt(w["fds_workers"]), fmt(w["loop_lag_max_ms"], " ms")]) for w in ws]
    print_table(["window"] + cols, rows)
    c, p = report["calls"], report["probes"]
    print(f"\ncalls: {c['made']} made, {c['handoffs']} handed off, {c['refused']} failed to connect, {c['no_session_end']} without session_end")
    print(f"newcomers while full: {p['refused_1013']} refused with 1013, {p['admitted']} admitted, {p['other']} other")
    print("\ntargets:")
    for k, t in report["targets"].items():
        verdict = "-" if t["met"] is None else ("met" if t["met"] else "MISSED")
        print(f"  {k:15s} measured {fmt(t['measured'])}  target {'=' if k.startswith('lost') else '<'} {t['target']:g}  {verdict}")
    for w in ws:
        for d in w["lost"]:
            print(f"  lost in window {w['window']}: {d}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="how long the callers keep calling (default 60)")
    p.add_argument("--callers", type=int, default=4, help="real-time callers at once (default 4); server.max_sessions is one more")
    p.add_argument("--window-min", type=float, help="report window in minutes (default 10; 1 for runs under 20 minutes)")
    p.add_argument("--probe-every", type=float, default=20.0, help="seconds between newcomer probes while the server is full (default 20)")
    p.add_argument("--reply-timeout", type=float, default=30.0, help="seconds to wait for a final, then for its reply (default 30)")
    p.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO, help=f"real clips and manifest.jsonl (default {DEFAULT_AUDIO})")
    p.add_argument("--no-real-clips", action="store_true", help="only the espeak-ng KB questions")
    p.add_argument("--espeak-wpm", type=int, default=140)
    p.add_argument("--tts-voice", action="append", default=[], metavar="LANG=PATH", help="a Piper voice for the started server (repeatable)")
    p.add_argument("--url", help="soak an already-running server (ws://HOST:PORT/v1/voice); its server.max_sessions should be --callers + 1")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, for memory and descriptors (same machine only)")
    p.add_argument("--model")
    p.add_argument("--compute-type")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-log", type=Path, help="write the started server's output to this file")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.window_min is None:
        args.window_min = 10.0 if args.minutes >= 20 else 1.0
    if args.callers < 1 or args.minutes <= 0:
        p.error("--callers >= 1 and --minutes > 0")
    return args


async def bench(args, server: ServerProcess | None) -> dict:
    say("synthesising the questions with espeak-ng")
    questions = load_questions(args.audio_dir, args.espeak_wpm, not args.no_real_clips)
    if server is not None:
        url, pid = server.wait_ready(args.start_timeout), server.pid
    else:
        url, pid = args.url, args.server_pid
    info = await ready_info(url)
    soak = Soak(args, url, pid, questions, QUESTIONS)
    say(f"{args.callers} callers for {args.minutes:g} min")
    await soak.run()
    ws = windows(soak, args.window_min * 60)
    return {
        "machine": machine(), "server": {"url": url, "asr": info.get("asr", {})},
        "config": {"minutes": args.minutes, "callers": args.callers, "window_min": args.window_min, "seed": args.seed,
                   "questions": [q.name for q in questions], "tts_voices": args.tts_voice},
        "calls": soak.calls, "probes": soak.probes, "windows": ws, "targets": targets(ws),
        "samples": [{k: (round(v - soak.t0, 1) if k == "t" else v) for k, v in s.items()} for s in soak.samples],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    env = {"DAUYS_SERVER__MAX_SESSIONS": str(args.callers + 1)}
    if args.tts_voice:
        env["DAUYS_TTS__VOICES"] = json.dumps(dict(v.split("=", 1) for v in args.tts_voice))
    report = run_with_server(args, bench, env)
    if isinstance(report, int):
        return report
    emit(report, args.json, print_report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
