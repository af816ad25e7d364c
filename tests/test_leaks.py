"""Callers who vanish at any moment leave nothing behind: no asyncio task, no registered session, no
live Session object, and no memory growth.

A real in-process server (``ServerThread``: its own event loop in a thread, real sockets, the
default settings: spoken disclosure, espeak-ng speech, the KB dialogue, whisper-base) serves 50
sessions that disconnect at moments drawn from a seeded random: before ``start``, right after
``ready``, during the spoken disclosure, mid-audio (while the VAD and the recogniser work on a
real clip), while the reply is being synthesised and sent, after the final transcript, and
after ``end`` -- half of them with a clean close handshake, half by dropping the TCP connection.
27 sessions of every kind (7 alone, then 5 at a time) run first, so that the models' and caches'
one-time allocations do not count.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import random
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.audio import Encoding, encode_wire, read_audio
from tests.helpers.audio import clip
from tests.helpers.server import ServerThread

pytestmark = pytest.mark.slow

SESSIONS = 50
SEED = 7
WARMUP_GROUPS = 4
MOMENTS = ["before_start", "after_ready", "disclosure", "mid_audio", "mid_reply", "after_final", "after_end"]
QUESTION = "Депозит пайызы қанша?"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settle_memory() -> int:
    gc.collect()
    try:  # hand freed heap pages back, so RSS shows what is really held
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_bytes()


@pytest.fixture(scope="module")
def leak_server(services):
    srv = ServerThread(services)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def speech():
    pcm = encode_wire(read_audio(clip("kk_kscd_ex1.wav")).samples, Encoding.PCM_S16LE)
    return pcm + b"\x00" * 32000  # + 1 s of silence: the endpoint


async def until(ws, pred, timeout=30.0) -> dict | None:
    """Read events until ``pred(event)`` (binary frames count as {'type': 'binary'})."""
    async with asyncio.timeout(timeout):
        async for msg in ws:
            ev = {"type": "binary", "n": len(msg)} if isinstance(msg, bytes) else json.loads(msg)
            assert ev.get("code") != "internal_error", ev
            if pred(ev):
                return ev
    return None


def frames(n: int):
    """A predicate for ``until``: true at the n-th binary (audio) frame."""
    seen = [0]

    def pred(ev) -> bool:
        seen[0] += ev["type"] == "binary"
        return seen[0] >= n

    return pred


async def one_session(url: str, moment: str, rng: random.Random, speech: bytes) -> str:
    # reply audio paced to real time waits for the disclosure to play out (~6 s): only where it is the point
    pacing = rng.choice(["realtime", "none"]) if moment in ("before_start", "after_ready", "disclosure") else "none"
    start = {"type": "start", "language": rng.choice(["kk", "auto", "ru"]), "output": {"pacing": pacing}}
    t_start = time.monotonic()
    ws = await connect(url, max_size=None, max_queue=None, open_timeout=10, close_timeout=2)
    try:
        if moment == "before_start":
            await asyncio.sleep(rng.uniform(0, 0.05))
        else:
            await ws.send(json.dumps(start))
            await until(ws, lambda e: e["type"] == "ready")
            if moment == "after_ready":
                await asyncio.sleep(rng.uniform(0, 0.1))
            elif moment == "disclosure":
                await until(ws, frames(rng.randint(1, 12)))
            elif moment in ("mid_audio", "after_final"):
                n = len(speech) if moment == "after_final" else rng.randint(len(speech) // 5, len(speech) * 4 // 5) // 640 * 640
                for off in range(0, n, 640):  # 20 ms frames, 4x real time
                    await ws.send(speech[off : off + 640])
                    if off % 6400 == 0:
                        await asyncio.sleep(0.05)
                if moment == "after_final":
                    await until(ws, lambda e: e["type"] == "transcript" and e["final"], timeout=60)
                    await asyncio.sleep(rng.uniform(0, 0.3))  # the reply is on its way
            elif moment == "mid_reply":
                await ws.send(json.dumps({"type": "text", "text": QUESTION}))
                await until(ws, lambda e: e["type"] == "audio_start" and e["reply_id"] != "disclosure", timeout=60)
                await until(ws, frames(rng.randint(0, 8)) if rng.random() < 0.8 else (lambda e: True))
            elif moment == "after_end":
                await ws.send(json.dumps({"type": "text", "text": QUESTION}))
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.sleep(rng.uniform(0, 0.5))
    finally:
        how = rng.choice(["close", "abort"])
        try:
            if how == "abort":
                ws.transport.abort()  # the caller's line drops: no close handshake
                await asyncio.wait_for(ws.wait_closed(), 5)
            else:
                await asyncio.wait_for(ws.close(), 5)
        except (ConnectionClosed, TimeoutError, OSError):
            pass
    return how, moment, round(time.monotonic() - t_start, 1)


async def live_sessions(limit_s: float = 10.0) -> int:
    """Session objects still referenced, after a bounded wait (a decode or synthesis step already
    running in a worker thread when its call ended holds its session until the step is over)."""
    from pipeline.session import Session

    deadline = time.monotonic() + limit_s
    while True:
        gc.collect()
        n = sum(1 for o in gc.get_objects() if isinstance(o, Session))
        if n == 0 or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.2)


async def wait_clean(srv: ServerThread, baseline: set, limit_s: float = 30.0) -> set:
    """Bounded poll: the server's loop is back to its baseline tasks and no session is registered."""
    deadline = time.monotonic() + limit_s
    while True:
        extra = {t for t in srv.tasks() if t not in baseline and not t.done()}
        if (not extra and not srv.server.sessions and srv.server.active == 0) or time.monotonic() > deadline:
            return extra
        await asyncio.sleep(0.1)


