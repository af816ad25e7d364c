"""Vonage Voice API WebSocket (NCCO ``connect`` to a ``websocket`` endpoint, linear16): /v1/vonage.

The answer webhook returns an NCCO such as::

    [{"action": "connect", "endpoint": [{"type": "websocket",
      "uri": "wss://dauys.example.kz/v1/vonage?token=KEY",
      "content-type": "audio/l16;rate=16000",
      "headers": {"language": "kk", "call_uuid": "<the uuid of the answer webhook>", "secret": "..."}}]}]

Wire format (developer.vonage.com, *WebSockets in the Vonage Voice API*):

* in, TEXT: first ``{"event": "websocket:connected", "content-type":
  "audio/l16;rate=16000", ...the endpoint's headers}``; ``websocket:dtmf``
  ``{"digit": "5", "duration": ...}``; ``websocket:cleared`` (a ``clear``
  emptied the buffer); ``websocket:notify`` (a ``notify`` came due: audio sent
  before it has played).
* in, BINARY: caller audio, 16-bit signed little-endian PCM, mono, 8 or 16 kHz.
  Vonage closing the WebSocket is the caller's hangup.
* out, BINARY: reply audio in exactly 20 ms messages (320 or 640 bytes),
  paced by the runner (:class:`server.transport.Pacer`) since Vonage buffers
  only so many; TEXT ``{"action": "clear"}`` on barge-in, and ``{"action":
  "notify", "payload": {"mark": "dauys-ai:<reply_id>"}}`` after each reply
  (the mark comes back when it has played; unacknowledged marks at a clear
  count as not heard).

When ``carriers.vonage_secret`` is set, the connected message's ``secret``
header must equal it, else the leg is closed (1008) before any audio.  A
handoff ends the WebSocket leg once its message has played, so the NCCO goes
on with its next action (e.g. ``connect`` to the operators' number); the
call's ``call_uuid`` header goes into the handoff record.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from models.audio import Encoding
from pipeline.errors import ProtocolError
from pipeline.events import AudioFormat, Start
from server.codecs import Audio, CallId, CallStart, Input, PhoneCodec, PlaybackMarks, Refuse, call_language, dtmf_input, json_object
from server.transport import CallRunner, WebSocketLink
from server.twilio_auth import stream_secret_ok

FRAME_S = 0.020


def _rate(content_type) -> int | None:
    """``audio/l16;rate=16000`` -> 16000 (8000 and 16000 only)."""
    if not isinstance(content_type, str):
        return None
    kind, _, params = content_type.replace(" ", "").lower().partition(";")
    if kind != "audio/l16":
        return None
    for p in params.split(";"):
        if p in ("rate=8000", "rate=16000"):
            return int(p[5:])
    return None


class VonageCodec(PlaybackMarks, PhoneCodec):
    """The Vonage Voice API WebSocket (see the module docstring)."""

    transport = "vonage"
    pace_s = FRAME_S
    pace_lead_s = 0.1
    """Sent this far ahead of real time: the platform's buffer against jitter, emptied by its clear command at a barge-in."""
    kind = "slin"

    def __init__(self, language: str = "auto", secret: str = "") -> None:
        super().__init__()
        self.init_marks()
        self.language = language
        self.secret = secret
        self.call_id: str | None = None
        self.rate = 16000
        self._started = False

    @property
    def frame_bytes(self) -> int:
        return int(self.rate * FRAME_S) * 2

    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        return len(message) > max_frame_bytes

    def timed(self, message: str | bytes) -> bool:
        return isinstance(message, bytes)

    def _decode(self, message: str | bytes) -> list[Input]:
        if isinstance(message, bytes):
            if not self._started:
                raise ProtocolError("invalid_message", "audio before websocket:connected")
            return [Audio(message)]
        msg = json_object(message, "Vonage")
        event = msg.get("event")
        if event == "websocket:connected":
            return self._start(msg)
        if event == "websocket:dtmf":
            return dtmf_input(msg.get("digit"))
        if event == "websocket:notify":
            payload = msg.get("payload")
            self.mark_played(payload.get("mark") if isinstance(payload, dict) else None)
            return []
        if event == "websocket:cleared":
            return []
        raise ProtocolError("unknown_type", f"unknown Vonage event {str(event)[:40]!r}")

    def _start(self, msg: dict) -> list[Input]:
        if self._started:
            raise ProtocolError("already_started", "websocket:connected came twice")
        self._started = True
        call = msg.get("call_uuid")
        self.call_id = call if isinstance(call, str) and 0 < len(call) <= 128 and call.isascii() and call.isprintable() else None
        out: list[Input] = [CallId(self.call_id)]
        if not stream_secret_ok(msg, self.secret):
            self.input_over = True
            return out + [Refuse(1008, "secret header missing or wrong", "auth")]
        rate = _rate(msg.get("content-type"))
        if rate is None:
            self.input_over = True
            return out + [Refuse(1003, "content-type must be audio/l16;rate=8000 or 16000", "unsupported_media")]
        self.rate = rate
        language = call_language(msg.get("language"), self.language)
        fmt = AudioFormat(Encoding.PCM_S16LE, rate, 1)
        return out + [CallStart(Start(fmt, fmt, language, keypad=True), language_fallback=True)]

    def media(self, payload: bytes) -> bytes:
        return payload  # a binary message of exactly 20 ms

    def clear(self) -> list[str | bytes]:
        self.marks_cleared()
        return [json.dumps({"action": "clear"})]

    def reply_end(self, reply_id: str) -> list[str | bytes]:
        return [json.dumps({"action": "notify", "payload": {"mark": self.mark_sent(reply_id)}})]


async def handle_vonage(ws, services, settings, registry: dict | None = None, transfer=None) -> None:
    """One Vonage WebSocket leg (/v1/vonage)."""
    language = (parse_qs(urlsplit(ws.request.path).query).get("language") or [settings.carriers.language])[0].lower()
    codec = VonageCodec(language, settings.carriers.vonage_secret.get_secret_value())
    link = WebSocketLink(ws, settings.server.send_timeout_s)
    await CallRunner(link, codec, services, settings, registry, transfer=transfer).run()
