"""Asterisk ``chan_websocket`` (media over WebSocket; Asterisk 20.16, 21.11, 22.6, 23.0 and later): /v1/asterisk.

Asterisk dials the channel ``WebSocket/<connection>/c(<codec>)`` (a client named
in ``websocket_client.conf`` whose ``uri`` is ``ws[s]://HOST/v1/asterisk``) or an
ARI application creates it with ``/channels/externalMedia?transport=websocket&
encapsulation=none``; either way Asterisk connects to Dauys.  The wire format
(docs.asterisk.org, *Channel Drivers / WebSocket*):

* BINARY frames: raw media in the channel's codec, both ways (``ulaw``,
  ``alaw``, ``slin`` at 8 kHz, ``slin12`` ... ``slin48``).
* TEXT frames from Asterisk (events), plain text ``MEDIA_START
  connection_id:X channel:Y channel_id:Z format:ulaw optimal_frame_size:160
  ptime:20`` or, with ``control_msg_format = json`` (chan_websocket.conf or
  the dial string's ``f(json)``), ``{"event": "MEDIA_START", ...,
  "channel_variables": {...}}``.  Also ``DTMF_END digit:5``, ``MEDIA_XOFF``,
  ``MEDIA_XON``, ``QUEUE_DRAINED``, ``STATUS``, ``MEDIA_BUFFERING_COMPLETED``,
  ``MEDIA_MARK_PROCESSED``, ``ERROR``.  Asterisk closing the WebSocket is the
  caller's hangup.
* TEXT frames to Asterisk (commands), in the format Asterisk used for
  ``MEDIA_START``: ``FLUSH_MEDIA`` (barge-in: Asterisk drops what it has
  queued), ``REPORT_QUEUE_DRAINED`` (sent after the last audio: the call
  closes once ``QUEUE_DRAINED`` says it has played) and ``HANGUP``.

Outgoing audio goes as frames of exactly ``optimal_frame_size`` bytes (20 ms)
through the runner's :class:`server.transport.Pacer`, so Asterisk's queue
holds only a few frames (Asterisk re-times media itself, but a queue of
seconds would make barge-in late and XOFF likely).  DTMF 0 asks for the
operator; a handoff ends the leg with ``HANGUP`` after the handoff message
has played, having first set the transfer variable on the caller's channel
through ARI when ``transfer.asterisk_ari_url`` is set (server/transfer.py),
so the dialplan continues after ``Dial()`` to the queue.

chan_websocket has no command that sets a channel variable, so the caller's
channel id travels to Dauys in the URL (``v(caller=${UNIQUEID})`` in the
dial string) or, with JSON events, as an inherited channel variable
(``Set(__DAUYS_CALLER=${UNIQUEID})`` before ``Dial()``), listed in
``MEDIA_START``'s ``channel_variables``.

Admission is /v1/voice's: an API key (``v(token=KEY)`` in the dial string,
since ``websocket_client.conf`` cannot send a bearer header) or a loopback peer.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from models.audio import Encoding
from pipeline.errors import ProtocolError
from pipeline.events import AudioFormat, Start
from pipeline.replies import AudioFrame
from server.codecs import CallId, CallStart, Input, PhoneCodec, dtmf_input
from server.transport import CallRunner, WebSocketLink

FRAME_S = 0.020
CALLER_PARAMETER = "caller"
"""The URL query parameter (dial string ``v(caller=${UNIQUEID})``) naming the caller's channel id."""
CALLER_VARIABLE = "DAUYS_CALLER"
"""The inherited channel variable (``Set(__DAUYS_CALLER=${UNIQUEID})``) naming it in JSON ``MEDIA_START``."""

FORMATS: dict[str, tuple[str, int]] = {
    "ulaw": ("ulaw", 8000), "alaw": ("alaw", 8000), "slin": ("slin", 8000), "slin12": ("slin", 12000),
    "slin16": ("slin", 16000), "slin24": ("slin", 24000), "slin32": ("slin", 32000), "slin44": ("slin", 44100), "slin48": ("slin", 48000),
}
"""chan_websocket format names Dauys takes -> (kind, sample rate)."""
IGNORED_EVENTS = {"MEDIA_XON", "MEDIA_XOFF", "STATUS", "MEDIA_BUFFERING_COMPLETED", "MEDIA_MARK_PROCESSED"}
MAX_ID_CHARS = 128


def _plain_fields(text: str) -> tuple[str, dict[str, str]]:
    """``EVENT key:value key:value`` -> (EVENT, {key: value}); values run to the next space."""
    head, _, rest = text.strip().partition(" ")
    fields = {}
    for part in rest.split():
        key, sep, value = part.partition(":")
        if sep:
            fields[key] = value
    return head, fields


