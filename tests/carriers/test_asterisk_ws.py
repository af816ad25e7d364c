"""Asterisk chan_websocket (server/asterisk_ws.py) without a socket: the documented events in both
control-message formats (plain text and JSON), the commands sent back, framing, A-law at the edge,
and hostile messages that never raise."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from models.audio import Encoding, alaw_encode
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, AudioFormat, Dtmf, Start
from pipeline.replies import AudioFrame
from server.asterisk_ws import AsteriskWebSocketCodec
from server.codecs import Audio, CallId, CallStart, Hangup
from tests.carriers.test_codecs import EVENTS, FUZZ, JSON, valid

PLAIN_START = "MEDIA_START connection_id:e226e283 channel:WebSocket/connection1/0x5140001a0040 channel_id:1761245643.2 format:ulaw optimal_frame_size:160 ptime:20"


def json_start(fmt="ulaw", size=160, **variables) -> str:
    return json.dumps({
        "event": "MEDIA_START", "connection_id": "media_connection1", "channel": "WebSocket/media_connection1/0x5140001a0040",
        "channel_id": "1761245643.2", "format": fmt, "optimal_frame_size": size, "ptime": 20,
        "channel_variables": {"MEDIA_WEBSOCKET_CONNECTION_ID": "media_connection1", **variables},
    })


def test_plain_text_events_and_commands():
    codec = AsteriskWebSocketCodec("kk", caller_channel="1761245643.1")
    mulaw = AudioFormat(Encoding.MULAW, 8000, 1)
    assert codec.decode(PLAIN_START) == [CallId("1761245643.2"), CallStart(Start(mulaw, mulaw, "kk", keypad=True), language_fallback=True)]
    assert not codec.json and codec.caller_channel == "1761245643.1"
    assert codec.decode(b"\xff" * 160) == [Audio(b"\xff" * 160)]
    assert codec.decode("DTMF_END digit:0 channel_id:1761245643.2") == [Dtmf("0")]
    for event in ("MEDIA_XOFF", "MEDIA_XON", "STATUS queue_length:43 xon_level:800", "MEDIA_BUFFERING_COMPLETED x", "MEDIA_MARK_PROCESSED y"):
        assert codec.decode(event) == []
    # out: 20 ms frames, the tail padded with mu-law silence, FLUSH_MEDIA on barge-in
    out = codec.encode(AudioFrame("r1", b"\x01" * 400))
    assert out == [b"\x01" * 160, b"\x01" * 160]
    assert codec.encode(AudioEnd("r1", False)) == [b"\x01" * 80 + b"\xff" * 80]
    codec.encode(AudioFrame("r2", b"\x02" * 100))
    assert codec.encode(AudioEnd("r2", True)) == ["FLUSH_MEDIA"] and codec.flush() == ["REPORT_QUEUE_DRAINED"]
    assert codec.awaiting_playback
    assert codec.decode("QUEUE_DRAINED") == [] and not codec.awaiting_playback
    assert codec.hangup() == "HANGUP"
    assert all(codec.encode(ev) == [] for ev in EVENTS if not isinstance(ev, AudioEnd))
    assert codec.eof() == [Hangup()]


def test_json_events_answer_with_json_commands_and_carry_the_caller_variable():
    codec = AsteriskWebSocketCodec()
    (call, start) = codec.decode(json_start("slin16", 640, DAUYS_CALLER="1761245643.1"))
    pcm16 = AudioFormat(Encoding.PCM_S16LE, 16000, 1)
    assert call == CallId("1761245643.2") and start.start.audio == pcm16 and start.start.output == pcm16
    assert codec.json and codec.caller_channel == "1761245643.1"
    assert codec.decode(json.dumps({"event": "DTMF_END", "channel_id": "1761245643.2", "digit": "5"})) == [Dtmf("5")]
    assert codec.encode(AudioFrame("r1", b"\x00" * 640)) == [b"\x00" * 640]
    assert [json.loads(m) for m in codec.encode(AudioEnd("r1", True))] == [{"command": "FLUSH_MEDIA"}]
    assert json.loads(codec.hangup()) == {"command": "HANGUP"}
    codec.encode(AudioFrame("r2", b"\x00" * 10))
    tail, drained = codec.flush()
    assert tail == b"\x00" * 640 and json.loads(drained) == {"command": "REPORT_QUEUE_DRAINED"}
    assert codec.decode(json.dumps({"event": "QUEUE_DRAINED", "channel_id": "x"})) == [] and not codec.awaiting_playback


def test_the_url_parameter_wins_over_the_channel_variable_and_bad_ids_are_dropped():
    codec = AsteriskWebSocketCodec(caller_channel="1761245643.1")
    codec.decode(json_start(DAUYS_CALLER="999.9"))
    assert codec.caller_channel == "1761245643.1"
    assert AsteriskWebSocketCodec(caller_channel="a b/../c").caller_channel is None
    codec = AsteriskWebSocketCodec()
    codec.decode(json_start(DAUYS_CALLER={"not": "a string"}))
    assert codec.caller_channel is None


def test_alaw_is_transcoded_at_the_edge():
    codec = AsteriskWebSocketCodec()
    (_, start) = codec.decode(PLAIN_START.replace("format:ulaw", "format:alaw"))
    assert start.start.audio == AudioFormat(Encoding.PCM_S16LE, 8000, 1)  # the session hears 16-bit PCM
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype("<i2")
    (audio,) = codec.decode(alaw_encode(pcm))
    back = np.frombuffer(audio.data, "<i2").astype(int)
    assert len(back) == 160 and np.abs(back - pcm).max() <= 256
    (frame,) = codec.encode(AudioFrame("r1", pcm.tobytes()))  # 320 bytes of PCM -> one 160-byte A-law frame
    assert frame == alaw_encode(pcm)
    codec.encode(AudioFrame("r2", pcm[:10].tobytes()))
    (tail, _) = codec.flush()
    assert tail[10:] == b"\xd5" * 150  # A-law silence


def test_another_ptime_turns_on_media_buffering_once():
    codec = AsteriskWebSocketCodec()
    codec.decode(PLAIN_START.replace("optimal_frame_size:160", "optimal_frame_size:240"))
    assert codec.encode(AudioFrame("r1", b"\x01" * 320)) == ["START_MEDIA_BUFFERING", b"\x01" * 160, b"\x01" * 160]
    assert codec.encode(AudioFrame("r1", b"\x01" * 160)) == [b"\x01" * 160]


def test_protocol_errors():
    cases = {
        b"\x00" * 10: "invalid_message",  # media before MEDIA_START
        "{": "invalid_json", "[1]": "unknown_type", '{"event": 5}': "invalid_message", "NOPE x:y": "unknown_type",
        "MEDIA_START format:g729 optimal_frame_size:20": "unsupported_encoding", "DTMF_END": "invalid_message",
        "ERROR channel_id:1 error_text:FLUSH_MEDIA not supported in passthrough mode": "invalid_message",
    }
    for message, code in cases.items():
        (err,) = AsteriskWebSocketCodec().decode(message)
        assert isinstance(err, ProtocolError) and err.code == code, (message, err)
    codec = AsteriskWebSocketCodec()
    codec.decode(PLAIN_START)
    (err,) = codec.decode(PLAIN_START)
    assert err.code == "already_started"
    assert AsteriskWebSocketCodec().hangup() is None and AsteriskWebSocketCodec().flush() == []  # never started: nothing to say


AST_EVENTS = st.sampled_from(["MEDIA_START", "DTMF_END", "QUEUE_DRAINED", "MEDIA_XOFF", "STATUS", "ERROR", "OTHER", ""])
AST_FIELDS = st.dictionaries(st.sampled_from(["format", "optimal_frame_size", "channel_id", "connection_id", "digit", "channel_variables"]),
                             st.sampled_from(["ulaw", "alaw", "slin16", "slin192", "160", "²", "0", "-1", "5", "", "a b"]) | JSON, max_size=5)


@st.composite
def asterisk_message(draw):
    event, fields = draw(AST_EVENTS), draw(AST_FIELDS)
    if draw(st.booleans()):
        return json.dumps({"event": event, **fields})
    return " ".join([event] + [f"{k}:{v}" for k, v in fields.items()])


@FUZZ
@given(st.lists(asterisk_message() | st.text(max_size=60) | st.binary(max_size=400), max_size=12),
       st.lists(st.sampled_from(EVENTS + [AudioFrame("r1", b"\x00" * 333), AudioEnd("r9", True), AudioEnd("r9", False)]), max_size=10))
def test_asterisk_ws_decode_never_raises_and_encode_gives_frames_or_commands(messages, items):
    codec = AsteriskWebSocketCodec()
    for message in messages:
        valid(codec.decode(message))
    valid(codec.eof())
    for item in items:
        for out in codec.encode(item):
            assert (isinstance(out, bytes) and len(out) == codec.frame_bytes) or out in (codec.command("FLUSH_MEDIA"), codec.command("START_MEDIA_BUFFERING"))
