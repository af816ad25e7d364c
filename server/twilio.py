"""Twilio Media Streams, bidirectional (`<Connect><Stream url="wss://HOST/v1/twilio">`).

Inbound: ``connected``, ``start`` (``customParameters.language`` picks the
session language; ``customParameters.secret`` must equal ``twilio.stream_secret``
when that is set, else the stream closes with 1008 before any audio), ``media``
(base64 mu-law 8 kHz), ``dtmf`` (0 = operator), ``mark`` (playback reached a
reply's end), ``stop``. Who may connect at all: ``server/twilio_auth.py``.
Outbound: ``media`` with the reply audio, a ``mark`` named
``dauys-ai:<reply_id>`` after each reply (the AI marking travels in the mark
name), ``clear`` on barge-in (unacknowledged marks count as not heard).
A handoff waits until its message has played (its mark comes back), then
closes the stream, so the TwiML continues with the next verb (e.g. ``<Dial>``
to the operators' queue).  SignalWire and Fonoster speak the same messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from models.audio import MAX_RATE, MIN_RATE, Encoding
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, AudioFormat, AudioStart, ErrorEvent, Handoff, SessionEnd, Start, Transcript
from pipeline.replies import AudioFrame
from pipeline.session import Close, Session
from pipeline import metrics
from server import outgoing
from server.twilio_auth import SECRET_PARAMETER, stream_secret_ok

log = logging.getLogger("dauys.twilio")

MARK_PREFIX = "dauys-ai:"
MARK_WAIT_S = 15.0
"""Longest wait for Twilio to play out queued audio before a handoff closes the stream."""


class TwilioCall:
    def __init__(self, ws: ServerConnection, services, settings) -> None:
        self.ws = ws
        self.session = Session(services, transport="twilio")
        self.settings = settings
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.pending_marks: dict[str, float] = {}
        self.heard: list[str] = []
        self.not_heard: list[str] = []
        self._marks_clear = asyncio.Event()
        self._marks_clear.set()
        self.stopped = False
        """Twilio sent ``stop``: the stream is over and no mark will come back."""

    async def send(self, obj: dict) -> None:
        await outgoing.send(self.ws, json.dumps(obj), self.settings.server.send_timeout_s)

    async def writer(self) -> None:
        """Send audio, marks and clears; a peer that takes nothing for ``server.send_timeout_s``
        is cut off (1008 "slow consumer") without holding up other calls."""
        try:
            await self._write()
            return
        except outgoing.SlowConsumer:
            log.warning("call %s: slow consumer: took no output for %.1f s; cut off (1008)", self.call_sid, self.settings.server.send_timeout_s)
            metrics.ERRORS.labels("slow_consumer").inc()
            await outgoing.cut_off(self.ws)
        except ConnectionClosed:
            pass
        # keep the session's producers moving until the handler sees the closed connection
        while await self.session.outbox.get() is not None:
            pass

    async def _write(self) -> None:
        s = self.session
        while True:
            item = await s.outbox.get()
            if item is None or isinstance(item, Close):
                await self._wait_marks()
                await outgoing.close(self.ws, 1000 if item is None else item.code, "session ended")
                return
            if isinstance(item, AudioFrame):
                if item.reply_id not in s.responder.interrupted and self.stream_sid:
                    await self.send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": base64.b64encode(item.data).decode()}})
            elif isinstance(item, AudioStart):
                log.info("call %s: AI audio %s starts (ai_generated)", self.call_sid, item.reply_id)
            elif isinstance(item, AudioEnd):
                if item.interrupted:
                    await self.send({"event": "clear", "streamSid": self.stream_sid})
                    self.not_heard.extend(self.pending_marks)
                    self.pending_marks.clear()
                    self._marks_clear.set()
                    log.info("call %s: barge-in, cleared %s", self.call_sid, item.reply_id)
                else:
                    name = MARK_PREFIX + item.reply_id
                    self.pending_marks[name] = asyncio.get_running_loop().time()
                    self._marks_clear.clear()
                    await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            elif isinstance(item, Handoff):
                metrics.HANDOFFS.labels(item.reason).inc()
                log.info("call %s: handoff (%s)", self.call_sid, item.reason)
            elif isinstance(item, Transcript):
                metrics.TRANSCRIPTS.labels("final" if item.final else "partial", item.language).inc()
                if item.final:
                    log.info("call %s: final %s (%s)", self.call_sid, item.utterance_id, item.language)
            elif isinstance(item, ErrorEvent):
                metrics.ERRORS.labels(item.code).inc()
                log.warning("call %s: error %s", self.call_sid, item.code)
            elif isinstance(item, SessionEnd):
                log.info("call %s: session end (%s)", self.call_sid, item.reason)

    async def _wait_marks(self) -> None:
        """Let Twilio play what it has queued (a handoff message) before the stream closes."""
        if self.pending_marks and not self.stopped:
            try:
                await asyncio.wait_for(self._marks_clear.wait(), MARK_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("call %s: marks %s never came back", self.call_sid, list(self.pending_marks))

    def on_mark(self, name: str) -> None:
        if self.pending_marks.pop(name, None) is not None:
            self.heard.append(name)
        if not self.pending_marks:
            self._marks_clear.set()

    async def handle(self, message: str | bytes) -> bool:
        """One Twilio message; False when the stream is over."""
        if isinstance(message, bytes):
            raise ProtocolError("invalid_message", "Twilio media streams send text frames only")
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
            raise ProtocolError("invalid_json", "not JSON") from None
        if not isinstance(msg, dict):
            raise ProtocolError("invalid_json", "not a JSON object")
        event = msg.get("event")
        if event == "connected":
            return True
        if event == "start":
            start = msg.get("start") or {}
            if not isinstance(start, dict):
                raise ProtocolError("invalid_message", "start must be an object")
            self.stream_sid = msg.get("streamSid") or start.get("streamSid")
            self.call_sid = start.get("callSid")
            self.session.carrier_call_id = self.call_sid if isinstance(self.call_sid, str) else None  # in the handoff record
            params = start.get("customParameters") or {}
            if not stream_secret_ok(params, self.settings.twilio.stream_secret.get_secret_value()):
                # before any audio: the session never starts, no media is processed
                metrics.SESSIONS_REFUSED.labels("auth").inc()
                log.warning("call %s: customParameters.%s missing or wrong (twilio.stream_secret); closed (1008)", self.call_sid, SECRET_PARAMETER)
                await outgoing.close(self.ws, 1008, "stream secret missing or wrong")
                return False
            language = str(params.get("language", "auto")).lower() if isinstance(params, dict) else "auto"
            fmt = start.get("mediaFormat") or {}
            rate = fmt.get("sampleRate", 8000) if isinstance(fmt, dict) else 8000
            rate = int(rate) if isinstance(rate, str) and rate.isascii() and rate.isdigit() and len(rate) < 7 else rate  # "²".isdigit() too
            if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
                rate = 8000  # Twilio sends 8000; a hostile value must not reach the resampler
            enc = Encoding.MULAW if not isinstance(fmt, dict) or "mulaw" in str(fmt.get("encoding", "audio/x-mulaw")) else Encoding.PCM_S16LE
            try:
                await self.session.start(Start(AudioFormat(enc, rate, 1), AudioFormat(enc, rate, 1), language, keypad=True))
            except ProtocolError as e:
                if e.code != "unsupported_language":
                    raise
                log.warning("call %s: language %r not configured, using auto", self.call_sid, language)
                await self.session.start(Start(AudioFormat(enc, rate, 1), AudioFormat(enc, rate, 1), "auto", keypad=True))
            return True
        if event == "media":
            media = msg.get("media") or {}
            if not isinstance(media, dict) or media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return True
            try:
                data = base64.b64decode(media.get("payload", ""), validate=True)
            except (ValueError, TypeError):
                raise ProtocolError("invalid_message", "media.payload is not base64") from None
            await self.session.feed_audio(data)
            return True
        if event == "dtmf":
            digit = str((msg.get("dtmf") or {}).get("digit", "")) if isinstance(msg.get("dtmf"), dict) else ""
            log.info("call %s: dtmf", self.call_sid)
            self.session.dtmf(digit)
            return True
        if event == "mark":
            mark = msg.get("mark") or {}
            if isinstance(mark, dict):
                self.on_mark(str(mark.get("name", "")))
            return True
        if event == "stop":
            self.stopped = True
            await self.session.end("caller_hangup", abandon_reply=True)
            return False
        raise ProtocolError("unknown_type", f"unknown Twilio event {event!r}")


async def handle_twilio(ws: ServerConnection, services, settings, registry: dict | None = None) -> None:
    call = TwilioCall(ws, services, settings)
    session = call.session
    registry = {} if registry is None else registry
    registry[session.id] = session
    metrics.SESSIONS_TOTAL.labels("twilio").inc()
    writer = asyncio.ensure_future(call.writer())
    try:
        async with asyncio.timeout(settings.server.max_session_s):
            async for message in ws:
                if len(message) > settings.server.max_frame_bytes * 2:
                    metrics.ERRORS.labels("frame_too_large").inc()
                    await outgoing.close(ws, 1009, "frame too large")
                    return
                try:
                    if not await call.handle(message):
                        break
                except ProtocolError as e:
                    # Twilio has no error message type: count, log, go on
                    metrics.ERRORS.labels(e.code).inc()
                    log.warning("call %s: %s", call.call_sid, e.code)
    except TimeoutError:
        await session.end("max_duration")
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("twilio call %s: internal error", call.call_sid)
        metrics.ERRORS.labels("internal_error").inc()
        await outgoing.close(ws, 1011, "internal error")
    finally:
        if not writer.done() and session._ended:
            try:
                await asyncio.wait_for(asyncio.shield(writer), MARK_WAIT_S + 5)
            except (asyncio.TimeoutError, ConnectionClosed):
                pass
        writer.cancel()
        await session.close()
        registry.pop(session.id, None)
        log.info("call %s closed: %d finals, marks heard %d, not heard %d", call.call_sid, session.stats.finals, len(call.heard), len(call.not_heard))
