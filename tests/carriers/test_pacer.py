"""The runner's clock (server/transport.py Pacer) on its own, on a fake monotonic clock (deterministic on a
loaded machine): media on a 20 ms grid, at most `lead` ahead of it, control messages in their place without
a slot of the grid, the grid restarted after idle, a barge-in dropping the queue, nothing for a cut-off peer."""

from __future__ import annotations

import asyncio

import pytest

import server.transport as transport
from server.transport import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    real_sleep = asyncio.sleep

    async def sleep(delay, result=None):
        fake.now += max(0.0, delay)
        await real_sleep(0)
        return result

    monkeypatch.setattr(transport, "time", fake)
    monkeypatch.setattr(transport.asyncio, "sleep", sleep)
    return fake


class Runner:
    """What the Pacer needs of a CallRunner: a link, a codec, the cut-off flag."""

    def __init__(self, clock: FakeClock) -> None:
        self.cut_off = False
        self.sent: list[tuple[float, object]] = []
        runner = self

        class Link:
            async def send(self, message):
                runner.sent.append((round(clock.now - 1000.0, 6), message))

        class Codec:
            def timed(self, message):
                return isinstance(message, bytes)

        self.link, self.codec = Link(), Codec()


async def feed(pacer: Pacer, messages) -> None:
    for m in messages:
        await pacer.put(m)
    await pacer.finish()


async def test_media_on_the_grid_and_control_messages_without_a_slot(clock):
    runner = Runner(clock)
    await feed(Pacer(runner, 0.02), [b"a"] * 3 + ["MARK"] + [b"b"] * 3)
    assert runner.sent == [(0.0, b"a"), (0.02, b"a"), (0.04, b"a"), (0.04, "MARK"), (0.06, b"b"), (0.08, b"b"), (0.1, b"b")]


async def test_lead_sends_that_much_ahead_then_keeps_the_grid(clock):
    runner = Runner(clock)
    await feed(Pacer(runner, 0.02, depth=3, lead=0.06), [b"x"] * 8)
    # slots 0, 20, ..., 140 ms, each sent 60 ms early but never before the start
    assert [t for t, _ in runner.sent] == [0.0, 0.0, 0.0, 0.0, 0.02, 0.04, 0.06, 0.08]


async def test_the_grid_restarts_after_idle(clock):
    runner = Runner(clock)
    pacer = Pacer(runner, 0.02)
    await pacer.put(b"1")
    await pacer.put(b"2")
    for _ in range(5):
        await asyncio.sleep(0)  # both sent (the second 20 ms later)
    clock.now += 1.0  # a second of silence between replies
    await feed(pacer, [b"3", b"4"])
    assert [t for t, _ in runner.sent] == [0.0, 0.02, 1.02, 1.04]


async def test_clear_drops_what_is_queued_and_a_cut_off_peer_gets_nothing(clock):
    runner = Runner(clock)
    pacer = Pacer(runner, 0.02, depth=3)
    for m in (b"1", b"2", b"3"):
        pacer._q.put_nowait(m)  # queued before the pacer ran: a barge-in clears all three
    pacer.clear()
    runner.cut_off = True
    await feed(pacer, [b"4", b"5"])
    assert runner.sent == []