async def test_fifty_sessions_disconnecting_at_random_moments_leak_nothing(leak_server, speech):
    srv = leak_server
    url = srv.url()
    rng = random.Random(SEED)
    base_tasks = srv.tasks()  # the server's own permanent tasks, before any call
    # warm-up: every kind of session, alone and five at a time as below (model caches, TTS voices,
    # thread pools and their malloc arenas, soxr plans); RSS settles after a couple of dozen calls
    for moment in MOMENTS:
        await one_session(url, moment, random.Random(moment), speech)
    warm = random.Random(SEED + 1)
    warm_rss = []
    for _ in range(WARMUP_GROUPS):
        await asyncio.gather(*(one_session(url, warm.choice(MOMENTS), random.Random(warm.random()), speech) for _ in range(5)))
        await wait_clean(srv, base_tasks, 10)
        warm_rss.append(settle_memory())
    extra = await wait_clean(srv, base_tasks)
    assert not extra, "tasks left running after the warm-up:\n" + "\n".join(sorted(repr(t.get_coro()) for t in extra))
    # the warmed-up level: RSS after a round of calls wanders by a few MiB (allocator fragmentation),
    # so the baseline is its high-water mark over the last warm-up rounds
    rss0 = max(warm_rss[-2:] + [settle_memory()])

    plan = [MOMENTS[i % len(MOMENTS)] for i in range(SESSIONS)]
    rng.shuffle(plan)
    hows = []
    t0 = time.monotonic()
    for group in range(0, SESSIONS, 5):  # five callers at a time
        hows += await asyncio.gather(*(one_session(url, m, random.Random(rng.random()), speech) for m in plan[group : group + 5]))
    run_s = time.monotonic() - t0

    extra = await wait_clean(srv, base_tasks)
    assert not extra, "tasks left running on the server's loop:\n" + "\n".join(sorted(repr(t.get_coro()) for t in extra))
    assert not srv.server.sessions, f"sessions still registered: {list(srv.server.sessions)}"
    assert srv.server.active == 0 and not srv.server.connections
    assert await live_sessions() == 0, "Session objects are still referenced after their calls ended"
    rss1 = settle_memory()
    growth = (rss1 - rss0) / rss0
    slowest = max(hows, key=lambda h: h[2])
    hows = [h for h, _, _ in hows]
    print(f"\n{SESSIONS} sessions in {run_s:.1f}s ({plan.count('mid_reply')} mid-reply, {plan.count('disclosure')} in the disclosure, "
          f"{hows.count('abort')} dropped without a close handshake; slowest {slowest}); RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB ({100 * growth:+.2f} %)")
    assert growth < 0.05, f"RSS grew {100 * growth:.1f} % over {SESSIONS} sessions ({rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB)"
