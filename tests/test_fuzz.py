"""Fuzzing every input surface of a REAL running server with hostile messages (hypothesis).

The server is an in-process :class:`DauysServer` serving on its own event loop in a thread, on
real sockets on 127.0.0.1, sharing the session's loaded models (``ServerThread``).  Its
sessions speak no audio (``tts`` off, no spoken disclosure) and typed text is capped at 300
characters, so the fuzzer spends its time on the protocol, not on synthesis.  Over the module
at least 10,000 hostile or malformed messages are thrown at it, most of them pipelined over one
connection per hypothesis example:

* ``/v1/voice`` (>= 6,000): bad JSON, JSON that is not an object, unknown and mistyped types,
  ``start`` with every field mutated (encodings, huge/negative/float/string sample rates and
  channels, unicode junk and unpaired surrogates, deep nesting), ``text`` too long or mistyped,
  binary frames before ``start``, odd-length PCM, oversize frames, messages out of order.
  Oracle (PROTOCOL.md): every bad message is answered, in order, by exactly one ``error`` whose
  code is one of those its faults allow (all in ``pipeline.errors.ERROR_CODES``); valid messages
  by none; the connection stays open except after ``end`` (``session_end`` + 1000), an oversize
  frame (``frame_too_large`` + 1009) or a handoff/goodbye the dialogue decided (1000).  A
  sentinel message of unknown type closes each batch, so a missing answer fails fast instead
  of hanging.
* ``/v1/twilio`` (>= 2,500): Twilio Media Streams events with bad JSON, bad base64, mistyped
  fields, hostile ``mediaFormat``, media before ``start``, second ``start``, unknown events,
  binary frames.  Twilio has no error message: per ``server/twilio.py`` a bad message is
  counted in ``dauys_errors_total{code}``, logged, and the stream goes on; ``stop`` ends it with
  1000.  The counter must grow by exactly the expected codes.
* AudioSocket (>= 1,500): frames of unknown kinds (counted ``invalid_message``), UUIDs of wrong
  length, DTMF junk, audio of every rate kind with odd lengths, hangup/error kinds, truncated
  headers and payloads.  The server must end every call (its own hangup frame or the socket
  closed) and only ever send 320-byte audio frames or a hangup.
* raw TCP (>= 300): junk instead of an HTTP request, and junk WebSocket frames after a valid
  handshake (invalid UTF-8 text, reserved opcodes, bad lengths).

After each part the server must still serve (``/healthz``, a fresh native session answers a
typed question), its session registry must be empty, and no log record may be an error or
carry a traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import random
import socket
import struct
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pipeline import metrics
from pipeline.errors import ERROR_CODES
from tests.helpers.server import ServerThread

pytestmark = pytest.mark.slow
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dauys-hypothesis")

MAX_FRAME = 16384
MAX_TEXT = 300
LANGS = ["kk", "ru", "uz", "tr", "az", "tt", "en"]
# examples per part; DAUYS_FUZZ_SCALE=10 runs ten times as many (a longer local fuzzing run)
SCALE = float(os.environ.get("DAUYS_FUZZ_SCALE", "1"))
HYPOTHESIS = dict(
    deadline=None,
    derandomize=os.environ.get("DAUYS_FUZZ_RANDOM", "") == "",  # CI: the same examples every run
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


# ------------------------------------------------------------------------------------------ server
class LogWatch(logging.Handler):
    """Collects log records that show a server fault: any error, or a traceback from our code."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or (record.exc_info and record.name.startswith("dauys")):
            text = f"{record.name} {record.levelname}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.bad.append(text)


@pytest.fixture(scope="module")
def fuzz_server(services):
    srv = ServerThread(
        dataclasses.replace(services, tts=None),  # replies are text only: no synthesis under fuzzing
        server={"max_frame_bytes": MAX_FRAME, "max_text_chars": MAX_TEXT, "audiosocket_port": 0, "max_sessions": 16},
        session={"spoken_disclosure": False},
    )
    yield srv
    srv.stop()


@pytest.fixture
def logwatch():
    watch = LogWatch()
    root = logging.getLogger()
    root.addHandler(watch)
    yield watch
    root.removeHandler(watch)
    assert not watch.bad, "server faults in the log:\n" + "\n".join(watch.bad[:10])


def error_counts() -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.ERRORS.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                out[s.labels["code"]] = s.value
    return out


def error_delta(before: dict[str, float]) -> dict[str, int]:
    now = error_counts()
    return {k: int(v - before.get(k, 0)) for k, v in now.items() if v - before.get(k, 0)}


def handoffs() -> float:
    return sum(s.value for family in metrics.HANDOFFS.collect() for s in family.samples if s.name.endswith("_total"))


def ws_connect(url: str):
    return connect(url, max_size=None, max_queue=None, open_timeout=10, close_timeout=5, proxy=None, compression=None)


