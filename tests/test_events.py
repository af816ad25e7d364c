"""The native protocol's messages (pipeline/events.py) and error codes (pipeline/errors.py).

Pure unit tests: no models, no sockets.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from models.audio import Encoding
from pipeline.errors import ERROR_CODES, DauysError, ProtocolError
from pipeline.events import (
    AudioEnd,
    AudioFormat,
    AudioStart,
    End,
    ErrorEvent,
    Handoff,
    Ready,
    Reply,
    SessionEnd,
    SpeechDiscarded,
    SpeechStarted,
    Start,
    Text,
    Transcript,
    parse_client_message,
    parse_server_event,
)

KK_TEXT = "Сәлеметсіз бе! Қазақ тілінде сөйлейсіз бе? Өңір, ұлт, үй, ғылым, һ."
# Hypothesis caches data under ./.hypothesis by default; keep the checkout clean.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dauys-hypothesis")

DISCLOSURE_KK = "Сізге жасанды интеллект жауап береді. Операторға қосылу үшін «оператор» деңіз."


# --------------------------------------------------------------------------
# server -> client events
# --------------------------------------------------------------------------
SERVER_EVENTS = {
    "ready": Ready(
        session_id="s-1",
        languages=["kk", "ru", "uz", "tr", "az", "tt", "en"],
        disclosure={"text": DISCLOSURE_KK, "language": "kk"},
    ),
    "speech_started": SpeechStarted(utterance_id="u1", t=1.25),
    "transcript_partial": Transcript(utterance_id="u1", text="Сәлем", final=False, language="kk"),
    "transcript_final": Transcript(
        utterance_id="u1", text=KK_TEXT, final=True, language="kk", confidence=0.83, t_end=3.5,
        t_start=1.25, forced=False, t_endpoint=3.9,
    ),
    "speech_discarded": SpeechDiscarded(utterance_id="u2", reason="no_speech", t_end=7.0),
    "reply": Reply(
        utterance_id="u1", reply_id="r1", text=KK_TEXT, language="kk",
        provenance={"system": "dauys", "models": ["embedded:whisper-base"], "created": "2024-01-01T00:00:00Z"},
    ),
    "audio_start": AudioStart(reply_id="r1", encoding="pcm_s16le", sample_rate=16000, watermark="abc123"),
    "audio_end": AudioEnd(reply_id="r1", interrupted=True),
    "handoff": Handoff(reason="user_request", language="kk", summary=KK_TEXT),
    "error": ErrorEvent(code="invalid_json", message="text frames must be JSON objects"),
    "session_end": SessionEnd(reason="client_end"),
}


@pytest.mark.parametrize("name", sorted(SERVER_EVENTS))
def test_server_event_round_trips(name):
    ev = SERVER_EVENTS[name]
    raw = ev.to_json()
    back = parse_server_event(raw)
    assert type(back) is type(ev)
    assert back == ev
    # and the wire form is a JSON object with the event's type first-class
    d = json.loads(raw)
    assert d["type"] == ev.type
    assert d == ev.to_dict()


@pytest.mark.parametrize("name", sorted(SERVER_EVENTS))
def test_to_dict_has_type_and_omits_none(name):
    ev = SERVER_EVENTS[name]
    d = ev.to_dict()
    assert d["type"] == ev.type
    assert None not in d.values()


def test_partial_transcript_omits_final_only_fields():
    d = SERVER_EVENTS["transcript_partial"].to_dict()
    assert d["final"] is False
    for key in ("confidence", "t_end", "t_start", "forced", "t_endpoint"):
        assert key not in d
    assert set(d) >= {"type", "utterance_id", "text", "final", "language"}


def test_final_transcript_carries_confidence_and_t_end():
    d = SERVER_EVENTS["transcript_final"].to_dict()
    assert d["final"] is True
    assert 0 <= d["confidence"] <= 1
    assert d["t_end"] == 3.5


def test_ready_is_marked_ai_generated():
    ev = SERVER_EVENTS["ready"]
    assert ev.ai_generated is True
    d = json.loads(ev.to_json())
    assert d["ai_generated"] is True
    assert d["disclosure"] == {"text": DISCLOSURE_KK, "language": "kk"}
    assert d["languages"] == ["kk", "ru", "uz", "tr", "az", "tt", "en"]


@pytest.mark.parametrize("name", ["reply", "audio_start"])
def test_ai_content_events_are_marked_ai_generated(name):
    assert json.loads(SERVER_EVENTS[name].to_json())["ai_generated"] is True


@pytest.mark.parametrize("name", ["ready", "transcript_final", "reply", "handoff"])
def test_kazakh_cyrillic_survives_unescaped(name):
    raw = SERVER_EVENTS[name].to_json()
    assert "\\u" not in raw
    assert ("Сәлеметсіз бе" in raw) or ("Сізге жасанды интеллект" in raw)
    # and it decodes back to the same characters
    assert parse_server_event(raw) == SERVER_EVENTS[name]


def test_unknown_server_event_comes_back_as_dict():
    raw = json.dumps({"type": "future_event", "x": 1})
    assert parse_server_event(raw) == {"type": "future_event", "x": 1}


def test_server_event_extra_fields_are_ignored_on_decode():
    raw = json.dumps({"type": "session_end", "reason": "client_end", "later_extension": [1, 2]})
    assert parse_server_event(raw) == SessionEnd("client_end")


# --------------------------------------------------------------------------
# client -> server messages
# --------------------------------------------------------------------------
CLIENT_MESSAGES = [
    Start(),
    Start(AudioFormat(Encoding.MULAW, 8000, 1), AudioFormat(Encoding.PCM_S16LE, 24000), "kk"),
    Start(AudioFormat(Encoding.PCM_S16LE, 48000, 2), AudioFormat(Encoding.MULAW, 8000), "ru", pacing="none"),
    Start(language="ky"),
    Text("hello"),
    Text(KK_TEXT),
    Text(""),
    End(),
]


@pytest.mark.parametrize("msg", CLIENT_MESSAGES, ids=repr)
def test_client_message_round_trips(msg):
    assert parse_client_message(msg.to_json()) == msg


def test_text_to_json_keeps_kazakh_unescaped():
    raw = Text(KK_TEXT).to_json()
    assert KK_TEXT in raw and "\\u" not in raw


def test_start_defaults():
    msg = parse_client_message('{"type": "start"}')
    assert isinstance(msg, Start)
    for fmt in (msg.audio, msg.output):
        assert fmt.encoding is Encoding.PCM_S16LE
        assert fmt.sample_rate == 16000
        assert fmt.channels == 1
    assert msg.language == "auto"
    assert msg.pacing == "realtime"
    assert msg == Start()


def test_start_partial_audio_object_fills_defaults():
    msg = parse_client_message('{"type": "start", "audio": {"encoding": "mulaw"}, "output": {"sample_rate": 8000}}')
    assert msg.audio == AudioFormat(Encoding.MULAW, 16000, 1)
    assert msg.output == AudioFormat(Encoding.PCM_S16LE, 8000, 1)


def test_start_language_is_lowercased():
    assert parse_client_message('{"type": "start", "language": "KK"}').language == "kk"
    assert parse_client_message('{"type": "start", "language": "Ru"}').language == "ru"
    assert parse_client_message('{"type": "start", "language": "AUTO"}').language == "auto"


def test_start_wire_form_matches_protocol():
    d = json.loads(Start().to_json())
    assert d == {
        "type": "start",
        "audio": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1},
        "output": {"encoding": "pcm_s16le", "sample_rate": 16000},
        "language": "auto",
    }


def test_sample_rate_bounds_are_inclusive():
    for rate in (8000, 48000):
        msg = parse_client_message(json.dumps({"type": "start", "audio": {"sample_rate": rate}, "output": {"sample_rate": rate}}))
        assert msg.audio.sample_rate == rate and msg.output.sample_rate == rate


def test_end_and_text_ignore_extra_fields():
    assert parse_client_message('{"type": "end", "extra": 1}') == End()
    assert parse_client_message('{"type": "text", "text": "x", "extra": 1}') == Text("x")


# --------------------------------------------------------------------------
# bad client messages -> ProtocolError with a stable code
# --------------------------------------------------------------------------
def _start(**kw) -> str:
    return json.dumps({"type": "start", **kw})


BAD_MESSAGES = [
    ("not json", "invalid_json"),
    ("", "invalid_json"),
    ("{type: start}", "invalid_json"),
    ("[]", "invalid_json"),
    ('[{"type": "start"}]', "invalid_json"),
    ('"start"', "invalid_json"),
    ("42", "invalid_json"),
    ("null", "invalid_json"),
    ('{"type": "hello"}', "unknown_type"),
    ('{"type": "START"}', "unknown_type"),
    ('{"type": null}', "unknown_type"),
    ("{}", "unknown_type"),
    ('{"text": "hi"}', "unknown_type"),
    ('{"type": "text"}', "invalid_message"),
    ('{"type": "text", "text": null}', "invalid_message"),
    ('{"type": "text", "text": 5}', "invalid_message"),
    ('{"type": "text", "text": ["a"]}', "invalid_message"),
    (_start(audio={"encoding": "opus"}), "unsupported_encoding"),
    (_start(audio={"encoding": "PCM_S16LE"}), "unsupported_encoding"),
    (_start(audio={"encoding": None}), "unsupported_encoding"),
    (_start(output={"encoding": "wav"}), "unsupported_encoding"),
    (_start(audio={"sample_rate": 7999}), "unsupported_sample_rate"),
    (_start(audio={"sample_rate": 48001}), "unsupported_sample_rate"),
    (_start(audio={"sample_rate": "16000"}), "unsupported_sample_rate"),
    (_start(audio={"sample_rate": True}), "unsupported_sample_rate"),
    (_start(audio={"sample_rate": 16000.0}), "unsupported_sample_rate"),
    (_start(audio={"sample_rate": None}), "unsupported_sample_rate"),
    (_start(output={"sample_rate": 0}), "unsupported_sample_rate"),
    (_start(audio={"channels": 3}), "unsupported_channels"),
    (_start(audio={"channels": 0}), "unsupported_channels"),
    (_start(audio={"channels": True}), "unsupported_channels"),
    (_start(audio={"channels": "1"}), "unsupported_channels"),
    (_start(audio="pcm_s16le"), "invalid_message"),
    (_start(audio=[16000]), "invalid_message"),
    (_start(output=16000), "invalid_message"),
    (_start(output={"pacing": "fast"}), "invalid_message"),
    (_start(language=""), "unsupported_language"),
    (_start(language=None), "unsupported_language"),
    (_start(language=7), "unsupported_language"),
]


@pytest.mark.parametrize("raw,code", BAD_MESSAGES, ids=[f"{c}:{r[:40]}" for r, c in BAD_MESSAGES])
def test_bad_client_message_has_stable_code(raw, code):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    assert info.value.code == code
    assert code in ERROR_CODES
    assert info.value.message and "\n" not in info.value.message


def test_every_code_is_snake_case_and_described():
    for code, what in ERROR_CODES.items():
        assert code == code.lower() and " " not in code and "-" not in code
        assert what.strip()


def test_protocol_error_defaults():
    e = ProtocolError(message="x")
    assert e.code == "invalid_message" and e.message == "x" and str(e) == "x"
    assert isinstance(e, DauysError)
    assert DauysError().code == "internal_error"
    assert ProtocolError("unknown_type", "y").code == "unknown_type"
    assert ProtocolError.code in ERROR_CODES and DauysError.code in ERROR_CODES


@pytest.mark.parametrize("raw", ["[" * 50_000, '{"a":' * 10_000], ids=["array", "object"])
def test_deeply_nested_json_is_invalid_json(raw):
    assert len(raw.encode()) <= 64 * 1024  # fits the default server.max_frame_bytes
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    assert info.value.code == "invalid_json"


@pytest.mark.parametrize("channels", [1.0, 2.0])
def test_float_channels_are_rejected(channels):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(_start(audio={"channels": channels}))
    assert info.value.code == "unsupported_channels"


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------
def _check_parse(raw: str):
    try:
        msg = parse_client_message(raw)
    except ProtocolError as e:
        assert e.code in ERROR_CODES, e.code
        return None
    assert isinstance(msg, (Start, Text, End))
    return msg


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_frames_never_raise_anything_but_protocol_error(raw):
    _check_parse(raw)


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FORMAT_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "encoding": st.sampled_from(["pcm_s16le", "mulaw", "opus", ""]) | JSON_VALUES,
        "sample_rate": st.integers(0, 100_000) | JSON_VALUES,
        "channels": st.sampled_from([1, 2, 3]) | JSON_VALUES,
        "pacing": st.sampled_from(["realtime", "none", "fast"]) | JSON_VALUES,
    },
)
MESSAGE_OBJECTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["start", "text", "end", "Start", "audio"]) | JSON_VALUES},
    optional={
        "audio": FORMAT_OBJECTS | JSON_VALUES,
        "output": FORMAT_OBJECTS | JSON_VALUES,
        "language": st.sampled_from(["auto", "kk", "KK", ""]) | JSON_VALUES,
        "text": st.text() | JSON_VALUES,
    },
)


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGE_OBJECTS)
def test_arbitrary_message_objects_never_raise_anything_but_protocol_error(obj):
    msg = _check_parse(json.dumps(obj, ensure_ascii=False))
    if isinstance(msg, Start):
        for fmt in (msg.audio, msg.output):
            assert isinstance(fmt.encoding, Encoding)
            assert isinstance(fmt.sample_rate, int) and 8000 <= fmt.sample_rate <= 48000
        assert msg.language == msg.language.lower() and msg.language
        assert msg.pacing in ("realtime", "none")
