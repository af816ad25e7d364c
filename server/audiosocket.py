"""Asterisk AudioSocket (TCP): `dauys serve --audiosocket-port P`.

Frames: 1 byte kind, 2 bytes big-endian length, payload.  Kinds: 0x00
hangup, 0x01 call UUID (16 bytes), 0x03 DTMF digit (ASCII), 0x10 signed
linear 16-bit 8 kHz audio, 0x11-0x18 the same at 12, 16, 24, 32, 44.1, 48,
96 and 192 kHz (Asterisk 22+ with slin12..slin192 channels), 0xff error.

Replies go back as 0x10 frames of exactly 320 bytes (20 ms), paced on a
monotonic clock, with only a few frames queued so barge-in is quick.  A
handoff hangs up (0x00) once its message has been sent, so the dialplan
continues (e.g. to a Queue()).  DTMF 0 asks for the operator.

The protocol has neither authentication nor encryption: peers outside
``server.audiosocket_allow`` are disconnected before anything is read.
"""

from __future__ import annotations

import asyncio
import socket
import logging
import struct
import time
import uuid
from collections import OrderedDict

from models.audio import Encoding
from pipeline.events import AudioEnd, AudioFormat, ErrorEvent, Handoff, Start, Transcript
from pipeline.replies import AudioFrame
from pipeline.session import Close, Session
from pipeline import metrics
from server import auth

log = logging.getLogger("dauys.audiosocket")

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10
KIND_ERROR = 0xFF
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
FRAME_BYTES = 320
FRAME_S = 0.020
QUEUE_FRAMES = 3
"""Frames queued ahead of the pacer: what is still heard after a barge-in (60 ms)."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(3)
    kind, length = struct.unpack(">BH", head)
    return kind, await reader.readexactly(length) if length else b""


SEND_BUFFER_BYTES = 16384
"""Kernel send buffer for AudioSocket connections (Linux doubles it): about a second of 8 kHz audio."""


class AudioSocketCall:
    def __init__(self, reader, writer, services, settings) -> None:
        self.reader, self.writer = reader, writer
        self.settings = settings
        self.session = Session(services, transport="audiosocket")
        self.call_id: str | None = None
        self.rate: int | None = None
        self._q: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_FRAMES)
        self._carry = b""
        self.sent_times: list[float] = []
        self.cut_off = False
        self._warned: set[str] = set()
        # Audio is paced in real time (16 kB/s): more than a few frames buffered is only delay, and
        # small buffers let a peer that reads nothing show up within send_timeout_s (Linux would
        # otherwise auto-size the kernel buffer to megabytes on loopback: minutes of audio).
        try:
            writer.transport.set_write_buffer_limits(high=8 * (FRAME_BYTES + 3))
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except (AttributeError, NotImplementedError, OSError):  # pragma: no cover
            pass

    def _warn_once(self, what: str, msg: str, *args) -> None:
        """Log a peer's protocol oddity once per call (a hostile peer cannot flood the log)."""
        if what not in self._warned:
            self._warned.add(what)
            log.warning(msg + " (further ones not logged)", *args)

    async def pacer(self) -> None:
        """Send queued 320-byte frames exactly every 20 ms (monotonic clock)."""
        next_t = time.monotonic()
        while True:
            data = await self._q.get()
            if data is None:
                return
            if self.cut_off:
                continue  # keep the queue moving, unpaced (the rest of a reply would hold the call for its length); nothing goes out
            now = time.monotonic()
            if next_t < now - FRAME_S:  # idle since the last frame: restart the grid
                next_t = now
            if next_t > now:
                await asyncio.sleep(next_t - now)
            self.writer.write(frame(KIND_AUDIO, data))
            self.sent_times.append(time.monotonic())
            try:
                async with asyncio.timeout(self.settings.server.send_timeout_s):
                    await self.writer.drain()
            except TimeoutError:
                # Asterisk (or whatever is on the line) reads nothing: drop the connection
                # rather than hold this call's resources; the reader then sees the hangup.
                log.warning("call %s: slow consumer: took no audio for %.1f s; connection dropped", self.call_id, self.settings.server.send_timeout_s)
                metrics.ERRORS.labels("slow_consumer").inc()
                self.cut_off = True
                self.writer.transport.abort()
            except ConnectionError:
                self.cut_off = True
            next_t += FRAME_S

    def _clear(self) -> None:
        while not self._q.empty():
            self._q.get_nowait()
        self._carry = b""

    async def events(self) -> None:
        s = self.session
        while True:
            item = await s.outbox.get()
            if item is None or isinstance(item, Close):
                if self._carry:
                    await self._q.put(self._carry.ljust(FRAME_BYTES, b"\x00"))
                    self._carry = b""
                await self._q.put(None)
                return
            if isinstance(item, AudioFrame):
                if item.reply_id in s.responder.interrupted:
                    continue
                data = self._carry + item.data
                n = len(data) // FRAME_BYTES * FRAME_BYTES
                self._carry = data[n:]
                for off in range(0, n, FRAME_BYTES):
                    await self._q.put(data[off : off + FRAME_BYTES])
            elif isinstance(item, AudioEnd):
                if item.interrupted:
                    self._clear()
                    log.info("call %s: barge-in", self.call_id)
                elif self._carry:
                    await self._q.put(self._carry.ljust(FRAME_BYTES, b"\x00"))
                    self._carry = b""
            elif isinstance(item, Handoff):
                metrics.HANDOFFS.labels(item.reason).inc()
                log.info("call %s: handoff (%s)", self.call_id, item.reason)
            elif isinstance(item, Transcript) and item.final:
                metrics.TRANSCRIPTS.labels("final", item.language).inc()
                log.info("call %s: final %s (%s)", self.call_id, item.utterance_id, item.language)
            elif isinstance(item, ErrorEvent):
                metrics.ERRORS.labels(item.code).inc()

    async def start_session(self, rate: int) -> None:
        self.rate = rate
        fmt = AudioFormat(Encoding.PCM_S16LE, rate, 1)
        await self.session.start(Start(fmt, AudioFormat(Encoding.PCM_S16LE, 8000, 1), self.settings.server.audiosocket_language, keypad=True))

    async def run(self) -> None:
        metrics.SESSIONS_TOTAL.labels("audiosocket").inc()
        pacer = asyncio.ensure_future(self.pacer())
        events = asyncio.ensure_future(self.events())
        hung_up_by_caller = False
        try:
            async with asyncio.timeout(self.settings.server.max_session_s):
                while True:
                    try:
                        kind, payload = await read_frame(self.reader)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        hung_up_by_caller = True
                        break
                    if kind == KIND_UUID:
                        self.call_id = str(uuid.UUID(bytes=payload)) if len(payload) == 16 else payload.hex()
                        self.session.carrier_call_id = self.call_id  # in the handoff record
                        log.info("call %s connected", self.call_id)
                    elif kind in AUDIO_RATES:
                        rate = AUDIO_RATES[kind]
                        if self.session.started is None:
                            await self.start_session(rate)
                        elif rate != self.rate:
                            self._warn_once("rate", "call %s: audio rate changed %d -> %d", self.call_id, self.rate, rate)
                            self.session.reconfigure_input(rate)
                            self.rate = rate
                        await self.session.feed_audio(payload)
                    elif kind == KIND_DTMF:
                        self.session.dtmf(payload[:1].decode("ascii", "replace"))
                    elif kind == KIND_HANGUP:
                        hung_up_by_caller = True
                        break
                    elif kind == KIND_ERROR:
                        log.warning("call %s: Asterisk reported error %s", self.call_id, payload.hex() or "-")
                        hung_up_by_caller = True
                        break
                    else:
                        metrics.ERRORS.labels("invalid_message").inc()
                        self._warn_once("kind", "call %s: unknown frame kind 0x%02x", self.call_id, kind)
                    if self.session.end_reason is not None:
                        break  # handoff or goodbye: we hang up
            if self.session.started is not None:
                await self.session.end("caller_hangup" if hung_up_by_caller else self.session.end_reason or "ended", abandon_reply=hung_up_by_caller)
            else:
                self.session.outbox_put_nowait(None)
        except TimeoutError:
            await self.session.end("max_duration")
        except Exception:
            log.exception("audiosocket call %s: internal error", self.call_id)
            metrics.ERRORS.labels("internal_error").inc()
            self.session.outbox_put_nowait(None)  # let the writer tasks finish now, not at the 30 s guard
        finally:
            try:
                await asyncio.wait_for(asyncio.gather(events, pacer), 30)
            except (asyncio.TimeoutError, ConnectionError):
                pass
            events.cancel()
            pacer.cancel()
            if not hung_up_by_caller and not self.cut_off:
                try:
                    self.writer.write(frame(KIND_HANGUP))
                    async with asyncio.timeout(self.settings.server.send_timeout_s):
                        await self.writer.drain()
                except (ConnectionError, TimeoutError):
                    self.writer.transport.abort()
            await self.session.close()
            self.writer.close()
            log.info("call %s closed: %d finals", self.call_id, self.session.stats.finals)