def assert_still_serving(srv: ServerThread) -> None:
    """/healthz answers, a fresh native session answers a typed question, no session is left over."""
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=10) as r:
        assert r.status == 200
    with ws_connect(srv.url()) as ws:
        ws.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(json.dumps({"type": "text", "text": "Картам бұғатталып қалды"}))
        kinds = []
        while "reply" not in kinds:
            ev = json.loads(ws.recv(timeout=20))
            kinds.append(ev["type"])
            assert ev["type"] != "error", ev
        assert kinds[0] == "transcript"
    deadline = time.monotonic() + 10
    while srv.server.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv.server.sessions, f"sessions left over: {list(srv.server.sessions)}"


# ------------------------------------------------------------------------------- shared strategies
TEXT = st.text(max_size=24)  # any Unicode scalar value (no surrogates: a text frame must be UTF-8)
SURROGATE_TEXT = st.text(st.characters(codec=None, categories=["Cs", "Lo", "Ll", "Zs"]), min_size=1, max_size=8)
HOSTILE_NUMBERS = st.sampled_from(
    [0, -1, -16000, 1, 7999, 8001, 47999, 48001, 96000, 2**31, 2**63, -(2**63), 10**30, 16000.0, 8000.5, 1e308, -1e308,
     float("inf"), float("-inf"), float("nan"), True, False, "16000", "8000", "", None, [16000], {"rate": 16000}]
) | st.integers()
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=8)
DEPTHS = st.sampled_from([2, 50, 500, 900, 950, 970, 980, 990, 995, 1000, 1100, 3000])


