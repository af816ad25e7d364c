"""The carrier codecs (server/codecs.py) without a socket: round trips of each carrier's documented
messages, and hostile input that must never raise (protocol faults come back as ProtocolError items)."""

from __future__ import annotations

import base64
import json
import struct
import uuid

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from models.audio import Encoding
from pipeline.errors import ERROR_CODES, ProtocolError
from pipeline.events import (
    AudioEnd,
    AudioFormat,
    AudioStart,
    Dtmf,
    End,
    ErrorEvent,
    Handoff,
    Ready,
    Reply,
    SessionEnd,
    Start,
    Text,
    Transcript,
    parse_server_event,
)
from pipeline.replies import AudioFrame
from server.codecs import (
    FRAME_BYTES,
    KIND_AUDIO,
    KIND_DTMF,
    KIND_ERROR,
    KIND_HANGUP,
    KIND_UUID,
    MARK_PREFIX,
    Audio,
    AudioSocketCodec,
    CallId,
    CallStart,
    Hangup,
    NativeCodec,
    Reconfigure,
    Refuse,
    TwilioCodec,
    frame,
)

INPUTS = (CallStart, Audio, Reconfigure, CallId, Hangup, Refuse, Text, Dtmf, End)
FUZZ = hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid(items) -> list:
    """Every decoded item is an input or a documented protocol error."""
    assert isinstance(items, list)
    for item in items:
        assert isinstance(item, INPUTS + (ProtocolError,)), item
        if isinstance(item, ProtocolError):
            assert item.code in ERROR_CODES, item.code
    return items


EVENTS = [
    Ready("s1", ["kk", "ru"], {"text": "ЖИ", "language": "kk"}),
    Transcript("u1", "сәлем", True, "kk", confidence=0.9),
    Transcript("u2", "сә", False, "kk"),
    Reply("u1", "r1", "Сәлеметсіз бе", "kk"),
    AudioStart("r1", "mulaw", 8000),
    AudioEnd("r1", False),
    Handoff("user_request", "kk", "reason: user_request"),
    ErrorEvent("invalid_json", "no"),
    SessionEnd("client_end"),
]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


# ----------------------------------------------------------------------------------------- native
def test_native_round_trips_every_client_message():
    codec = NativeCodec()
    start = Start(AudioFormat(Encoding.MULAW, 8000, 1), AudioFormat(Encoding.PCM_S16LE, 16000, 1), "kk", "none", keypad=True)
    assert codec.decode(start.to_json()) == [CallStart(start)]
    assert codec.decode(Text("сәлем").to_json()) == [Text("сәлем")]
    assert codec.decode(Dtmf("0").to_json()) == [Dtmf("0")]
    assert codec.decode(End().to_json()) == [End()]
    assert codec.decode(b"\x01\x02") == [Audio(b"\x01\x02")]
    (err,) = codec.decode('{"type": "nope"}')
    assert isinstance(err, ProtocolError) and err.code == "unknown_type"


def test_native_encodes_events_as_json_and_audio_as_binary():
    codec = NativeCodec()
    for ev in EVENTS:
        (msg,) = codec.encode(ev)
        assert parse_server_event(msg) == ev
    assert codec.encode(AudioFrame("r1", b"\x00\x01")) == [b"\x00\x01"]
    assert codec.hangup() is None and codec.flush() == [] and not codec.awaiting_playback


def test_native_frame_limit_counts_utf8_bytes():
    codec = NativeCodec()
    assert not codec.too_large("ж" * 50, 100) and codec.too_large("ж" * 51, 100)
    assert codec.too_large(b"\x00" * 101, 100) and not codec.too_large(b"\x00" * 100, 100)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), JSON.map(json.dumps)))
def test_native_decode_never_raises(message):
    valid(NativeCodec().decode(message))


# ----------------------------------------------------------------------------------------- Twilio
def twilio_start(**params) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
            "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    })


