"""FreeSWITCH ``mod_audio_stream`` (WebSocket): /v1/freeswitch; the call is moved with the event socket (ESL).

Why mod_audio_stream (amigniter/mod_audio_stream) and not mod_audio_fork:
mod_audio_fork (drachtio-freeswitch-modules) has seen few changes since
jambonz moved to its own fork, needs libwebsockets built into FreeSWITCH, and
plays returned audio only as files through events; mod_audio_stream is
maintained (releases through 2025), builds against the stock
``libfreeswitch-dev``, and from v1.0.3 plays audio sent back on the WebSocket
as it arrives (full duplex), which a voice agent needs.

The dialplan starts the stream when the call is answered and parks it:

    uuid_audio_stream <uuid> start ws://dauys:8765/v1/freeswitch?token=KEY mono 16k {"uuid":"<uuid>","language":"kk"}

Wire format (mod_audio_stream's README; Dauys's own text messages marked *):

* in, TEXT: the ``metadata`` of ``start``, sent before any audio: Dauys reads
  it as JSON ``{"uuid", "language"?, "secret"?, "rate"?}`` (*); DTMF, which
  the module does not forward itself, arrives through the dialplan's
  ``bind_digit_action`` running ``uuid_audio_stream <uuid> send_text
  {"dtmf":"0"}`` (or ``{"event":"dtmf","digit":"0"}``) (*); ``stop``'s metadata may be
  ``{"event":"stop"}`` (*).  Anything else is ``unknown_type``.
* in, BINARY: the caller's audio, L16 mono at the ``start`` rate (8k or 16k;
  the query parameter ``rate`` or the metadata's ``rate`` tells Dauys which).
  The WebSocket closing is the caller's hangup (the media bug ends with the call).
* out, TEXT: reply audio as ``{"type":"streamAudio","data":{"audioDataType":
  "raw","sampleRate":R,"audioData":"<base64 L16>"}}`` in 20 ms pieces paced on
  the runner's clock (:class:`server.transport.Pacer`), so a barge-in leaves
  at most a few frames to play (the module has no documented clear command).

At a handoff Dauys sends ``api uuid_transfer <uuid> <transfer.freeswitch_dest>``
over the event socket (``transfer.freeswitch_esl_host``/``port``, the password
from the environment), after ``uuid_setvar <uuid> dauys_summary <summary>``;
at any other end of the call it sends ``uuid_kill <uuid>`` (the parked call
would otherwise wait): server/transfer.py, :class:`FreeSwitchTransfer`.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

from models.audio import Encoding
from pipeline.errors import ProtocolError
from pipeline.events import AudioFormat, Start
from server.codecs import Audio, CallId, CallStart, Hangup, Input, PhoneCodec, Refuse, call_language, dtmf_input, json_object
from server.transport import CallRunner, WebSocketLink
from server.twilio_auth import stream_secret_ok

FRAME_S = 0.020
RATES = (8000, 16000)


def _uuid(value) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        return value
    return None


class FreeSwitchCodec(PhoneCodec):
    """FreeSWITCH mod_audio_stream (see the module docstring)."""

    transport = "freeswitch"
    pace_s = FRAME_S
    kind = "slin"

    def __init__(self, language: str = "auto", rate: int = 8000, secret: str = "") -> None:
        super().__init__()
        self.language = language
        self.rate = rate if rate in RATES else 8000
        self.secret = secret
        self.call_id: str | None = None
        """The FreeSWITCH channel's uuid (from the start metadata): what uuid_transfer moves."""
        self._started = False

    @property
    def frame_bytes(self) -> int:
        return int(self.rate * FRAME_S) * 2

    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        return len(message) > max_frame_bytes

    def _decode(self, message: str | bytes) -> list[Input]:
        if isinstance(message, bytes):
            if not self._started:  # no metadata: start at the URL's rate, without a uuid
                out = self._start({})
                return out if self.input_over else out + [Audio(message)]
            return [Audio(message)]
        msg = json_object(message, "mod_audio_stream")
        event = msg.get("event")
        if event is None and "dtmf" in msg:  # {"dtmf": "0"}: the comma-free form bind_digit_action can send
            event, msg = "dtmf", {"digit": msg["dtmf"]}
        if event == "dtmf":
            return dtmf_input(msg.get("digit"))
        if event == "stop":
            return [Hangup()]
        if event in (None, "start") and not self._started:
            return self._start(msg)
        if event in (None, "start"):
            raise ProtocolError("already_started", "the start metadata came twice")
        raise ProtocolError("unknown_type", f"unknown event {str(event)[:40]!r}")

    def _start(self, meta: dict) -> list[Input]:
        self._started = True
        self.call_id = _uuid(meta.get("uuid"))
        out: list[Input] = [CallId(self.call_id)]
        if not stream_secret_ok(meta, self.secret):
            self.input_over = True
            return out + [Refuse(1008, "stream secret missing or wrong", "auth")]
        rate = meta.get("rate")
        if rate in RATES and not isinstance(rate, bool):
            self.rate = rate
        language = call_language(meta.get("language"), self.language)
        fmt = AudioFormat(Encoding.PCM_S16LE, self.rate, 1)
        return out + [CallStart(Start(fmt, fmt, language, keypad=True), language_fallback=True)]

    def media(self, payload: bytes) -> str:
        return json.dumps({"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": self.rate, "audioData": base64.b64encode(payload).decode()}})


async def handle_freeswitch(ws, services, settings, registry: dict | None = None, transfer=None) -> None:
    """One mod_audio_stream call on an accepted WebSocket (/v1/freeswitch)."""
    query = parse_qs(urlsplit(ws.request.path).query)
    rate = (query.get("rate") or ["8000"])[0]
    rate = int(rate) if rate.isascii() and rate.isdigit() and len(rate) < 6 else 8000
    language = (query.get("language") or [settings.carriers.language])[0].lower()
    codec = FreeSwitchCodec(language, rate, settings.carriers.freeswitch_secret.get_secret_value())
    link = WebSocketLink(ws, settings.server.send_timeout_s)
    await CallRunner(link, codec, services, settings, registry, transfer=transfer).run()