class Deep:
    """A nesting of ``depth`` lists/objects, serialised by hand (json.dumps would recurse)."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind

    def dumps(self) -> str:
        if self.kind == "list":
            return "[" * self.depth + "]" * self.depth
        return '{"a":' * self.depth + "1" + "}" * self.depth


DEEP = st.builds(Deep, DEPTHS, st.sampled_from(["list", "dict"]))


def dumps(obj, ascii_only: bool = True) -> str:
    """JSON text of ``obj``; ``Deep`` values are spliced in unserialised."""
    holes: list[str] = []

    def swap(o):
        if isinstance(o, Deep):
            holes.append(o.dumps())
            return f"__deep{len(holes) - 1}__"
        if isinstance(o, dict):
            return {k: swap(v) for k, v in o.items()}
        if isinstance(o, list):
            return [swap(v) for v in o]
        return o

    swapped = swap(obj)
    text = json.dumps(swapped, ensure_ascii=ascii_only)
    if not utf8_ok(text):  # unpaired surrogates travel as \\uXXXX escapes
        text = json.dumps(swapped, ensure_ascii=True)
    for i, h in enumerate(holes):
        text = text.replace(f'"__deep{i}__"', h, 1)
    return text


def utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


BLOB = st.builds(random_bytes, st.integers(0, 2**32), st.integers(0, 700))
PCM_LIKE = st.builds(lambda n, quiet: (b"\x00\x01" if quiet else b"\x00\x40") * (n // 2) + b"\x00" * (n % 2), st.integers(0, 1281), st.booleans())


# ---------------------------------------------------------------------------------------- /v1/voice
# (strategies are built once: composing them inside a draw costs hypothesis more than the draw)
BOOL = st.booleans()
ENCODINGS = st.sampled_from(["pcm_s16le", "mulaw"])
RATES = st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000])
CHANNELS = st.sampled_from([1, 2])
PACINGS = st.sampled_from(["none", "realtime"])
GOOD_LANGUAGES = st.sampled_from(["auto", "AUTO", *LANGS, "Kk"])
MUTATIONS = st.sampled_from([0, 0, 1, 1, 2, 3])
MUTATION_TARGETS = st.sampled_from(["audio", "output", "language", "top", "pacing"])
FORMAT_FIELDS = st.sampled_from(["encoding", "sample_rate", "channels", "sample_rate", "encoding"])
JSON_OR_DEEP = JSON | DEEP
BAD_FORMAT_VALUES = HOSTILE_NUMBERS | TEXT | st.sampled_from(["PCM_S16LE", "pcm_f32le", "alaw", "opus", "mulaw "]) | DEEP | JSON
BAD_PACINGS = TEXT | JSON | st.sampled_from(["None", "REALTIME", "fast"])
BAD_LANGUAGES = TEXT | SURROGATE_TEXT | JSON | DEEP | st.sampled_from(["", "ky", "de", "kk-KZ", "İ", "KK\u0000"])
FRAME_KINDS = st.sampled_from(["start", "start", "start", "text", "text", "binary", "binary", "binary", "unknown", "garbage", "nonobject", "deep", "raw"])
NOT_STRINGS = JSON.filter(lambda v: not isinstance(v, str)) | DEEP
LONG_UNITS = st.sampled_from(["қ", "a", " ", "ж\u0301"])
LONG_COUNTS = st.sampled_from([MAX_TEXT, MAX_TEXT + 1, 2 * MAX_TEXT, 3000])
TEXTS = TEXT | st.sampled_from(["", "   ", "Депозит пайызы қанша?", "\u0000", "\u202e\u200b", "🙂" * 5])
AUDIO = BLOB | PCM_LIKE
TYPE_KEYS = st.sampled_from(["type", "type", "Type", "kind"])
UNKNOWN_TYPES = TEXT.filter(lambda t: t not in ("start", "text", "end")) | JSON | DEEP
GARBAGE = TEXT | st.sampled_from(
    ['{"type":"start"', '{"type":"start",}', "{'type': 'start'}", '{"type":"start"} {"type":"end"}', '\ufeff{"type":"end"}',
     "NaN", "", " ", '{"type":"text","text":"\\ud800"}', '{"type":"text","text":"a\\udfffb"}', '{"type":"te\\u0000xt"}',
     '{"type":"start","audio":{"sample_rate":1' + "0" * 5000 + "}}", '{"type":"end"}\u0000', "[" * 20000]
)
NON_OBJECTS = JSON.filter(lambda v: not isinstance(v, dict)) | DEEP
DEEP_WHERE = st.sampled_from(["type", "audio", "text", "language"])
KNOWN_TYPES = st.sampled_from(["start", "text", "end"])
ONE_TWO = st.integers(1, 2)
CHOICE4 = st.integers(0, 3)
CHOICE6 = st.integers(0, 5)
CHOICE7 = st.integers(0, 6)
LAST_KINDS = st.sampled_from(["none", "none", "end", "oversize"])
OVERSIZE = st.sampled_from([1, 2, 1000, 200000])


@st.composite
def audio_format(draw, output: bool = False):
    fmt = {"encoding": draw(ENCODINGS), "sample_rate": draw(RATES)}
    if draw(BOOL):
        fmt["channels"] = draw(CHANNELS)
    if output and draw(BOOL):
        fmt["pacing"] = draw(PACINGS)
    return fmt


AUDIO_FORMAT = audio_format()
OUTPUT_FORMAT = audio_format(output=True)


@st.composite
def start_message(draw):
    msg: dict = {"type": "start"}
    for key in ("audio", "output"):
        if draw(CHOICE4):
            msg[key] = draw(OUTPUT_FORMAT if key == "output" else AUDIO_FORMAT)
    if draw(BOOL):
        msg["language"] = draw(GOOD_LANGUAGES)
    # mutations: none (a valid start) or several
    for _ in range(draw(MUTATIONS)):
        where = draw(MUTATION_TARGETS)
        if where in ("audio", "output"):
            if draw(CHOICE6) == 0 or not isinstance(msg.get(where), dict):
                msg[where] = draw(JSON_OR_DEEP)
                continue
            msg[where][draw(FORMAT_FIELDS)] = draw(BAD_FORMAT_VALUES)
        elif where == "pacing":
            out = msg.setdefault("output", {})
            if isinstance(out, dict):
                out["pacing"] = draw(BAD_PACINGS)
        elif where == "language":
            msg["language"] = draw(BAD_LANGUAGES)
        else:
            msg[draw(TEXT)] = draw(JSON_OR_DEEP)
    return msg


START = start_message()


@st.composite
def native_frame(draw) -> str | bytes:
    kind = draw(FRAME_KINDS)
    if kind == "start":
        return dumps(draw(START), draw(BOOL))
    if kind == "text":
        msg: dict = {"type": "text"}
        choice = draw(CHOICE7)
        if choice == 0:
            pass  # missing
        elif choice == 1:
            msg["text"] = draw(NOT_STRINGS)
        elif choice == 2:
            msg["text"] = draw(LONG_UNITS) * draw(LONG_COUNTS)
        elif choice == 3:
            msg["text"] = draw(SURROGATE_TEXT)
        else:
            msg["text"] = draw(TEXTS)
        return dumps(msg, draw(BOOL))
    if kind == "binary":
        return draw(AUDIO)
    if kind == "unknown":
        msg = {draw(TYPE_KEYS): draw(UNKNOWN_TYPES)}
        if draw(BOOL):
            msg[draw(TEXT)] = draw(JSON)
        return dumps(msg, draw(BOOL))
    if kind == "garbage":
        return draw(GARBAGE)
    if kind == "nonobject":
        return dumps(draw(NON_OBJECTS))
    if kind == "deep":
        d = draw(DEEP)
        where = draw(DEEP_WHERE)
        base = {"type": "text" if where == "text" else "start"}
        base["type" if where == "type" else where] = d
        return dumps(base)
    if kind == "raw":
        return dumps({"type": draw(KNOWN_TYPES), "text": draw(TEXT)}).replace('"type"', '"type"' * draw(ONE_TWO), 1)
    raise AssertionError(kind)


@st.composite
def native_last_frame(draw) -> list:
    """What ends a batch: nothing (a sentinel follows), ``end``, or an oversize frame."""
    kind = draw(LAST_KINDS)
    if kind == "none":
        return []
    if kind == "end":
        return [dumps({"type": "end", **({draw(TEXT): draw(JSON)} if draw(BOOL) else {})})]
    size = MAX_FRAME + draw(OVERSIZE)
    return [b"\x00" * size if draw(BOOL) else "x" * size]


def format_faults(fmt) -> set[str]:
    if fmt is None:
        return set()
    if not isinstance(fmt, dict):
        return {"invalid_message"}
    faults = set()
    enc = fmt.get("encoding", "pcm_s16le")
    if not (isinstance(enc, str) and enc in ("pcm_s16le", "mulaw")):
        faults.add("unsupported_encoding")
    rate = fmt.get("sample_rate", 16000)
    if not (type(rate) is int and 8000 <= rate <= 48000):
        faults.add("unsupported_sample_rate")
    channels = fmt.get("channels", 1)
    if not (type(channels) is int and channels in (1, 2)):
        faults.add("unsupported_channels")
    return faults


def native_expect(frame: str | bytes, started: bool) -> tuple[set[str] | None, str | None]:
    """PROTOCOL.md as an oracle: (the error codes this frame may be answered with, or None if it
    is valid; its effect: 'start', 'text', 'audio', 'end' or 'close1009')."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME:
        return {"frame_too_large"}, "close1009"
    if isinstance(frame, bytes):
        return (None, "audio") if started else ({"audio_before_start"}, None)
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        return {"invalid_json"}, None
    if not isinstance(obj, dict):
        return {"invalid_json"}, None
    kind = obj.get("type")
    if kind == "start":
        faults = format_faults(obj.get("audio")) | format_faults(obj.get("output"))
        out = obj.get("output")
        if isinstance(out, dict) and out.get("pacing", "realtime") not in ("realtime", "none"):
            faults.add("invalid_message")
        lang = obj.get("language", "auto")
        if not isinstance(lang, str) or (lang.lower() != "auto" and lang.lower() not in LANGS):
            faults.add("unsupported_language")
        if started:
            return faults | {"already_started"}, None
        return (faults, None) if faults else (None, "start")
    if kind == "text":
        text = obj.get("text")
        if not isinstance(text, str) or not utf8_ok(text):
            return {"invalid_message"} | (set() if started else {"text_before_start"}), None
        if not started:
            return {"text_before_start"}, None
        if len(text) > MAX_TEXT:
            return {"text_too_long"}, None
        return None, "text"
    if kind == "end":
        return None, "end"
    return ({"unknown_type", "invalid_message"} if kind is None else {"unknown_type"}), None


