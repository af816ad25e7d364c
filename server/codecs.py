"""Carrier codecs: wire messages <-> pipeline inputs and outgoing messages, with no I/O.

A codec is the Sans-I/O half of a carrier (in the spirit of Pipecat's frame
serializers and the ``websockets`` protocol core): it never reads, writes,
sleeps or touches a session.  :class:`server.transport.CallRunner` owns the
connection, the session and the lifecycle, and asks the codec two things:

* ``decode(message)``: one incoming carrier message (a WebSocket frame; for
  AudioSocket, any chunk of the TCP byte stream) -> a list of *inputs*:
  :class:`CallStart`, :class:`Audio`, :class:`Reconfigure`,
  ``pipeline.events.Text`` / ``Dtmf`` / ``End``, :class:`CallId`,
  :class:`Hangup`, :class:`Refuse`.  ``decode`` never raises: a message the
  carrier's protocol does not allow comes back, in its place in the list, as
  a :class:`pipeline.errors.ProtocolError` instance (its ``code`` one of
  ``pipeline.errors.ERROR_CODES``), which the runner reports like the
  session's own protocol errors.
* ``encode(item)``: one outbox item of the session (a ``ServerEvent`` or a
  ``pipeline.replies.AudioFrame``) -> the carrier messages to send (``str``
  for WebSocket text frames, ``bytes`` for binary frames or stream bytes);
  ``flush()`` what is still held back when the session's output ends, and
  ``hangup()`` the carrier's own goodbye, if it has one.

The phone carriers' codecs derive from :class:`PhoneCodec` (reply audio cut into exact 20 ms
messages with the remainder carried over and the last piece padded with the encoding's silence,
A-law transcoded at the edge, a closed connection taken as the caller's hangup) and, where the
carrier plays marks back, :class:`PlaybackMarks`; each says only how its messages look.

Whatever a codec must remember between messages (Twilio's stream id and
unacknowledged marks, AudioSocket's partial frames and the sample rate) is
plain state on the codec, so each codec can be driven, fuzzed and
round-tripped by the tests without a socket (``tests/carriers/test_codecs.py``).
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from dataclasses import dataclass

import numpy as np

from models.audio import MAX_RATE, MIN_RATE, Encoding, alaw_decode, alaw_encode
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, AudioFormat, Dtmf, End, ServerEvent, Start, Text, parse_client_message
from pipeline.replies import AudioFrame
from server.twilio_auth import stream_secret_ok


# ------------------------------------------------------------------------------------ the inputs
@dataclass(frozen=True)
class CallStart:
    """Start the session. ``language_fallback``: a language that is not configured falls back to
    ``auto`` (a phone carrier cannot be told it chose wrong) instead of an ``unsupported_language`` error."""

    start: Start
    language_fallback: bool = False


@dataclass(frozen=True)
class Audio:
    """Caller audio, in the format the session was started with."""

    data: bytes


@dataclass(frozen=True)
class Reconfigure:
    """The caller's audio changed sample rate mid-call (AudioSocket kinds 0x10-0x18)."""

    old_rate: int
    rate: int


@dataclass(frozen=True)
class CallId:
    """The carrier's id of the call (Twilio callSid, AudioSocket UUID); None where it is not a usable string."""

    call_id: str | None


@dataclass(frozen=True)
class Hangup:
    """The caller's side is over (Twilio ``stop``, AudioSocket hangup, error or end of stream):
    no more input; the session ends (``caller_hangup``) and nothing more is heard."""

    detail: str | None = None
    """What the carrier reported (AudioSocket error kind 0xff: its payload in hex)."""


@dataclass(frozen=True)
class Refuse:
    """Close the call before the session starts (a Twilio stream secret missing or wrong)."""

    code: int
    reason: str
    refused: str
    """The ``dauys_sessions_refused_total`` reason."""


Input = CallStart | Audio | Reconfigure | CallId | Hangup | Refuse | Text | Dtmf | End | ProtocolError