REFUSAL_LOG_S = 60.0
"""A refused peer address is logged at most once in this long (a scanner cannot flood the log)."""


async def serve_audiosocket(host: str, port: int, hub, settings, registry: dict):
    refusals_logged: OrderedDict[str, float] = OrderedDict()

    def refuse(peer: str) -> None:
        metrics.SESSIONS_REFUSED.labels("not_allowed").inc()
        now = time.monotonic()
        if now - refusals_logged.get(peer, -REFUSAL_LOG_S) >= REFUSAL_LOG_S:
            log.warning("refused a connection from %s: not in server.audiosocket_allow", peer)
            refusals_logged[peer] = now
            refusals_logged.move_to_end(peer)
            while len(refusals_logged) > 1024:
                refusals_logged.popitem(last=False)

    async def handle(reader, writer):
        peer = writer.get_extra_info("peername")
        peer = str(peer[0]) if peer else "unknown"
        if not auth.ip_allowed(peer, settings.server.audiosocket_allow):
            refuse(peer)  # before anything is read: nothing of this peer reaches the parser or a session
            writer.transport.abort()
            return
        services = await hub.wait(settings.server.ready_wait_s)
        if services is None or len(registry) >= settings.server.max_sessions:
            metrics.SESSIONS_REFUSED.labels("capacity" if services else "not_ready").inc()
            writer.write(frame(KIND_HANGUP))
            writer.close()
            return
        call = AudioSocketCall(reader, writer, services, settings)
        registry[call.session.id] = call.session
        try:
            await call.run()
        finally:
            registry.pop(call.session.id, None)

    return await asyncio.start_server(handle, host, port)
