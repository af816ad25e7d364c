"""The runner's clock (server/transport.py Pacer) on its own: media on a 20 ms grid, at most `lead` ahead
of real time, control messages in their place without a slot of the grid, a barge-in dropping the queue."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from server.transport import Pacer


class Runner:
    """What the Pacer needs of a CallRunner: a link, a codec, the cut-off flag."""

    def __init__(self) -> None:
        self.cut_off = False
        self.sent: list[tuple[float, object]] = []
        runner = self

        class Link:
            async def send(self, message):
                runner.sent.append((time.monotonic(), message))

        class Codec:
            def timed(self, message):
                return isinstance(message, bytes)

        self.link, self.codec = Link(), Codec()


async def feed(pacer: Pacer, messages) -> None:
    for m in messages:
        await pacer.put(m)
    await pacer.finish()


async def test_media_on_the_grid_and_control_messages_without_a_slot():
    runner = Runner()
    pacer = Pacer(runner, 0.02)
    t0 = time.monotonic()
    await feed(pacer, [b"a"] * 10 + ["MARK"] + [b"b"] * 10)
    times = [t - t0 for t, m in runner.sent if isinstance(m, bytes)]
    assert [m for _, m in runner.sent] == [b"a"] * 10 + ["MARK"] + [b"b"] * 10  # order kept
    gaps = np.diff(times) * 1000
    assert abs(np.median(gaps) - 20) < 2 and gaps.max() < 45, gaps  # the mark took no 20 ms slot
    assert 0.36 <= times[-1] <= 0.6, times[-1]  # 20 frames: 19 periods after the first


async def test_lead_sends_that_much_ahead_then_keeps_the_grid():
    runner = Runner()
    pacer = Pacer(runner, 0.02, depth=3, lead=0.1)
    t0 = time.monotonic()
    await feed(pacer, [b"x"] * 30)
    times = np.array([t - t0 for t, _ in runner.sent])
    assert (times[:6] < 0.03).all(), times[:6]  # the first 100 ms (and the one due now) at once
    grid = np.arange(30) * 0.02 - 0.1  # never earlier than its slot minus the lead
    assert (times >= grid - 0.005).all()
    assert abs(np.median(np.diff(times[8:])) * 1000 - 20) < 2


async def test_clear_drops_what_is_queued_and_a_cut_off_peer_gets_nothing():
    runner = Runner()
    pacer = Pacer(runner, 0.05, depth=3)
    await pacer.put(b"1")
    await pacer.put(b"2")
    await pacer.put(b"3")
    pacer.clear()
    await asyncio.sleep(0.12)
    runner.cut_off = True
    await feed(pacer, [b"4", b"5"])
    assert len(runner.sent) <= 2 and all(m in (b"1", b"2") for _, m in runner.sent)  # at most what was already taken