class Codec:
    """The interface (and the defaults) every carrier's codec follows."""

    transport = "native"
    """The ``dauys_sessions_total{transport}`` label and Session.transport."""
    reports_errors = False
    """Does the carrier have an error message? (Only the native protocol: ``error`` events.)
    Where it has none, protocol errors are still counted in ``dauys_errors_total``."""
    pace_s: float | None = None
    """Outgoing audio is paced by the runner's writer, one message every ``pace_s`` s (AudioSocket)."""
    pace_lead_s = 0.0
    """How far ahead of real time paced audio may go out (what the carrier buffers against network
    jitter; only where it can take it back at a barge-in with a clear command)."""
    call_id: str | None = None

    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        """Is this message above the server's frame limit (then ``frame_too_large``, close 1009)?"""
        return False

    def timed(self, message: str | bytes) -> bool:
        """Is this outgoing message media (one slot of the pacer's clock), not a control message?"""
        return True

    input_over = False
    """Nothing more is read from the carrier (after its goodbye, an error it reported, a refused start)."""

    def decode(self, message: str | bytes) -> list[Input]:
        """The inputs of one carrier message; a message the protocol does not allow comes back as a
        ProtocolError in its place (``decode`` never raises), nothing once ``input_over``."""
        if self.input_over:
            return []
        try:
            return self._decode(message)
        except ProtocolError as e:
            return [e]

    def _decode(self, message: str | bytes) -> list[Input]:
        """The inputs of one message; raises ProtocolError for one the protocol does not allow."""
        raise NotImplementedError

    def eof(self) -> list[Input]:
        """The connection ended without the carrier's goodbye: what that means to the session."""
        return []

    def encode(self, item) -> list[str | bytes]:
        raise NotImplementedError

    def flush(self) -> list[str | bytes]:
        """The session's output is over: what is still held back."""
        return []

    def drop_audio(self) -> None:
        """Barge-in: forget reply audio held back (not yet encoded into messages)."""

    def hangup(self) -> bytes | None:
        """The carrier's own goodbye, sent last when the server ends the call (AudioSocket 0x00)."""
        return None

    @property
    def awaiting_playback(self) -> bool:
        """Audio sent but not yet confirmed played by the carrier (Twilio marks outstanding)."""
        return False


def json_object(message: str | bytes, carrier: str) -> dict:
    """A carrier's JSON control message as a dict; ProtocolError otherwise (``invalid_message`` for
    a binary frame where the carrier sends text only, ``invalid_json`` for anything not an object)."""
    if isinstance(message, bytes):
        raise ProtocolError("invalid_message", f"{carrier}: text frames only")
    try:
        msg = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
        raise ProtocolError("invalid_json", "not JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_json", "not a JSON object")
    return msg


def dtmf_input(digit, what: str = "dtmf") -> list[Input]:
    """A keypad digit as the carrier reported it: one character, else ``invalid_message``."""
    if isinstance(digit, str) and len(digit) == 1:
        return [Dtmf(digit)]
    return [ProtocolError("invalid_message", f"{what} without a digit")]


def call_language(value, default: str) -> str:
    """A language the carrier passed for the call (a custom parameter or header), else ``default``."""
    return value.lower() if isinstance(value, str) and 0 < len(value) <= 16 else default


SILENCE = {"ulaw": b"\xff", "alaw": b"\xd5", "slin": b"\x00"}
"""One byte of silence in each phone encoding (G.711 mu-law and A-law zero, 16-bit PCM's zero bytes)."""


