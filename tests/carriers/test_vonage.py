"""The Vonage Voice API WebSocket (server/vonage.py) without a socket: the documented events, L16 framing,
notify/clear, the secret header, and hostile messages that never raise."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from models.audio import Encoding
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, AudioFormat, Dtmf, Start
from pipeline.replies import AudioFrame
from server.codecs import MARK_PREFIX, Audio, CallId, CallStart, Hangup, Refuse
from server.vonage import VonageCodec
from tests.carriers.test_codecs import EVENTS, FUZZ, JSON, valid

CALL = "63f61863-4a51-4f6b-86e1-46edebcf9356"


def connected(content_type="audio/l16;rate=16000", **headers) -> str:
    return json.dumps({"event": "websocket:connected", "content-type": content_type, "call_uuid": CALL, **headers})


def test_round_trip_of_the_documented_messages():
    codec = VonageCodec()
    pcm16 = AudioFormat(Encoding.PCM_S16LE, 16000, 1)
    assert codec.decode(connected(language="KK")) == [CallId(CALL), CallStart(Start(pcm16, pcm16, "kk", keypad=True), language_fallback=True)]
    assert codec.decode(b"\x01\x00" * 320) == [Audio(b"\x01\x00" * 320)]
    assert codec.decode(json.dumps({"event": "websocket:dtmf", "digit": "0", "duration": 260})) == [Dtmf("0")]
    assert codec.encode(AudioFrame("r1", b"\x02" * 1000)) == [b"\x02" * 640]
    tail, notify = codec.encode(AudioEnd("r1", False))
    assert tail == b"\x02" * 360 + b"\x00" * 280
    assert json.loads(notify) == {"action": "notify", "payload": {"mark": MARK_PREFIX + "r1"}} and codec.awaiting_playback
    assert codec.decode(json.dumps({"event": "websocket:notify", "payload": {"mark": MARK_PREFIX + "r1"}})) == []
    assert codec.heard == [MARK_PREFIX + "r1"] and not codec.awaiting_playback
    codec.encode(AudioEnd("r2", False))
    assert [json.loads(m) for m in codec.encode(AudioEnd("r3", True))] == [{"action": "clear"}]
    assert codec.not_heard == [MARK_PREFIX + "r2"]
    assert codec.decode(json.dumps({"event": "websocket:cleared"})) == []
    assert all(codec.encode(ev) == [] for ev in EVENTS if not isinstance(ev, AudioEnd))
    assert codec.eof() == [Hangup()] and codec.decode(b"\x00\x00") == []


def test_8k_frames_the_secret_header_and_unsupported_content_types():
    codec = VonageCodec("ru")
    (_, start) = codec.decode(connected("audio/l16;rate=8000"))
    assert start.start.audio.sample_rate == 8000 and start.start.language == "ru"
    assert codec.encode(AudioFrame("r1", b"\x01" * 320)) == [b"\x01" * 320]
    assert isinstance(VonageCodec(secret="s3").decode(connected())[-1], Refuse)
    assert isinstance(VonageCodec(secret="s3").decode(connected(secret="s3"))[-1], CallStart)
    for ct in ("audio/l16;rate=44100", "audio/pcmu", None):
        (_, refuse) = VonageCodec().decode(connected(ct))
        assert isinstance(refuse, Refuse) and refuse.code == 1003


def test_protocol_errors():
    for message, code in {b"\x00": "invalid_message", "{": "invalid_json", "3": "invalid_json", '{"event": "x"}': "unknown_type",
                          '{"event": "websocket:dtmf"}': "invalid_message"}.items():
        (err,) = VonageCodec().decode(message)
        assert isinstance(err, ProtocolError) and err.code == code, (message, err)
    codec = VonageCodec()
    codec.decode(connected())
    (err,) = codec.decode(connected())
    assert err.code == "already_started"


VG_EVENT = st.fixed_dictionaries({"event": st.sampled_from(["websocket:connected", "websocket:dtmf", "websocket:notify", "websocket:cleared", "x"])},
                                 optional={"content-type": st.sampled_from(["audio/l16;rate=16000", "audio/l16;rate=8000", "audio/L16 ; rate=8000"]) | JSON,
                                           "digit": JSON, "payload": JSON, "call_uuid": JSON, "language": JSON, "secret": JSON})


@FUZZ
@given(st.lists(VG_EVENT.map(json.dumps) | st.text(max_size=40) | st.binary(max_size=700), max_size=10),
       st.lists(st.sampled_from(EVENTS + [AudioFrame("r1", b"\x00" * 333), AudioEnd("r9", True), AudioEnd("r8", False)]), max_size=10))
def test_vonage_decode_never_raises_and_encode_gives_frames_or_actions(messages, items):
    codec = VonageCodec()
    for message in messages:
        valid(codec.decode(message))
    valid(codec.eof())
    for item in items:
        for out in codec.encode(item):
            assert (isinstance(out, bytes) and len(out) == codec.frame_bytes) or json.loads(out)["action"] in ("clear", "notify")
