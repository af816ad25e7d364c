"""Telnyx Media Streaming (server/telnyx.py) without a socket, the Call Control transfer against a local
stand-in API (server/transfer.py), and DTMF 0 through the runner."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import unquote

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.audio import Encoding, alaw_encode
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, AudioFormat, Dtmf, Handoff, Start
from pipeline.replies import AudioFrame
from server.codecs import MARK_PREFIX, Audio, CallId, CallStart, Hangup, Refuse
from server.telnyx import TelnyxCodec
from server.transfer import TelnyxTransfer, for_carrier
from tests.carriers.test_codecs import EVENTS, FUZZ, JSON, valid
from tests.carriers.test_transfer import StandIn
from tests.helpers.server import make_settings

CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
HANDOFF = Handoff("user_request", "kk", "reason: user_request; caller said: картам")


def start(encoding="PCMU", rate=8000, **params) -> str:
    return json.dumps({"event": "start", "sequence_number": "1", "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC", "start": {
        "user_id": "3E6F995F", "call_control_id": CCID, "call_session_id": "ff55a038", "from": "+77010000000", "to": "+77172000000",
        "client_state": "aGF2ZQ==", "custom_parameters": params, "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1}}})


def media(payload: bytes, track="inbound") -> str:
    return json.dumps({"event": "media", "sequence_number": "4", "stream_id": "32DE", "media": {"track": track, "chunk": "2", "timestamp": "5",
                                                                                              "payload": base64.b64encode(payload).decode()}})


def test_round_trip_of_the_documented_frames():
    codec = TelnyxCodec()
    assert codec.decode(json.dumps({"event": "connected", "version": "1.0.0"})) == []
    mulaw = AudioFormat(Encoding.MULAW, 8000, 1)
    assert codec.decode(start(language="KK")) == [CallId(CCID), CallStart(Start(mulaw, mulaw, "kk", keypad=True), language_fallback=True)]
    assert codec.decode(media(b"\x7f" * 160)) == [Audio(b"\x7f" * 160)]
    assert codec.decode(media(b"\x7f" * 160, "outbound")) == []
    assert codec.decode(json.dumps({"event": "dtmf", "stream_id": "32DE", "payload": {"digit": "0"}})) == [Dtmf("0")]
    assert codec.decode(json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}})) == [Dtmf("#")]
    out = [json.loads(m) for m in codec.encode(AudioFrame("r1", b"\x01" * 200))]
    assert out == [{"event": "media", "media": {"payload": base64.b64encode(b"\x01" * 160).decode()}}]
    tail, mark = (json.loads(m) for m in codec.encode(AudioEnd("r1", False)))
    assert base64.b64decode(tail["media"]["payload"]) == b"\x01" * 40 + b"\xff" * 120
    assert mark == {"event": "mark", "mark": {"name": MARK_PREFIX + "r1"}} and codec.awaiting_playback
    assert codec.decode(json.dumps({"event": "mark", "mark": {"name": MARK_PREFIX + "r1"}})) == [] and codec.heard == [MARK_PREFIX + "r1"]
    codec.encode(AudioEnd("r2", False))
    assert [json.loads(m) for m in codec.encode(AudioEnd("r3", True))] == [{"event": "clear"}]
    assert codec.not_heard == [MARK_PREFIX + "r2"] and not codec.awaiting_playback
    assert all(codec.encode(ev) == [] for ev in EVENTS if not isinstance(ev, AudioEnd))
    assert codec.decode(json.dumps({"event": "stop", "stream_id": "32DE"})) == [Hangup()] and codec.eof() == []


def test_pcma_is_transcoded_at_the_edge_and_other_formats_are_refused():
    codec = TelnyxCodec()
    (_, st_) = codec.decode(start("PCMA"))
    assert st_.start.audio == AudioFormat(Encoding.PCM_S16LE, 8000, 1)
    pcm = (np.sin(np.arange(160) / 4) * 6000).astype("<i2")
    (audio,) = codec.decode(media(alaw_encode(pcm)))
    assert np.abs(np.frombuffer(audio.data, "<i2").astype(int) - pcm).max() <= 256
    (out,) = codec.encode(AudioFrame("r1", pcm.tobytes()))
    assert base64.b64decode(json.loads(out)["media"]["payload"]) == alaw_encode(pcm)
    for enc, rate in (("OPUS", 8000), ("PCMU", 16000), ("L16", 8000)):
        (_, refuse) = TelnyxCodec().decode(start(enc, rate))
        assert isinstance(refuse, Refuse) and refuse.code == 1003


def test_the_streaming_auth_token_is_checked_from_the_header_or_the_connected_frame():
    assert isinstance(TelnyxCodec(stream_token="tok").decode(start())[-1], Refuse)
    assert isinstance(TelnyxCodec(stream_token="tok", header_token="tok").decode(start())[-1], CallStart)
    codec = TelnyxCodec(stream_token="tok")
    codec.decode(json.dumps({"event": "connected", "version": "1.0.0", "x-telnyx-streaming-auth-token": "tok"}))
    assert isinstance(codec.decode(start())[-1], CallStart)
    refused = TelnyxCodec(stream_token="tok", header_token="nope")
    assert isinstance(refused.decode(start())[-1], Refuse) and refused.decode(media(b"\x00")) == [] and refused.eof() == []


def test_protocol_errors():
    cases = {b"\x00": "invalid_message", "{": "invalid_json", "[]": "invalid_json", '{"event": "x"}': "unknown_type",
             '{"event": "start", "start": 1}': "invalid_message", '{"event": "dtmf", "payload": {}}': "invalid_message",
             '{"event": "error", "payload": {"code": 100002}}': "invalid_message"}
    for message, code in cases.items():
        (err,) = TelnyxCodec().decode(message)
        assert isinstance(err, ProtocolError) and err.code == code, (message, err)
    (err,) = TelnyxCodec().decode(media(b"\x00"))
    assert err.code == "invalid_message"  # media before start
    codec = TelnyxCodec()
    codec.decode(start())
    (err,) = codec.decode(json.dumps({"event": "media", "media": {"payload": "!!"}}))
    assert err.code == "invalid_message"


TX_EVENT = st.fixed_dictionaries({"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "error", "x"])},
                                 optional={"start": JSON, "media": JSON, "dtmf": JSON, "payload": JSON, "mark": JSON, "stream_id": JSON})


@FUZZ
@given(st.lists(TX_EVENT.map(json.dumps) | st.sampled_from([start(), start("PCMA"), media(b"\x00" * 160)]) | st.text(max_size=40) | st.binary(max_size=40), max_size=10),
       st.lists(st.sampled_from(EVENTS + [AudioFrame("r1", b"\x00" * 333), AudioEnd("r9", True), AudioEnd("r8", False)]), max_size=10))
def test_telnyx_decode_never_raises_and_encode_gives_json(messages, items):
    codec = TelnyxCodec()
    for message in messages:
        valid(codec.decode(message))
    valid(codec.eof())
    for item in items:
        for out in codec.encode(item):
            assert json.loads(out)["event"] in ("media", "mark", "clear")


# ------------------------------------------------------------------------------------ transfer
@pytest.fixture
def api():
    server = StandIn(body=b'{"data": {"result": "ok"}}')
    yield server
    server.close()


async def test_call_control_transfer_with_the_summary_header(api, monkeypatch):
    monkeypatch.setenv("TELNYX_API_KEY", "KEYabc")
    settings = make_settings(transfer={"telnyx_to": "sip:queue@pbx.example.kz", "telnyx_api_url": api.url})
    codec = TelnyxCodec()
    codec.decode(start())
    assert await TelnyxTransfer(settings)(codec, HANDOFF)
    (req,) = api.requests
    assert req["path"] == "/v2/calls/v3%3AMdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg/actions/transfer"
    assert req["headers"]["Authorization"] == "Bearer KEYabc" and req["headers"]["Content-Type"] == "application/json"
    body = json.loads(req["body"])
    assert body["to"] == "sip:queue@pbx.example.kz" and body["custom_headers"][0]["name"] == "X-Dauys-Summary"
    assert unquote(body["custom_headers"][0]["value"]) == HANDOFF.summary and body["custom_headers"][0]["value"].isascii()
    monkeypatch.delenv("TELNYX_API_KEY")
    assert not await TelnyxTransfer(settings)(codec, HANDOFF) and len(api.requests) == 1


@pytest.fixture
def quiet(services):
    import dataclasses

    return dataclasses.replace(services, tts=None)


async def test_dtmf_0_through_the_runner_transfers_the_call(quiet, api, monkeypatch):
    import dataclasses

    from server.transport import CallRegistry, CallRunner
    from tests.carriers.test_transport import MemoryLink

    monkeypatch.setenv("TELNYX_API_KEY", "KEYabc")
    settings = make_settings(transfer={"telnyx_to": "+77172000000", "telnyx_api_url": api.url})
    link = MemoryLink([json.dumps({"event": "connected", "version": "1.0.0"}), start(language="kk"), media(b"\xff" * 160),
                       json.dumps({"event": "dtmf", "payload": {"digit": "0"}})])
    svc = dataclasses.replace(quiet, settings=settings)
    async with asyncio.timeout(60):
        await CallRunner(link, TelnyxCodec(), svc, settings, CallRegistry(), transfer=for_carrier("telnyx", settings)).run()
    (req,) = api.requests
    assert json.loads(req["body"])["to"] == "+77172000000" and link.closed == (1000, "session ended")