@dataclasses.dataclass
class Tally:
    sent: int = 0
    answered: int = 0  # bad messages whose error answer was checked
    examples: int = 0
    outcomes: dict = dataclasses.field(default_factory=dict)

    def outcome(self, name: str) -> None:
        self.outcomes[name] = self.outcomes.get(name, 0) + 1


def assert_covered(tally: Tally, **least: int) -> None:
    """The fixed-seed run reaches every ending it is meant to (random runs may be lopsided)."""
    if HYPOTHESIS["derandomize"]:
        assert all(tally.outcomes.get(k, 0) > n for k, n in least.items()), tally


def check_event(ev) -> dict:
    assert isinstance(ev, dict) and isinstance(ev.get("type"), str), ev
    if ev["type"] == "error":
        assert ev.get("code") in ERROR_CODES, ev
        assert isinstance(ev.get("message"), str) and "Traceback" not in ev["message"], ev
        assert ev["code"] != "internal_error", ev
    return ev


def run_native_batch(srv: ServerThread, frames: list, tally: Tally, sentinel_no: int) -> None:
    """Send ``frames`` (up to the first that ends the session) over one connection, then a sentinel;
    check the answers against the oracle."""
    expected: list[set[str]] = []
    started = active = False
    terminal = None
    batch = []
    for frame in frames:
        codes, effect = native_expect(frame, started)
        batch.append(frame)
        if codes is not None:
            expected.append(codes)
        if effect == "start":
            started = True
        elif effect in ("text", "audio"):
            active = True  # the dialogue may hand off or say goodbye from here on
        elif effect in ("end", "close1009"):
            terminal = effect
            break
    sentinel = f"fuzz-sentinel-{sentinel_no}"
    events: list[dict] = []
    close_code = None
    with ws_connect(srv.url()) as ws:
        try:
            for frame in batch:
                ws.send(frame)
                tally.sent += 1
            if terminal is None:
                ws.send(json.dumps({"type": sentinel}))
        except ConnectionClosed:
            pass  # the server ended the session meanwhile (checked below)
        deadline = time.monotonic() + 30
        try:
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to the batch within 30 s (silent hang); got {[e['type'] for e in events]}"
                try:
                    msg = ws.recv(timeout=left)
                except TimeoutError:
                    continue
                if isinstance(msg, bytes):
                    continue
                ev = check_event(json.loads(msg))
                if ev["type"] == "error" and sentinel in ev["message"]:
                    break
                events.append(ev)
        except ConnectionClosed:
            close_code = ws.close_code
    errors = [e["code"] for e in events if e["type"] == "error"]
    ends = [e["reason"] for e in events if e["type"] == "session_end"]
    readies = [e for e in events if e["type"] == "ready"]
    assert close_code != 1011, (close_code, events[-5:])
    assert len(readies) <= 1 and (not readies or started), readies
    context = f"errors {errors} vs expected {expected}; session_end {ends}; close {close_code}"
    if close_code is None:  # the sentinel came back: every message was answered
        tally.outcome("open")
        assert len(errors) == len(expected), context
    elif ends and ends[-1] in ("handoff", "goodbye"):  # the dialogue ended the call part-way
        tally.outcome(ends[-1])
        assert active and close_code == 1000, context
        assert len(errors) <= len(expected), context
    elif terminal == "end":
        tally.outcome("end")
        assert ends == ["client_end"] and close_code == 1000, context
        assert len(errors) == len(expected), context
    elif terminal == "close1009":
        tally.outcome("frame_too_large")
        assert close_code == 1009 and errors and errors[-1] == "frame_too_large", context
        assert len(errors) == len(expected), context
    else:
        raise AssertionError("the server closed the connection unexpectedly: " + context)
    for got, allowed in zip(errors, expected):
        assert got in allowed, context
    tally.answered += len(errors)