def _short_id(value) -> str | None:
    """A usable identifier (a string of printable ASCII, bounded), else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and value.isascii() and value.isprintable() and " " not in value:
        return value
    return None


class AsteriskWebSocketCodec(PhoneCodec):
    """Asterisk chan_websocket media (see the module docstring)."""

    transport = "asterisk_ws"
    pace_s = FRAME_S
    pace_lead_s = 0.06
    """Sent this far ahead of real time: the platform's buffer against jitter, emptied by its clear command at a barge-in."""

    def timed(self, message: str | bytes) -> bool:
        return isinstance(message, bytes)

    def __init__(self, language: str = "auto", caller_channel: str | None = None) -> None:
        super().__init__()
        self.language = language
        self.call_id: str | None = None
        """The WebSocket channel's id (Asterisk's ``channel_id``, else the ``connection_id``)."""
        self.caller_channel = _short_id(caller_channel)
        """The caller's channel id, where the dialplan passed it: the channel the transfer variable is set on."""
        self.json = False
        """Asterisk speaks JSON control messages (chan_websocket.conf ``control_msg_format = json``)."""
        self.rate = 8000
        self._started = False
        self._buffering = False
        self.pending_drain = False
        """REPORT_QUEUE_DRAINED sent, QUEUE_DRAINED not yet back: the last audio is still playing."""

    # ------------------------------------------------------------------ in
    def too_large(self, message: str | bytes, max_frame_bytes: int) -> bool:
        return len(message) > max_frame_bytes

    def _decode(self, message: str | bytes) -> list[Input]:
        if isinstance(message, bytes):
            if not self._started:
                raise ProtocolError("invalid_message", "media before MEDIA_START")
            return [self.incoming(message)]  # A-law transcoded at the edge: the session hears 16-bit PCM
        text = message.strip()
        if text.startswith("{"):
            try:
                msg = json.loads(text)
            except (ValueError, RecursionError):
                raise ProtocolError("invalid_json", "not JSON") from None
            if not isinstance(msg, dict):
                raise ProtocolError("invalid_json", "not a JSON object")
            event, fields = msg.get("event"), msg
            if not isinstance(event, str):
                raise ProtocolError("invalid_message", "event must be a string")
            is_json = True
        else:
            event, fields = _plain_fields(text)
            is_json = False
        if event == "MEDIA_START":
            return self._start(fields, is_json)
        if event == "DTMF_END":
            return dtmf_input(fields.get("digit"), "DTMF_END")
        if event == "QUEUE_DRAINED":
            self.pending_drain = False
            return []
        if event in IGNORED_EVENTS:
            return []
        if event == "ERROR":
            return [ProtocolError("invalid_message", "Asterisk reported an error to a command")]
        raise ProtocolError("unknown_type", f"unknown chan_websocket event {event[:40]!r}")

    def _start(self, fields: dict, is_json: bool) -> list[Input]:
        if self._started:
            raise ProtocolError("already_started", "MEDIA_START came twice")
        fmt = fields.get("format")
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise ProtocolError("unsupported_encoding", f"chan_websocket format {str(fmt)[:20]!r} is not one of {', '.join(FORMATS)}")
        self.json = is_json
        self.kind, self.rate = FORMATS[fmt]
        width = 1 if self.kind in ("ulaw", "alaw") else 2
        self.frame_bytes = int(self.rate * FRAME_S) * width
        size = fields.get("optimal_frame_size")
        size = int(size) if isinstance(size, str) and size.isascii() and size.isdigit() and len(size) < 6 else size
        # Asterisk cuts each message into optimal_frame_size frames and drops a remainder; where its
        # frame is not our 20 ms (another ptime), media buffering keeps remainders across messages
        self._buffering = isinstance(size, int) and not isinstance(size, bool) and size != self.frame_bytes
        self.call_id = _short_id(fields.get("channel_id")) or _short_id(fields.get("connection_id"))
        variables = fields.get("channel_variables") if is_json else None
        if self.caller_channel is None and isinstance(variables, dict):
            self.caller_channel = _short_id(variables.get(CALLER_VARIABLE))
        self._started = True
        if self.kind == "ulaw":
            audio = AudioFormat(Encoding.MULAW, 8000, 1)
        else:  # slin at its rate; alaw is transcoded to slin at the edge
            audio = AudioFormat(Encoding.PCM_S16LE, self.rate, 1)
        return [CallId(self.call_id), CallStart(Start(audio, audio, self.language, keypad=True), language_fallback=True)]

    # ------------------------------------------------------------------ out
    def command(self, name: str) -> str:
        """A chan_websocket command in the format Asterisk speaks on this connection."""
        return json.dumps({"command": name}) if self.json else name

    @property
    def awaiting_playback(self) -> bool:
        return self.pending_drain

    def media(self, payload: bytes) -> bytes:
        return payload  # binary media frames of exactly 20 ms

    def encode(self, item) -> list[str | bytes]:
        out = super().encode(item)
        if out and self._buffering and isinstance(item, AudioFrame):  # another ptime: Asterisk keeps remainders
            self._buffering = False
            out.insert(0, self.command("START_MEDIA_BUFFERING"))
        return out

    def clear(self) -> list[str | bytes]:
        return [self.command("FLUSH_MEDIA")]  # Asterisk drops what it still has queued

    def flush(self) -> list[str | bytes]:
        """The output is over: the tail, then ask Asterisk to say when it has played everything."""
        out = self.tail()
        if self._started:
            self.pending_drain = True
            out.append(self.command("REPORT_QUEUE_DRAINED"))
        return out

    def hangup(self) -> str | None:
        return self.command("HANGUP") if self._started else None


async def handle_asterisk_ws(ws, services, settings, registry: dict | None = None, transfer=None) -> None:
    """One chan_websocket call on an accepted WebSocket (/v1/asterisk)."""
    query = parse_qs(urlsplit(ws.request.path).query)
    language = (query.get("language") or [settings.carriers.language])[0].lower()
    codec = AsteriskWebSocketCodec(language, (query.get(CALLER_PARAMETER) or [None])[0])
    link = WebSocketLink(ws, settings.server.send_timeout_s)
    await CallRunner(link, codec, services, settings, registry, transfer=transfer).run()
