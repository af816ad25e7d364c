"""The call runner (server/transport.py) on an in-memory link: the same lifecycle, metrics and
DTMF handling for every carrier, with the real session (no TTS: replies are text only)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import pytest

from pipeline import metrics
from server.codecs import KIND_AUDIO, KIND_DTMF, KIND_HANGUP, KIND_UUID, AudioSocketCodec, NativeCodec, TwilioCodec, frame
from server.transport import CallRegistry, CallRunner


class MemoryLink:
    """A connection in memory: what the peer sends is queued up front (None = the peer closes)."""

    def __init__(self, incoming) -> None:
        self.incoming: asyncio.Queue = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list = []
        self.closed: tuple | None = None

    async def receive(self):
        return await self.incoming.get()

    async def send(self, message) -> None:
        assert self.closed is None, "sent after close"
        self.sent.append(message)

    async def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)
        self.incoming.put_nowait(None)

    async def cut_off(self, last_words) -> None:
        await self.close(1008, "slow consumer")

    async def fault(self, last_words) -> None:
        await self.close(1011, "internal error")

    def finish(self) -> None:
        pass


def count(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def quiet(services):
    return dataclasses.replace(services, tts=None)


async def run(link, codec, services):
    registry = CallRegistry()
    runner = CallRunner(link, codec, services, services.settings, registry)
    async with asyncio.timeout(60):
        await runner.run()
    assert not registry  # unregistered at the end, whatever the end
    return runner


async def test_audiosocket_caller_hangup_counts_once_and_sends_no_hangup(quiet):
    call = uuid.uuid4()
    wire = frame(KIND_UUID, call.bytes) + frame(KIND_AUDIO, b"\x00" * 320) * 10 + frame(0x05, b"?") + frame(KIND_DTMF, b"5") + frame(KIND_HANGUP)
    before = (count("dauys_errors_total", code="invalid_message"), count("dauys_sessions_total", transport="audiosocket"))
    link = MemoryLink([wire[:100], wire[100:], None])
    runner = await run(link, AudioSocketCodec(), quiet)
    assert runner.session.carrier_call_id == str(call) and runner.peer_gone
    assert link.sent == []  # the caller hung up: no audio (no TTS), no hangup frame
    assert count("dauys_errors_total", code="invalid_message") == before[0] + 1
    assert count("dauys_sessions_total", transport="audiosocket") == before[1] + 1


async def test_audiosocket_dtmf_0_hands_off_and_the_runner_hangs_up(quiet):
    before = count("dauys_handoffs_total", reason="user_request")
    link = MemoryLink([frame(KIND_UUID, uuid.uuid4().bytes) + frame(KIND_AUDIO, b"\x00" * 320) + frame(KIND_DTMF, b"0")])
    await run(link, AudioSocketCodec(), quiet)
    assert link.sent == [frame(KIND_HANGUP)] and link.closed is not None
    assert count("dauys_handoffs_total", reason="user_request") == before + 1


async def test_twilio_errors_are_counted_and_stop_closes_1000(quiet):
    start = {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", "customParameters": {"language": "xx"}}}
    before = count("dauys_errors_total", code="invalid_json")
    link = MemoryLink([json.dumps({"event": "connected"}), json.dumps(start), "{not json", json.dumps({"event": "stop"})])
    runner = await run(link, TwilioCodec(), quiet)
    assert runner.session.started.language == "auto"  # an unconfigured language falls back
    assert runner.session.carrier_call_id == "CA1"
    assert link.closed == (1000, "session ended") and link.sent == []  # Twilio has no error message
    assert count("dauys_errors_total", code="invalid_json") == before + 1


async def test_native_errors_are_sent_and_an_oversize_frame_closes_1009(quiet):
    max_frame = quiet.settings.server.max_frame_bytes
    link = MemoryLink([json.dumps({"type": "text", "text": "x"}), json.dumps({"type": "dtmf", "digit": "1"}), b"\x00" * (max_frame + 1)])
    await run(link, NativeCodec(), quiet)
    codes = [json.loads(m)["code"] for m in link.sent]
    assert codes == ["text_before_start", "dtmf_before_start", "frame_too_large"]
    assert link.closed == (1009, "frame too large")