def test_native_protocol_survives_hostile_messages(fuzz_server, logwatch):
    tally = Tally()

    @hsettings(max_examples=int(260 * SCALE), **HYPOTHESIS)
    @given(st.lists(native_frame(), min_size=30, max_size=80), native_last_frame())
    def fuzz(frames, last):
        tally.examples += 1
        run_native_batch(fuzz_server, frames + last, tally, tally.examples)

    fuzz()
    print(f"native: {tally}")
    assert tally.sent >= 6000 * min(SCALE, 1), tally
    assert tally.answered >= 4000 * min(SCALE, 1), tally
    assert_covered(tally, open=20, end=5, frame_too_large=5)
    assert_still_serving(fuzz_server)


# --------------------------------------------------------------------------------------- /v1/twilio
TW_KINDS = st.sampled_from(["connected", "start", "start", "media", "media", "media", "media", "media", "dtmf", "mark", "unknown",
                            "garbage", "nonobject", "binary", "deep"])
TW_SIDS = st.sampled_from(["MZ" + "0" * 32, "MZ" + "f" * 32, ""]) | JSON
TW_LANGUAGES = GOOD_LANGUAGES | BAD_LANGUAGES
TW_RATES = st.sampled_from([8000, "8000", "16000", "²", "٣", "99999999999", "1" * 5000, "-8000", "8000.0"]) | HOSTILE_NUMBERS | DEEP
TW_ENCODINGS = st.sampled_from(["audio/x-mulaw", "audio/x-l16", "audio/x-alaw", "mulaw"]) | TEXT | JSON | DEEP
TW_TRACKS = st.sampled_from(["inbound", "inbound", "inbound", "inbound_track", "outbound", "both"]) | JSON
BAD_BASE64 = st.sampled_from(["abc", "====", "YQ", "ü", "a b", "YWJj\n", "YW=Jj", "-_-_", "\x00"]) | TEXT | NOT_STRINGS
DIGITS = st.sampled_from(["1", "5", "#", "*", "", "00", 1, None, "٠"]) | JSON
RARE = st.integers(0, 9)
CHOICE3 = st.integers(0, 2)
TW_DEEP_WHERE = st.sampled_from(["event", "start", "media", "payload", "language", "sampleRate", "encoding", "mark"])
TW_LAST = st.sampled_from(["stop", "stop", "none", "oversize"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@st.composite
def twilio_frame(draw) -> str | bytes:
    kind = draw(TW_KINDS)
    sid = draw(TW_SIDS)
    if kind == "connected":
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    if kind == "start":
        start: dict = {"accountSid": "AC0", "callSid": draw(TEXT), "streamSid": sid, "tracks": ["inbound"]}
        if draw(BOOL):
            start["customParameters"] = {"language": draw(TW_LANGUAGES)} if draw(CHOICE4) else draw(JSON)
        if draw(CHOICE4):
            start["mediaFormat"] = {"encoding": draw(TW_ENCODINGS) if draw(CHOICE3) == 0 else "audio/x-mulaw",
                                    "sampleRate": draw(TW_RATES) if draw(CHOICE3) == 0 else 8000, "channels": 1}
        else:
            start["mediaFormat"] = draw(JSON)
        msg = {"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": start if draw(CHOICE6) else draw(JSON)}
        return dumps(msg, draw(BOOL))
    if kind == "media":
        choice = draw(CHOICE7)
        payload = b64(draw(AUDIO)) if choice < 4 else draw(BAD_BASE64)
        media = {"track": draw(TW_TRACKS), "chunk": "1", "timestamp": "20", "payload": payload}
        if choice == 6:
            media = draw(JSON)
        elif choice == 5:
            media.pop(draw(st.sampled_from(["payload", "track"])))
        return dumps({"event": "media", "sequenceNumber": "2", "streamSid": sid, "media": media}, draw(BOOL))
    if kind == "dtmf":
        digit = "0" if draw(RARE) == 0 else draw(DIGITS)
        return dumps({"event": "dtmf", "streamSid": sid, "dtmf": {"track": "inbound_track", "digit": digit} if draw(CHOICE6) else draw(JSON)})
    if kind == "mark":
        return dumps({"event": "mark", "streamSid": sid, "mark": {"name": draw(TEXT)} if draw(BOOL) else draw(JSON)})
    if kind == "unknown":
        msg = {draw(st.sampled_from(["event", "event", "Event", "type"])): draw(TEXT.filter(lambda t: t not in TW_EVENTS) | JSON | DEEP)}
        return dumps(msg, draw(BOOL))
    if kind == "garbage":
        return draw(GARBAGE)
    if kind == "nonobject":
        return dumps(draw(NON_OBJECTS))
    if kind == "binary":
        return draw(AUDIO)
    d, where = draw(DEEP), draw(TW_DEEP_WHERE)
    msg = {"event": "start" if where in ("start", "language", "sampleRate", "encoding") else where if where != "payload" else "media"}
    if where == "event":
        msg["event"] = d
    elif where == "start":
        msg["start"] = d
    elif where == "media":
        msg["media"] = d
    elif where == "payload":
        msg["media"] = {"payload": d}
    elif where == "mark":
        msg["mark"] = {"name": d}
    elif where == "language":
        msg["start"] = {"customParameters": {"language": d}}
    else:
        msg["start"] = {"mediaFormat": {where: d}}
    return dumps(msg)


TW_EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")
TWILIO_FRAME = twilio_frame()


@st.composite
def twilio_last_frame(draw) -> list:
    kind = draw(TW_LAST)
    if kind == "none":
        return []
    if kind == "stop":
        return [dumps({"event": "stop", "sequenceNumber": "9", "streamSid": "MZ0", "stop": draw(JSON)})]
    size = 2 * MAX_FRAME + draw(OVERSIZE)
    return [b"\x00" * size if draw(BOOL) else "x" * size]


def twilio_expect(frame: str | bytes, started: bool) -> tuple[str | None, str | None]:
    """server/twilio.py's documented handling: (the error code counted, or None; the effect)."""
    if len(frame) > 2 * MAX_FRAME:
        return "frame_too_large", "close1009"
    if isinstance(frame, bytes):
        return "invalid_message", None
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError):
        return "invalid_json", None
    if not isinstance(msg, dict):
        return "invalid_json", None
    event = msg.get("event")
    if event == "connected" or event == "mark":
        return None, None
    if event == "start":
        start = msg.get("start") or {}
        if not isinstance(start, dict):
            return "invalid_message", None
        return ("already_started", None) if started else (None, "start")
    if event == "media":
        media = msg.get("media") or {}
        if not isinstance(media, dict) or media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return None, None
        try:
            base64.b64decode(media.get("payload", ""), validate=True)
        except (ValueError, TypeError):
            return "invalid_message", None
        return ("audio_before_start", None) if not started else (None, "audio")
    if event == "dtmf":
        dtmf = msg.get("dtmf")
        digit = str((dtmf or {}).get("digit", "")) if isinstance(dtmf, dict) else ""
        return None, "handoff" if digit == "0" and started else None
    if event == "stop":
        return None, "stop"
    return "unknown_type", None


def run_twilio_call(srv: ServerThread, frames: list, tally: Tally) -> None:
    expected: list[str] = []
    started = active = False
    terminal = None
    batch = []
    for frame in frames:
        code, effect = twilio_expect(frame, started)
        batch.append(frame)
        if code is not None:
            expected.append(code)
        if effect == "start":
            started = True
        elif effect in ("audio", "handoff"):
            active = True
        elif effect in ("stop", "close1009"):
            terminal = effect
            break
    if terminal is None:
        batch.append(json.dumps({"event": "stop", "streamSid": "MZ0"}))
        terminal = "stop"
    before, handoffs_before = error_counts(), handoffs()
    with ws_connect(srv.url("/v1/twilio")) as ws:
        try:
            for frame in batch:
                ws.send(frame)
                tally.sent += 1
        except ConnectionClosed:
            pass
        deadline = time.monotonic() + 30
        try:
            while True:
                left = deadline - time.monotonic()
                assert left > 0, "the Twilio stream was not closed within 30 s of stop (hang)"
                try:
                    msg = ws.recv(timeout=left)
                except TimeoutError:
                    continue
                out = json.loads(msg)
                assert out.get("event") in ("media", "mark", "clear"), out
        except ConnectionClosed:
            pass
        close_code = ws.close_code
    delta = error_delta(before)
    want: dict[str, int] = {}
    for code in expected:
        want[code] = want.get(code, 0) + 1
    context = f"counted {delta} vs expected {want}; close {close_code}"
    assert set(delta) <= set(ERROR_CODES) and "internal_error" not in delta, context
    if handoffs() > handoffs_before:  # DTMF 0 or audio handed the call off part-way: later messages go unread
        assert active, context
        # a handoff said without audio (no TTS here) may end the stream (1000) before an oversize frame after it is read
        assert close_code in ((1009, 1000) if terminal == "close1009" else (1000,)), context
        tally.outcome("handoff")
        assert all(delta.get(k, 0) <= n for k, n in want.items()) and set(delta) <= set(want), context
    else:
        tally.outcome(terminal)
        assert close_code == (1009 if terminal == "close1009" else 1000), context
        assert delta == want, context
    tally.answered += sum(delta.values())


def test_twilio_adapter_survives_hostile_messages(fuzz_server, logwatch):
    tally = Tally()

    @hsettings(max_examples=int(90 * SCALE), **HYPOTHESIS)
    @given(st.lists(TWILIO_FRAME, min_size=20, max_size=60), twilio_last_frame())
    def fuzz(frames, last):
        tally.examples += 1
        run_twilio_call(fuzz_server, frames + last, tally)

    fuzz()
    print(f"twilio: {tally}")
    assert tally.sent >= 2500 * min(SCALE, 1), tally
    assert_covered(tally, stop=10, close1009=3)
    assert_still_serving(fuzz_server)


# -------------------------------------------------------------------------------------- AudioSocket
AS_KINDS = st.sampled_from(["uuid", "dtmf", "audio", "audio", "audio", "audio", "unknown", "unknown"])
AUDIO_KINDS = st.sampled_from(list(range(0x10, 0x19)) + [0x10, 0x10, 0x10])
UNKNOWN_KINDS = st.sampled_from([0x02, 0x04, 0x05, 0x0F, 0x19, 0x1F, 0x20, 0x7F, 0x80, 0xFE] + list(range(0x04, 0x10)))
DTMF_PAYLOADS = st.sampled_from([b"1", b"5", b"#", b"*", b"", b"12", b"\xff", b"0\x00"])
UUID_LENGTHS = st.sampled_from([16, 16, 0, 1, 15, 17, 40])
AS_LAST = st.sampled_from(["hangup", "hangup", "error", "eof", "short_header", "short_payload"])
SEEDS = st.integers(0, 2**32)


@st.composite
def audiosocket_frame(draw) -> tuple[int, bytes]:
    kind = draw(AS_KINDS)
    if kind == "uuid":
        return 0x01, random_bytes(draw(SEEDS), draw(UUID_LENGTHS))
    if kind == "dtmf":
        return 0x03, b"0" if draw(RARE) == 0 else draw(DTMF_PAYLOADS)
    if kind == "audio":
        return draw(AUDIO_KINDS), draw(AUDIO)
    return draw(UNKNOWN_KINDS), random_bytes(draw(SEEDS), draw(st.integers(0, 100)))


AUDIOSOCKET_FRAME = audiosocket_frame()


@st.composite
def audiosocket_last(draw) -> tuple[str, bytes]:
    """How the caller's side ends: a hangup or error frame, or the socket just closing (maybe mid-frame)."""
    kind = draw(AS_LAST)
    if kind == "hangup":
        return kind, struct.pack(">BH", 0x00, 0)
    if kind == "error":
        return kind, struct.pack(">BH", 0xFF, 1) + b"\x02"
    if kind == "short_header":
        return kind, bytes([0x10, 0x01][: draw(ONE_TWO)])
    if kind == "short_payload":
        return kind, struct.pack(">BH", 0x10, 320) + b"\x00" * draw(st.integers(0, 319))
    return kind, b""


def run_audiosocket_call(srv: ServerThread, frames: list[tuple[int, bytes]], last: tuple[str, bytes], tally: Tally) -> None:
    started = False
    expected = 0
    wire = bytearray()
    for kind, payload in frames:
        wire += struct.pack(">BH", kind, len(payload)) + payload
        if 0x10 <= kind <= 0x18:
            started = True
        elif kind not in (0x01, 0x03):
            expected += 1  # counted invalid_message, logged, the call goes on
    ending, tail = last
    before, handoffs_before = error_counts(), handoffs()
    received = bytearray()
    with socket.create_connection(("127.0.0.1", srv.server.audiosocket_port), timeout=30) as sock:
        try:
            sock.sendall(bytes(wire) + tail)
            tally.sent += len(frames) + (ending != "eof")
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up first (a handoff)
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the AudioSocket call did not end within 30 s (hang)"
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
    # the server speaks AudioSocket too: 320-byte audio frames, and at most a final hangup
    off = 0
    kinds = []
    while off < len(received):
        assert off + 3 <= len(received), "a truncated frame from the server"
        kind, length = struct.unpack(">BH", received[off : off + 3])
        assert (kind, length) in ((0x10, 320), (0x00, 0)), (kind, length)
        kinds.append(kind)
        off += 3 + length
    assert 0x00 not in kinds[:-1], "frames after the server's hangup"
    delta = error_delta(before)
    context = f"counted {delta} vs {expected} unknown frames; server sent {len(kinds)} frames, ending {ending}"
    if handoffs() > handoffs_before:
        assert started, context  # (its hangup frame is not sent if the caller's side ended first)
        assert delta.get("invalid_message", 0) <= expected and set(delta) <= {"invalid_message"}, context
        tally.outcome("handoff")
    else:
        assert delta == ({"invalid_message": expected} if expected else {}), context
        tally.outcome(ending)
    tally.answered += sum(delta.values())


def test_audiosocket_adapter_survives_hostile_frames(fuzz_server, logwatch):
    tally = Tally()

    @hsettings(max_examples=int(70 * SCALE), **HYPOTHESIS)
    @given(st.lists(AUDIOSOCKET_FRAME, min_size=20, max_size=60), audiosocket_last())
    def fuzz(frames, last):
        tally.examples += 1
        run_audiosocket_call(fuzz_server, frames, last, tally)

    fuzz()
    print(f"audiosocket: {tally}")
    assert tally.sent >= 1500 * min(SCALE, 1), tally
    assert_covered(tally, hangup=5, short_payload=2)
    assert_still_serving(fuzz_server)
    # and a well-formed call still works: audio in, hangup, session gone
    with socket.create_connection(("127.0.0.1", fuzz_server.server.audiosocket_port), timeout=10) as sock:
        sock.sendall(struct.pack(">BH", 0x01, 16) + uuid.uuid4().bytes + (struct.pack(">BH", 0x10, 320) + b"\x00" * 320) * 50)
        sock.sendall(struct.pack(">BH", 0x00, 0))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


# ---------------------------------------------------------------------------------------- raw TCP
HTTP_JUNK = st.sampled_from([
    b"", b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n", b"GET /v1/voice HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/voice HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: !!\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST /v1/voice HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 300 + b"\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "GET /ü HTTP/1.1\r\nHost: ж\r\n\r\n".encode(), b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]) | BLOB
WS_OPCODES = st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x7, 0x8, 0x9, 0xA, 0xB, 0xF])
WS_PAYLOADS = st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b'{"type":"start"}', b"\x03\xe8", b"\x00\x01", b"\x03\xe8\xff", b"x" * 200]) | BLOB