def test_twilio_round_trip_of_the_documented_messages():
    codec = TwilioCodec()
    assert codec.decode(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})) == []
    fmt = AudioFormat(Encoding.MULAW, 8000, 1)
    assert codec.decode(twilio_start(language="KK")) == [CallId("CA1"), CallStart(Start(fmt, fmt, "kk", keypad=True), language_fallback=True)]
    assert codec.stream_sid == "MZ1" and codec.call_id == "CA1"
    payload = bytes(range(160))
    media = {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": base64.b64encode(payload).decode()}}
    assert codec.decode(json.dumps(media)) == [Audio(payload)]
    assert codec.decode(json.dumps({**media, "media": {**media["media"], "track": "outbound"}})) == []  # not the caller
    assert codec.decode(json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "0"}})) == [Dtmf("0")]

    # out: media, then a mark after the reply; the mark coming back means it was heard
    (out,) = codec.encode(AudioFrame("r1", payload))
    out = json.loads(out)
    assert out["event"] == "media" and out["streamSid"] == "MZ1" and base64.b64decode(out["media"]["payload"]) == payload
    (mark,) = codec.encode(AudioEnd("r1", False))
    mark = json.loads(mark)
    assert mark == {"event": "mark", "streamSid": "MZ1", "mark": {"name": MARK_PREFIX + "r1"}}
    assert codec.awaiting_playback
    assert codec.decode(json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": mark["mark"]})) == []
    assert not codec.awaiting_playback and codec.heard == [MARK_PREFIX + "r1"]

    # barge-in: clear; marks not come back count as not heard
    codec.encode(AudioEnd("r2", False))
    (clear,) = codec.encode(AudioEnd("r3", True))
    assert json.loads(clear) == {"event": "clear", "streamSid": "MZ1"}
    assert codec.not_heard == [MARK_PREFIX + "r2"] and not codec.awaiting_playback

    # events without a Twilio message, and the end of the stream
    assert all(codec.encode(ev) == [] for ev in EVENTS if not isinstance(ev, AudioEnd))
    assert codec.decode(json.dumps({"event": "stop", "sequenceNumber": "5", "streamSid": "MZ1", "stop": {"callSid": "CA1"}})) == [Hangup()]


def test_twilio_stream_secret_and_hostile_start_fields():
    assert isinstance(TwilioCodec("s3cret").decode(twilio_start(language="kk"))[-1], Refuse)
    (_, start) = TwilioCodec("s3cret").decode(twilio_start(secret="s3cret"))
    assert isinstance(start, CallStart) and start.start.language == "auto"
    hostile = json.loads(twilio_start())
    hostile["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": "²"}
    hostile["start"]["callSid"] = {"not": "a string"}
    (call_id, start) = TwilioCodec().decode(json.dumps(hostile))
    assert call_id == CallId(None)
    assert start.start.audio == AudioFormat(Encoding.PCM_S16LE, 8000, 1)


def test_twilio_protocol_errors():
    codec = TwilioCodec()
    cases = {b"\x00": "invalid_message", "{": "invalid_json", "[1]": "invalid_json", '{"event": "nope"}': "unknown_type",
             '{"event": "start", "start": 5}': "invalid_message", '{"event": "media", "media": {"payload": "!!"}}': "invalid_message"}
    for message, code in cases.items():
        (err,) = codec.decode(message)
        assert isinstance(err, ProtocolError) and err.code == code, (message, err)
    assert codec.too_large("x" * 201, 100) and not codec.too_large("x" * 200, 100)


TW_EVENT = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "other"])},
    optional={"streamSid": JSON, "start": JSON, "media": JSON, "dtmf": JSON, "mark": JSON, "stop": JSON},
)


@FUZZ
@given(st.lists(st.one_of(TW_EVENT.map(json.dumps), st.text(max_size=50), st.binary(max_size=50)), max_size=10),
       st.lists(st.sampled_from(EVENTS + [AudioFrame("r1", b"\x00" * 40), AudioEnd("r9", True)]), max_size=10))
def test_twilio_decode_never_raises_and_encode_always_gives_json(messages, items):
    codec = TwilioCodec()
    for message in messages:
        valid(codec.decode(message))
    for item in items:
        for out in codec.encode(item):
            assert json.loads(out)["event"] in ("media", "mark", "clear")


# ------------------------------------------------------------------------------------ AudioSocket
def test_audiosocket_round_trip_of_the_frame_kinds():
    codec = AudioSocketCodec("kk")
    call = uuid.uuid4()
    pcm = b"\x01\x00" * 160
    wire = frame(KIND_UUID, call.bytes) + frame(KIND_AUDIO, pcm) + frame(0x12, pcm) + frame(KIND_DTMF, b"1") + frame(0x05, b"??")
    items = valid(codec.decode(wire))
    start = Start(AudioFormat(Encoding.PCM_S16LE, 8000, 1), AudioFormat(Encoding.PCM_S16LE, 8000, 1), "kk", keypad=True)
    assert items[:6] == [CallId(str(call)), CallStart(start), Audio(pcm), Reconfigure(8000, 16000), Audio(pcm), Dtmf("1")]
    assert isinstance(items[6], ProtocolError) and items[6].code == "invalid_message" and len(items) == 7
    assert codec.call_id == str(call)
    assert codec.decode(frame(KIND_HANGUP) + frame(KIND_AUDIO, pcm)) == [Hangup()]
    assert codec.decode(frame(KIND_AUDIO, pcm)) == [] and codec.eof() == []  # nothing after the hangup
    assert AudioSocketCodec().decode(frame(KIND_ERROR, b"\x02")) == [Hangup("02")]
    assert AudioSocketCodec().decode(frame(KIND_UUID, b"\xab\xcd")) == [CallId("abcd")]