class PhoneCodec(Codec):
    """What the phone carriers share: reply audio cut into messages of exactly ``frame_bytes`` (20 ms)
    with the remainder carried to the next piece, the reply's last piece padded with silence (or sent
    short where the carrier takes any length), A-law transcoded at the edge, the barge-in clear and the
    reply-end messages, and a closed connection taken as the caller's hangup.

    A subclass says how a piece of audio travels (:meth:`media`), what a barge-in sends (:meth:`clear`)
    and what follows a reply's last piece (:meth:`reply_end`)."""

    frame_bytes = 160
    """20 ms of the call's outgoing audio in its encoding (set when the call starts)."""
    kind = "ulaw"
    """The call's encoding on the wire: ``ulaw``, ``alaw`` (transcoded at the edge) or ``slin``."""
    pad_last = True
    """The reply's last piece is padded with silence to a whole frame (False: sent as it is)."""

    def __init__(self) -> None:
        self._carry = b""

    # ------------------------------------------------------------------ in
    def incoming(self, data: bytes) -> Audio:
        """Caller audio as the session hears it: A-law becomes 16-bit PCM here, the rest is as sent."""
        return Audio(alaw_decode(data).astype("<i2").tobytes() if self.kind == "alaw" else data)

    def eof(self) -> list[Input]:
        """The connection closed without the carrier's goodbye: the caller hung up."""
        if self.input_over:
            return []
        self.input_over = True
        return [Hangup()]

    # ------------------------------------------------------------------ out
    def media(self, payload: bytes) -> str | bytes:
        """One piece of reply audio as the carrier's message."""
        raise NotImplementedError

    def clear(self) -> list[str | bytes]:
        """Barge-in: the messages that make the carrier drop the audio it still has queued."""
        return []

    def reply_end(self, reply_id: str) -> list[str | bytes]:
        """What follows a reply's last piece (a playback mark)."""
        return []

    def frames(self, data: bytes) -> list[bytes]:
        """Reply audio (16-bit PCM for A-law calls, else in the call's encoding) in whole frames; the rest waits."""
        if self.kind == "alaw":
            data = alaw_encode(np.frombuffer(data[: len(data) // 2 * 2], "<i2"))
        data = self._carry + data
        n = len(data) // self.frame_bytes * self.frame_bytes
        self._carry = data[n:]
        return [data[off : off + self.frame_bytes] for off in range(0, n, self.frame_bytes)]

    def tail(self) -> list[str | bytes]:
        """The reply's last piece, padded to a whole frame (``pad_last``)."""
        if not self._carry:
            return []
        last, self._carry = self._carry, b""
        if self.pad_last:
            last += SILENCE[self.kind] * (self.frame_bytes - len(last))
        return [self.media(last)]

    def encode(self, item) -> list[str | bytes]:
        if isinstance(item, AudioFrame):
            return [self.media(f) for f in self.frames(item.data)]
        if isinstance(item, AudioEnd):
            if item.interrupted:
                self.drop_audio()
                return self.clear()
            return self.tail() + self.reply_end(item.reply_id)
        return []  # the other events have no message on a phone carrier (errors are counted; a handoff hangs up)

    def flush(self) -> list[str | bytes]:
        return self.tail()

    def drop_audio(self) -> None:
        self._carry = b""


MARK_PREFIX = "dauys-ai:"
"""Playback mark names: ``dauys-ai:<reply_id>`` (the AI marking travels in the mark name)."""


class PlaybackMarks:
    """Marks a carrier plays back (Twilio ``mark``, Telnyx ``mark``, Vonage ``notify``): one
    ``dauys-ai:<reply_id>`` after each reply; those not come back at a barge-in's clear count as not heard."""

    def init_marks(self) -> None:
        self.pending_marks: dict[str, float] = {}
        """Marks sent and not yet come back: name -> time.monotonic() when sent."""
        self.heard: list[str] = []
        self.not_heard: list[str] = []

    @property
    def awaiting_playback(self) -> bool:
        return bool(self.pending_marks)

    def mark_sent(self, reply_id: str) -> str:
        name = MARK_PREFIX + reply_id
        self.pending_marks[name] = time.monotonic()
        return name

    def mark_played(self, name) -> None:
        if isinstance(name, str) and self.pending_marks.pop(name, None) is not None:
            self.heard.append(name)

    def marks_cleared(self) -> None:
        self.not_heard.extend(self.pending_marks)
        self.pending_marks.clear()


# ------------------------------------------------------------------------------------ native
class NativeCodec(Codec):
    """The native /v1/voice protocol (PROTOCOL.md): JSON text frames and binary audio frames."""

    transport = "native"
    reports_errors = True

    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8", "surrogatepass"))
        return size > max_frame_bytes

    def _decode(self, message: str | bytes) -> list[Input]:
        if isinstance(message, bytes):
            return [Audio(message)]
        msg = parse_client_message(message)
        return [CallStart(msg)] if isinstance(msg, Start) else [msg]

    def encode(self, item) -> list[str | bytes]:
        if isinstance(item, AudioFrame):
            return [item.data]
        if isinstance(item, ServerEvent):
            return [item.to_json()]
        return []


# ------------------------------------------------------------------------------------ Twilio
class TwilioCodec(PlaybackMarks, PhoneCodec):
    """Twilio Media Streams, bidirectional (also SignalWire, Fonoster).

    In: ``connected``, ``start`` (``customParameters.language``; ``customParameters.secret``
    must equal ``stream_secret`` when one is set), ``media`` (base64 mu-law 8 kHz), ``dtmf``,
    ``mark`` (playback reached a reply's end), ``stop``.  Out: ``media`` in 20 ms pieces on the
    runner's clock (up to ``pace_lead_s`` ahead), ``mark`` ``dauys-ai:<reply_id>`` after each
    reply, ``clear`` on barge-in (marks not acknowledged then count as not heard).  Twilio has no
    error message: errors are only counted.
    """

    transport = "twilio"
    pace_s = 0.020
    pace_lead_s = 0.2
    """Twilio keeps 200 ms in its buffer against internet jitter; ``clear`` takes it back at a barge-in."""
    pad_last = False
    """Twilio takes a media message of any length: the reply's last piece is not padded."""

    def __init__(self, stream_secret: str = "") -> None:
        super().__init__()
        self.init_marks()
        self.stream_secret = stream_secret
        self.stream_sid: str | None = None
        self.call_sid = None
        """As Twilio sent it (logged); CallId carries it only when it is a string."""

    @property
    def call_id(self):
        return self.call_sid

    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        return len(message) > max_frame_bytes * 2  # base64 and JSON around the audio

    def _decode(self, message: str | bytes) -> list[Input]:
        msg = json_object(message, "Twilio media streams")
        event = msg.get("event")
        if event == "connected":
            return []
        if event == "start":
            return self._start(msg)
        if event == "media":
            media = msg.get("media") or {}
            if not isinstance(media, dict) or media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return []
            try:
                data = base64.b64decode(media.get("payload", ""), validate=True)
            except (ValueError, TypeError):
                raise ProtocolError("invalid_message", "media.payload is not base64") from None
            return [Audio(data)]
        if event == "dtmf":
            digit = str((msg.get("dtmf") or {}).get("digit", "")) if isinstance(msg.get("dtmf"), dict) else ""
            return [Dtmf(digit)]
        if event == "mark":
            mark = msg.get("mark") or {}
            if isinstance(mark, dict):
                self.mark_played(str(mark.get("name", "")))
            return []
        if event == "stop":
            return [Hangup()]
        raise ProtocolError("unknown_type", f"unknown Twilio event {event!r}")

    def _start(self, msg: dict) -> list[Input]:
        start = msg.get("start") or {}
        if not isinstance(start, dict):
            raise ProtocolError("invalid_message", "start must be an object")
        self.stream_sid = msg.get("streamSid") or start.get("streamSid")
        self.call_sid = start.get("callSid")
        out: list[Input] = [CallId(self.call_sid if isinstance(self.call_sid, str) else None)]  # in the handoff record
        params = start.get("customParameters") or {}
        if not stream_secret_ok(params, self.stream_secret):
            # before any audio: the session never starts, no media is processed
            return out + [Refuse(1008, "stream secret missing or wrong", "auth")]
        language = str(params.get("language", "auto")).lower() if isinstance(params, dict) else "auto"
        consent = str(params.get("consent", "")).lower() if isinstance(params, dict) else ""
        consent = consent if consent in ("granted", "refused", "ask") else None  # <Parameter name="consent" value="granted"/>
        fmt = start.get("mediaFormat") or {}
        rate = fmt.get("sampleRate", 8000) if isinstance(fmt, dict) else 8000
        rate = int(rate) if isinstance(rate, str) and rate.isascii() and rate.isdigit() and len(rate) < 7 else rate  # "²".isdigit() too
        if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
            rate = 8000  # Twilio sends 8000; a hostile value must not reach the resampler
        enc = Encoding.MULAW if not isinstance(fmt, dict) or "mulaw" in str(fmt.get("encoding", "audio/x-mulaw")) else Encoding.PCM_S16LE
        self.kind = "ulaw" if enc is Encoding.MULAW else "slin"
        audio = AudioFormat(enc, rate, 1)
        self.frame_bytes = int(rate * 0.020) * enc.sample_width
        return out + [CallStart(Start(audio, audio, language, keypad=True, consent=consent), language_fallback=True)]

    def timed(self, message: str | bytes) -> bool:
        return isinstance(message, str) and message.startswith('{"event": "media"')

    def media(self, payload: bytes) -> str:
        return json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": base64.b64encode(payload).decode()}})

    def encode(self, item) -> list[str | bytes]:
        if isinstance(item, AudioFrame) and not self.stream_sid:
            return []  # no stream to play it on
        return super().encode(item)

    def tail(self) -> list[str | bytes]:
        return super().tail() if self.stream_sid else []

    def clear(self) -> list[str | bytes]:
        self.marks_cleared()
        return [json.dumps({"event": "clear", "streamSid": self.stream_sid})]

    def reply_end(self, reply_id: str) -> list[str | bytes]:
        return [json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": self.mark_sent(reply_id)}})]

    def eof(self) -> list[Input]:
        return []  # Twilio's goodbye is ``stop``; a dropped stream closes the session as it is


# ------------------------------------------------------------------------------------ AudioSocket
KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10
KIND_ERROR = 0xFF
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
FRAME_BYTES = 320
"""Outgoing audio frames: exactly 20 ms of 8 kHz signed-linear audio."""
FRAME_S = 0.020


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket frame: kind, 2-byte big-endian length, payload."""
    return struct.pack(">BH", kind, len(payload)) + payload


class AudioSocketCodec(PhoneCodec):
    """Asterisk AudioSocket (TCP): 1 byte kind, 2 bytes big-endian length, payload.

    In: 0x00 hangup, 0x01 call UUID (16 bytes), 0x03 DTMF digit (ASCII), 0x10 signed linear
    16-bit 8 kHz audio, 0x11-0x18 the same at 12 to 192 kHz, 0xff error; other kinds are
    ``invalid_message``.  The session starts with the first audio frame, at its rate.  Out:
    reply audio as 0x10 frames of exactly 320 bytes (paced by the runner every 20 ms), and
    0x00 when the server hangs up.  AudioSocket has no error message: errors are only counted.
    """

    transport = "audiosocket"
    pace_s = FRAME_S
    kind = "slin"
    frame_bytes = FRAME_BYTES

    def __init__(self, language: str = "auto", consent: str | None = None) -> None:
        super().__init__()
        self.language = language
        self.consent = consent if consent in ("granted", "refused", "ask") else None
        """Recording consent of every call (server.audiosocket_consent; the protocol cannot carry one)."""
        self.call_id: str | None = None
        self.rate: int | None = None
        self._buf = bytearray()

    def _decode(self, message: str | bytes) -> list[Input]:  # after a hangup or error frame nothing more is read
        if isinstance(message, str):
            raise ProtocolError("invalid_message", "AudioSocket is a byte stream")
        self._buf += message
        out: list[Input] = []
        off = 0
        buf = self._buf
        while len(buf) - off >= 3 and not self.input_over:
            kind, length = struct.unpack_from(">BH", buf, off)
            if len(buf) - off - 3 < length:
                break
            payload = bytes(buf[off + 3 : off + 3 + length])
            off += 3 + length
            out += self._frame(kind, payload)
        del buf[:off]
        if self.input_over:
            buf.clear()
        return out

    def eof(self) -> list[Input]:
        """The connection closed (maybe mid-frame): the caller hung up."""
        self._buf.clear()
        return super().eof()

    def _frame(self, kind: int, payload: bytes) -> list[Input]:
        if kind == KIND_UUID:
            self.call_id = str(uuid.UUID(bytes=payload)) if len(payload) == 16 else payload.hex()
            return [CallId(self.call_id)]
        if kind in AUDIO_RATES:
            rate = AUDIO_RATES[kind]
            out: list[Input] = []
            if self.rate is None:
                fmt = AudioFormat(Encoding.PCM_S16LE, rate, 1)
                out.append(CallStart(Start(fmt, AudioFormat(Encoding.PCM_S16LE, 8000, 1), self.language, keypad=True, consent=self.consent)))
            elif rate != self.rate:
                out.append(Reconfigure(self.rate, rate))
            self.rate = rate
            out.append(Audio(payload))
            return out
        if kind == KIND_DTMF:
            return [Dtmf(payload[:1].decode("ascii", "replace"))]
        if kind == KIND_HANGUP:
            self.input_over = True
            return [Hangup()]
        if kind == KIND_ERROR:
            self.input_over = True
            return [Hangup(payload.hex() or "-")]
        return [ProtocolError("invalid_message", f"unknown AudioSocket frame kind 0x{kind:02x}")]

    def media(self, payload: bytes) -> bytes:
        return frame(KIND_AUDIO, payload)

    def hangup(self) -> bytes | None:
        return frame(KIND_HANGUP)
