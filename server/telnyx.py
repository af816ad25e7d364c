"""Telnyx Media Streaming (bidirectional, RTP mode): /v1/telnyx.

Call Control starts the stream (``streaming_start`` or ``stream_url`` on dial/answer) with
``stream_url=wss://HOST/v1/telnyx?token=KEY``, ``stream_track=inbound_track``,
``stream_bidirectional_mode=rtp`` and ``stream_bidirectional_codec`` equal to the stream's
codec (PCMU or PCMA, 8 kHz).  Wire format (Telnyx's AsyncAPI "Stream call media over WebSocket"):

* in: ``connected`` (with ``x-telnyx-streaming-auth-token`` when ``stream_auth_token`` was
  given; also sent as that upgrade header), ``start`` (top-level ``stream_id``;
  ``start.call_control_id``, ``start.custom_parameters``, ``start.media_format`` ``{encoding,
  sample_rate, channels}``), ``media`` (``media.track``, ``media.payload``: base64 RTP payload
  without headers), ``dtmf`` (the digit), ``mark`` (a mark Dauys sent has played), ``error``,
  ``stop``.
* out: ``media`` ``{"event": "media", "media": {"payload": ...}}`` in 20 ms pieces paced by the
  runner (:class:`server.transport.Pacer`), ``mark`` ``dauys-ai:<reply_id>`` after each reply,
  ``clear`` on barge-in (queued marks come back; those count as not heard).

When ``carriers.telnyx_stream_token`` is set, the token (header or ``connected`` field) must
equal it, else the stream is closed (1008) before any audio.  At a handoff, with
``transfer.telnyx_to`` set, the call is moved with Call Control's ``actions/transfer``
(server/transfer.py, :class:`TelnyxTransfer`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qs, urlsplit

from models.audio import Encoding
from pipeline.errors import ProtocolError
from pipeline.events import AudioFormat, Start
from server.codecs import CallId, CallStart, Hangup, Input, PhoneCodec, PlaybackMarks, Refuse, call_language, dtmf_input, json_object
from server.transport import CallRunner, WebSocketLink

FRAME_S = 0.020
TOKEN_FIELD = "x-telnyx-streaming-auth-token"
ENCODINGS = {"PCMU": "ulaw", "PCMA": "alaw"}


def token_ok(presented, expected: str) -> bool:
    if not expected:
        return True
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "replace")).digest(), hashlib.sha256(expected.encode()).digest())


class TelnyxCodec(PlaybackMarks, PhoneCodec):
    """Telnyx Media Streaming (see the module docstring)."""

    transport = "telnyx"
    pace_s = FRAME_S
    pace_lead_s = 0.1
    """Sent this far ahead of real time: the platform's buffer against jitter, emptied by its clear command at a barge-in."""

    def __init__(self, language: str = "auto", stream_token: str = "", header_token: str | None = None) -> None:
        super().__init__()
        self.init_marks()
        self.language = language
        self.stream_token = stream_token
        self.token = header_token
        """The streaming auth token presented (upgrade header, else the ``connected`` frame)."""
        self.stream_id: str | None = None
        self.call_control_id = None
        self._started = False

    @property
    def call_id(self):
        return self.call_control_id if isinstance(self.call_control_id, str) else None

    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        return len(message) > max_frame_bytes * 2

    def timed(self, message: str | bytes) -> bool:
        return isinstance(message, str) and message.startswith('{"event": "media"')

    def _decode(self, message: str | bytes) -> list[Input]:
        msg = json_object(message, "Telnyx media streams")
        event = msg.get("event")
        if event == "connected":
            if self.token is None and isinstance(msg.get(TOKEN_FIELD), str):
                self.token = msg[TOKEN_FIELD]
            return []
        if event == "start":
            return self._start(msg)
        if event == "media":
            media = msg.get("media")
            if not isinstance(media, dict) or media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return []
            if not self._started:
                raise ProtocolError("invalid_message", "media before start")
            try:
                data = base64.b64decode(media.get("payload", ""), validate=True)
            except (ValueError, TypeError):
                raise ProtocolError("invalid_message", "media.payload is not base64") from None
            return [self.incoming(data)]
        if event == "dtmf":
            holder = msg.get("dtmf") if isinstance(msg.get("dtmf"), dict) else msg.get("payload")
            return dtmf_input(holder.get("digit") if isinstance(holder, dict) else None)
        if event == "mark":
            mark = msg.get("mark")
            self.mark_played(mark.get("name") if isinstance(mark, dict) else None)
            return []
        if event == "error":
            return [ProtocolError("invalid_message", "Telnyx reported a streaming error")]
        if event == "stop":
            self.input_over = True
            return [Hangup()]
        raise ProtocolError("unknown_type", f"unknown Telnyx event {str(event)[:40]!r}")

    def _start(self, msg: dict) -> list[Input]:
        if self._started:
            raise ProtocolError("already_started", "start came twice")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise ProtocolError("invalid_message", "start must be an object")
        self._started = True
        self.stream_id = msg.get("stream_id") if isinstance(msg.get("stream_id"), str) else None
        self.call_control_id = start.get("call_control_id")
        out: list[Input] = [CallId(self.call_id)]
        if not token_ok(self.token, self.stream_token):
            self.input_over = True
            return out + [Refuse(1008, "streaming auth token missing or wrong", "auth")]
        fmt = start.get("media_format") if isinstance(start.get("media_format"), dict) else {}
        encoding, rate = fmt.get("encoding", "PCMU"), fmt.get("sample_rate", 8000)
        if encoding not in ENCODINGS or rate not in (8000, "8000"):
            self.input_over = True
            return out + [Refuse(1003, f"media format {str(encoding)[:10]}/{str(rate)[:6]} not supported: use PCMU or PCMA at 8 kHz", "unsupported_media")]
        self.kind = ENCODINGS[encoding]
        params = start.get("custom_parameters")
        language = call_language(params.get("language") if isinstance(params, dict) else None, self.language)
        audio = AudioFormat(Encoding.MULAW, 8000, 1) if self.kind == "ulaw" else AudioFormat(Encoding.PCM_S16LE, 8000, 1)
        return out + [CallStart(Start(audio, audio, language, keypad=True), language_fallback=True)]

    def media(self, payload: bytes) -> str:
        return json.dumps({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})

    def clear(self) -> list[str | bytes]:
        self.marks_cleared()  # queued marks come back; those count as not heard
        return [json.dumps({"event": "clear"})]

    def reply_end(self, reply_id: str) -> list[str | bytes]:
        return [json.dumps({"event": "mark", "mark": {"name": self.mark_sent(reply_id)}})]


async def handle_telnyx(ws, services, settings, registry: dict | None = None, transfer=None) -> None:
    """One Telnyx media stream on an accepted WebSocket (/v1/telnyx)."""
    values = ws.request.headers.get_all(TOKEN_FIELD)
    language = (parse_qs(urlsplit(ws.request.path).query).get("language") or [settings.carriers.language])[0].lower()
    codec = TelnyxCodec(language, settings.carriers.telnyx_stream_token.get_secret_value(), values[0] if len(values) == 1 else None)
    link = WebSocketLink(ws, settings.server.send_timeout_s)
    await CallRunner(link, codec, services, settings, registry, transfer=transfer).run()