def test_audiosocket_end_of_stream_mid_frame_is_a_hangup():
    codec = AudioSocketCodec()
    assert codec.decode(struct.pack(">BH", KIND_AUDIO, 320) + b"\x00" * 100) == []
    assert codec.eof() == [Hangup()]


def test_audiosocket_encodes_exact_320_byte_frames_with_a_padded_tail():
    codec = AudioSocketCodec()
    out = codec.encode(AudioFrame("r1", b"\x01" * 500))
    assert out == [frame(KIND_AUDIO, b"\x01" * FRAME_BYTES)]
    (tail,) = codec.encode(AudioEnd("r1", False))
    assert tail == frame(KIND_AUDIO, b"\x01" * 180 + b"\x00" * 140)
    codec.encode(AudioFrame("r2", b"\x02" * 100))
    assert codec.encode(AudioEnd("r2", True)) == [] and codec.flush() == []  # barge-in: the held-back tail is dropped
    codec.encode(AudioFrame("r3", b"\x03" * 10))
    assert codec.flush() == [frame(KIND_AUDIO, b"\x03" * 10 + b"\x00" * 310)]
    assert all(codec.encode(ev) == [] for ev in EVENTS if not isinstance(ev, AudioEnd))
    assert codec.hangup() == b"\x00\x00\x00"


AS_FRAME = st.tuples(st.sampled_from([0x00, 0x01, 0x03, 0x10, 0x11, 0x18, 0x19, 0x02, 0xFE, 0xFF]), st.binary(max_size=64))


@FUZZ
@given(st.lists(AS_FRAME, max_size=20), st.lists(st.integers(1, 200), min_size=1, max_size=10))
def test_audiosocket_chunking_never_changes_what_is_decoded(frames, cuts):
    wire = b"".join(frame(kind, payload) for kind, payload in frames)
    whole = valid(AudioSocketCodec().decode(wire))
    codec = AudioSocketCodec()
    pieces, off, i = [], 0, 0
    while off < len(wire):
        pieces.append(wire[off : off + cuts[i % len(cuts)]])
        off += cuts[i % len(cuts)]
        i += 1
    split = [item for piece in pieces for item in valid(codec.decode(piece))]
    assert [repr(x) for x in split] == [repr(x) for x in whole]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_audiosocket_decode_never_raises_on_garbage(chunks):
    codec = AudioSocketCodec()
    for chunk in chunks:
        valid(codec.decode(chunk))
    valid(codec.eof())
    (err,) = AudioSocketCodec().decode("text frames do not exist here")
    assert isinstance(err, ProtocolError) and err.code == "invalid_message"


def test_twilio_sends_reply_audio_in_20_ms_pieces_and_the_tail_before_the_mark():
    codec = TwilioCodec()
    codec.decode(twilio_start())
    out = [json.loads(m) for m in codec.encode(AudioFrame("r1", b"\x01" * 400))]
    assert [len(base64.b64decode(m["media"]["payload"])) for m in out] == [160, 160]
    assert all(codec.timed(json.dumps(m)) for m in out)
    tail, mark = (json.loads(m) for m in codec.encode(AudioEnd("r1", False)))
    assert len(base64.b64decode(tail["media"]["payload"])) == 80 and mark["event"] == "mark" and not codec.timed(json.dumps(mark))
    codec.encode(AudioFrame("r2", b"\x02" * 100))
    assert [json.loads(m)["event"] for m in codec.encode(AudioEnd("r2", True))] == ["clear"] and codec.flush() == []


# ------------------------------------------------------------------------------ the newer carriers
# (each has its own file with round trips and a fuzz test of its documented messages; here every codec
# faces the same hostile input: any text, any bytes, any JSON object with any event name)
def _new_codecs():
    from server.asterisk_ws import AsteriskWebSocketCodec
    from server.freeswitch import FreeSwitchCodec
    from server.telnyx import TelnyxCodec
    from server.vonage import VonageCodec

    return [AsteriskWebSocketCodec, FreeSwitchCodec, TelnyxCodec, VonageCodec]


HOSTILE = st.one_of(
    st.text(max_size=120), st.binary(max_size=700), JSON.map(json.dumps),
    st.fixed_dictionaries({"event": st.text(max_size=30) | JSON}, optional={"start": JSON, "media": JSON, "digit": JSON, "format": JSON}).map(json.dumps),
)


@FUZZ
@given(st.integers(0, 3), st.lists(HOSTILE, max_size=12), st.lists(st.sampled_from(EVENTS + [AudioFrame("r1", b"\x00" * 97), AudioEnd("r9", True)]), max_size=6))
def test_every_new_codec_takes_hostile_input_without_raising(which, messages, items):
    codec = _new_codecs()[which]()
    for message in messages:
        valid(codec.decode(message))
    valid(codec.eof())
    for item in items:
        assert all(isinstance(out, (str, bytes)) for out in codec.encode(item))
    assert all(isinstance(out, (str, bytes)) for out in codec.flush())