@st.composite
def ws_raw_frame(draw) -> bytes:
    """One client frame with hostile header bits: reserved bits and opcodes, no mask, lying lengths,
    fragmented or oversize control frames, invalid UTF-8 text, bad close codes."""
    payload = draw(WS_PAYLOADS)
    fin = draw(st.sampled_from([0x80, 0x80, 0x00]))
    rsv = draw(st.sampled_from([0, 0, 0, 0x40, 0x20, 0x10]))
    masked = draw(st.sampled_from([True, True, True, False]))
    n = len(payload)
    length_mode = draw(st.sampled_from(["exact", "exact", "exact", "16", "64", "lie"]))
    head = bytes([fin | rsv | draw(WS_OPCODES)])
    m = 0x80 if masked else 0
    if length_mode == "16" or (length_mode == "exact" and 126 <= n < 65536):
        head += bytes([m | 126]) + struct.pack(">H", n)
    elif length_mode == "64":
        head += bytes([m | 127]) + struct.pack(">Q", n if draw(BOOL) else 2**63 - 1)
    elif length_mode == "lie":
        head += bytes([m | min(125, n + 7)])
    else:
        head += bytes([m | n])
    if masked:
        key = random_bytes(draw(SEEDS), 4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


HANDSHAKE = (b"GET /v1/voice HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
START_FRAME = b"\x81\x90" + b"\x00\x00\x00\x00" + b'{"type":"start"}'  # masked with a zero key


def drain(sock: socket.socket, limit_s: float = 15) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + limit_s
    while True:
        assert time.monotonic() < deadline, "the server neither answered nor closed (hang)"
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            continue
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_raw_tcp_junk_and_bad_websocket_frames(fuzz_server, logwatch):
    tally = Tally()
    port = fuzz_server.port

    @hsettings(max_examples=int(120 * SCALE), **HYPOTHESIS)
    @given(HTTP_JUNK)
    def http_junk(data):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(data)
            tally.sent += 1
            sock.shutdown(socket.SHUT_WR)
            reply = drain(sock)
        assert not reply or reply.startswith(b"HTTP/1.1 "), reply[:80]
        tally.outcome(reply[:12].decode(errors="replace") or "closed")

    @hsettings(max_examples=int(120 * SCALE), **HYPOTHESIS)
    @given(st.booleans(), st.lists(ws_raw_frame(), min_size=1, max_size=4))
    def ws_junk(after_start, frames):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(HANDSHAKE)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, "handshake refused"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head[:80]
            try:
                sock.sendall((START_FRAME if after_start else b"") + b"".join(frames))
                tally.sent += len(frames)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            drain(sock)
        tally.outcome("ws")

    http_junk()
    ws_junk()
    print(f"raw: {tally}")
    assert tally.sent >= 300 * min(SCALE, 1), tally
    assert_still_serving(fuzz_server)
