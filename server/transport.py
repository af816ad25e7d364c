"""One call runner for every carrier: the I/O and the lifecycle of a call around a codec.

The carriers (the native protocol, Twilio Media Streams, Asterisk AudioSocket)
differ only in their wire format, which their codecs (``server/codecs.py``)
translate without any I/O.  Everything else is written once, here:

* admission: :class:`CallRegistry` (live sessions by id, the calls admitted,
  the capacity check and the ``dauys_sessions_active`` gauge);
* the time limit (``server.max_session_s``) and the frame limit;
* the reader: carrier messages -> codec -> session (start, audio, text,
  DTMF -- once, for every carrier -- end, hangup);
* the writer: the session's bounded outbox -> codec -> the connection, with
  a bounded send time (a peer that reads nothing is cut off), the metrics
  counted once as events go out (``dauys_errors_total``,
  ``dauys_transcripts_total``, ``dauys_handoffs_total``: the same for every
  carrier), interruption (a barge-in drops the interrupted reply's queued
  audio), and for phone carriers the pacing of audio on a monotonic clock
  (:class:`Pacer`);
* teardown: one timeout (:data:`TEARDOWN_S`) for the writer to deliver what
  is queued, then the session is closed and unregistered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time

from websockets.exceptions import ConnectionClosed

from pipeline import metrics
from pipeline.errors import ProtocolError
from pipeline.events import AudioEnd, Dtmf, End, ErrorEvent, Handoff, Text, Transcript
from pipeline.replies import AudioFrame
from pipeline.session import Close, Session
from server import outgoing
from server.codecs import Audio, CallId, CallStart, Codec, Hangup, Reconfigure, Refuse

TEARDOWN_S = 20.0
"""How long the end of a call waits for its writer to deliver what is queued (a handoff message
and, on Twilio, its mark coming back: up to :data:`MARK_WAIT_S`) before the call is cut."""
MARK_WAIT_S = 15.0
"""Longest wait for the carrier to confirm queued audio has played (Twilio marks) before the call closes."""
PACER_DEPTH = 3
"""Messages queued ahead of a pacer: what is still heard after a barge-in (AudioSocket: 60 ms)."""


class CallRegistry(dict):
    """Live sessions by id (for shutdown, model retirement and inspection), and the calls admitted:
    connections holding a place, with or without a session yet. One capacity check for every carrier."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0

    def admit(self, limit: int) -> bool:
        """Take a place if fewer than ``limit`` calls are admitted; counted in ``dauys_sessions_active``."""
        if self.active >= limit:
            return False
        self.active += 1
        metrics.SESSIONS_ACTIVE.inc()
        return True

    def release(self) -> None:
        self.active -= 1
        metrics.SESSIONS_ACTIVE.dec()


# ------------------------------------------------------------------------------------ connections
class WebSocketLink:
    """A WebSocket connection (native, Twilio): one message per frame, bounded sending (server/outgoing.py)."""

    def __init__(self, ws, send_timeout: float) -> None:
        self.ws = ws
        self.send_timeout = send_timeout

    async def receive(self) -> str | bytes | None:
        """The next message; None once the connection is closed."""
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            return None

    async def send(self, message: str | bytes) -> None:
        await outgoing.send(self.ws, message, self.send_timeout)

    async def close(self, code: int, reason: str) -> None:
        await outgoing.close(self.ws, code, reason, self.send_timeout + outgoing.CLOSE_WAIT_S)

    async def cut_off(self, last_words: str | bytes | None) -> None:
        await outgoing.cut_off(self.ws, last_words)

    async def fault(self, last_words: list) -> None:
        """A server fault: say so where the carrier can, close 1011."""
        try:
            for message in last_words:
                await self.send(message)
        except (ConnectionClosed, outgoing.SlowConsumer):
            pass
        await self.close(1011, "internal error")

    def finish(self) -> None:
        pass  # websockets closes the connection when the handler returns


SEND_BUFFER_BYTES = 16384
"""Kernel send buffer for stream (AudioSocket) connections (Linux doubles it): about a second of 8 kHz audio."""
READ_BYTES = 65536


class StreamLink:
    """A TCP byte stream (AudioSocket): chunks in, bytes out; the carrier's hangup frame ends it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, send_timeout: float, write_limit: int | None = None) -> None:
        self.reader, self.writer = reader, writer
        self.send_timeout = send_timeout
        # Audio is paced in real time: more than a few frames buffered is only delay, and small
        # buffers let a peer that reads nothing show up within send_timeout_s (Linux would
        # otherwise auto-size the kernel buffer to megabytes on loopback: minutes of audio).
        try:
            if write_limit is not None:
                writer.transport.set_write_buffer_limits(high=write_limit)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except (AttributeError, NotImplementedError, OSError):  # pragma: no cover
            pass

    async def receive(self) -> bytes | None:
        try:
            data = await self.reader.read(READ_BYTES)
        except ConnectionError:
            return None
        return data or None

    async def send(self, message: bytes) -> None:
        self.writer.write(message)
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.writer.drain()
        except TimeoutError:
            raise outgoing.SlowConsumer from None

    async def close(self, code: int, reason: str) -> None:
        self.writer.close()

    async def cut_off(self, last_words: bytes | None) -> None:
        # the peer reads nothing: drop the connection rather than hold this call's resources;
        # the reader then sees the end of the stream
        self.writer.transport.abort()

    async def fault(self, last_words: list) -> None:
        pass  # no error message: the writer ends the call with its hangup once the outbox is closed

    def finish(self) -> None:
        self.writer.close()


# ------------------------------------------------------------------------------------ pacing
class Pacer:
    """The writer's clock for phone carriers: queued media messages go out exactly every ``period`` s
    (monotonic clock, the grid restarted after idle), at most ``lead`` s ahead of it (a carrier across
    the internet keeps that much in its own buffer against network jitter, and takes it back with its
    clear command at a barge-in), with only ``depth`` queued (what a barge-in cannot take back here).
    Control messages (the codec's ``timed(message)`` is False: marks, clear, flush) go out in their
    place in the queue without taking a slot of the grid. Once the peer is cut off the queue keeps
    draining, unpaced, and nothing goes out (the rest of a reply would otherwise hold the call for its length)."""

    def __init__(self, runner: "CallRunner", period: float, depth: int = PACER_DEPTH, lead: float = 0.0) -> None:
        self.runner = runner
        self.period = period
        self.lead = lead
        self._q: asyncio.Queue = asyncio.Queue(depth)
        self.task = asyncio.ensure_future(self._run())

    async def put(self, message: bytes) -> None:
        await self._q.put(message)

    def clear(self) -> None:
        while not self._q.empty():
            self._q.get_nowait()

    async def finish(self) -> None:
        """Send what is queued, then stop."""
        await self._q.put(None)
        await self.task

    async def _run(self) -> None:
        runner = self.runner
        next_t = time.monotonic()
        while True:
            data = await self._q.get()
            if data is None:
                return
            if runner.cut_off:
                continue
            timed = runner.codec.timed(data)
            if timed:
                now = time.monotonic()
                if next_t < now - self.period:  # idle since the last frame: restart the grid
                    next_t = now
                if next_t - self.lead > now:
                    await asyncio.sleep(next_t - self.lead - now)
            try:
                await runner.link.send(data)
            except outgoing.SlowConsumer:
                await runner.slow_consumer()
            except (ConnectionError, ConnectionClosed):  # a byte stream's or a WebSocket's peer is gone
                runner.cut_off = True
            if timed:
                next_t += self.period


# ------------------------------------------------------------------------------------ the runner
class CallRunner:
    """One call: a connection (``link``), a carrier's ``codec`` and a :class:`Session`."""

    def __init__(self, link, codec: Codec, services, settings, registry: dict | None = None, transfer=None) -> None:
        self.link = link
        self.codec = codec
        self.transfer = transfer
        """The carrier's transfer to a human (server/transfer.py), tried after a handoff has played; None = none."""
        self.handoff: Handoff | None = None
        self.settings = settings
        self.session = Session(services, transport=codec.transport)
        self.registry = {} if registry is None else registry
        self.log = logging.getLogger(f"dauys.{codec.transport}")
        self.peer_gone = False
        """The caller's side is over (hangup, stop, end of stream): nothing more is heard or confirmed."""
        self.cut_off = False
        """The peer was cut off (slow consumer) or its connection broke: nothing more goes out."""
        self.output_done = asyncio.Event()
        """The writer is through: the call's output is closed (or can no longer be sent)."""
        self._outbox_closed = False
        self._played = asyncio.Event()
        self._played.set()
        self._pacer: Pacer | None = None
        self._warned: set[str] = set()

    @property
    def call_id(self):
        """The id the logs use: the carrier's id of the call where known, else the session id."""
        return self.codec.call_id if self.codec.call_id is not None else self.session.id

    def _warn_once(self, what: str, msg: str, *args) -> None:
        """Log a peer's protocol oddity once per call (a hostile peer cannot flood the log)."""
        if what not in self._warned:
            self._warned.add(what)
            self.log.warning(msg + " (further ones not logged)", *args)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        s, srv = self.session, self.settings.server
        self.registry[s.id] = s
        metrics.SESSIONS_TOTAL.labels(self.codec.transport).inc()
        writer = asyncio.ensure_future(self._writer())
        try:
            async with asyncio.timeout(srv.max_session_s):
                await self._read()
        except TimeoutError:
            await s.emit(ErrorEvent("session_too_long", f"sessions are limited to {srv.max_session_s:.0f} s"))
            await s.end("max_duration")
        except (ConnectionClosed, ConnectionError):
            pass
        except Exception:
            self.log.exception("%s call %s: internal error", self.codec.transport, self.call_id)
            metrics.ERRORS.labels("internal_error").inc()
            await self.link.fault(self.codec.encode(ErrorEvent("internal_error", "server fault")))
            self._outbox_closed = True
            s.outbox_put_nowait(None)  # let the writer finish now, not at the teardown guard
        finally:
            if not self.output_done.is_set() and (s.ended or self._outbox_closed):
                # a normal end: let the writer deliver the last events and close
                try:
                    async with asyncio.timeout(self._teardown_s()):  # not wait_for: it can swallow a cancel on 3.11
                        await self.output_done.wait()
                except TimeoutError:
                    self.log.warning("call %s: output not delivered within %.0f s; cut", self.call_id, self._teardown_s())
            writer.cancel()
            if self._pacer is not None:
                self._pacer.task.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await s.close()
            self.registry.pop(s.id, None)
            self.link.finish()
            st = s.stats
            self.log.info(
                "call %s closed: %d utterances, %d finals, %d partials, %d discarded%s", self.call_id,
                st.utterances, st.finals, st.partials, st.discarded, self._closing_note(),
            )

    def _teardown_s(self) -> float:
        """The end of a call may wait for the writer this long: :data:`TEARDOWN_S`, plus a transfer's time limit."""
        t = getattr(getattr(self.transfer, "t", None), "timeout_s", 0.0)
        return TEARDOWN_S + (t if isinstance(t, (int, float)) else 0.0)

    def _closing_note(self) -> str:
        heard, not_heard = getattr(self.codec, "heard", None), getattr(self.codec, "not_heard", None)
        return f", marks heard {len(heard)}, not heard {len(not_heard)}" if heard is not None and not_heard is not None else ""

    # ------------------------------------------------------------------ reading
    async def _read(self) -> None:
        s, max_frame = self.session, self.settings.server.max_frame_bytes
        start_by = asyncio.get_running_loop().time() + self.settings.server.start_timeout_s
        while True:
            if s.started is None:  # a slot held without a session: bounded
                try:
                    async with asyncio.timeout_at(start_by):
                        message = await self.link.receive()
                except TimeoutError:
                    await self._start_timeout()
                    return
            else:
                message = await self.link.receive()
            if message is None:  # the connection closed
                for inp in self.codec.eof():
                    await self._apply(inp)
                return
            if self.codec.too_large(message, max_frame):
                await s.emit(ErrorEvent("frame_too_large", f"frames are limited to {max_frame} bytes"))
                await self._drain()
                await self.link.close(1009, "frame too large")
                return
            for inp in self.codec.decode(message):
                try:
                    if not await self._apply(inp):
                        return
                except ProtocolError as e:
                    await self._protocol_error(e)
            self._update_played()

    async def _start_timeout(self) -> None:
        """No session started within server.start_timeout_s: error start_timeout, close 1008."""
        limit = self.settings.server.start_timeout_s
        self.log.info("%s call %s: no start within %.0f s; closed", self.codec.transport, self.call_id, limit)
        metrics.ERRORS.labels("start_timeout").inc()
        if self.codec.reports_errors:
            await self.session.emit(ErrorEvent("start_timeout", f"no valid start within {limit:g} s of connecting"))
        await self._drain()
        await self.link.close(1008, "no start")

    async def _apply(self, inp) -> bool:
        """One input from the carrier; False when the call's input is over."""
        s = self.session
        if isinstance(inp, ProtocolError):
            raise inp
        if isinstance(inp, Audio):
            await s.feed_audio(inp.data)
        elif isinstance(inp, CallStart):
            await self._start(inp)
        elif isinstance(inp, Text):
            await s.text(inp.text)
        elif isinstance(inp, Dtmf):
            self._dtmf(inp.digit)
        elif isinstance(inp, Reconfigure):
            self._warn_once("rate", "call %s: audio rate changed %d -> %d", self.call_id, inp.old_rate, inp.rate)
            if s.started is not None:
                s.reconfigure_input(inp.rate)
        elif isinstance(inp, CallId):
            s.carrier_call_id = inp.call_id  # in the handoff record
            self.log.info("call %s connected", self.call_id)
        elif isinstance(inp, End):
            # flush and answer; but if the client goes away meanwhile, stop waiting
            ending = asyncio.ensure_future(s.end("client_end"))
            gone = asyncio.ensure_future(self.output_done.wait())
            await asyncio.wait({ending, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not ending.done():
                ending.cancel()
                await asyncio.gather(ending, return_exceptions=True)
            return False
        elif isinstance(inp, Hangup):
            self.peer_gone = True
            if inp.detail is not None:
                self.log.warning("call %s: the carrier reported error %s", self.call_id, inp.detail)
            await s.end("caller_hangup", abandon_reply=True)
            return False
        elif isinstance(inp, Refuse):
            metrics.SESSIONS_REFUSED.labels(inp.refused).inc()
            self.log.warning("call %s: %s; closed (%d)", self.call_id, inp.reason, inp.code)
            await self.link.close(inp.code, inp.reason)
            return False
        return True

    async def _start(self, inp: CallStart) -> None:
        try:
            await self.session.start(inp.start)
        except ProtocolError as e:
            if e.code != "unsupported_language" or not inp.language_fallback:
                raise
            self.log.warning("call %s: language %r not configured, using auto", self.call_id, inp.start.language)
            await self.session.start(dataclasses.replace(inp.start, language="auto"))

    def _dtmf(self, digit: str) -> None:
        """A key the caller pressed, for every carrier: acted on in a session started with a keypad
        (phone lines always are); a carrier that can report errors is told a key before start is one."""
        started = self.session.started
        if started is None:
            if self.codec.reports_errors:
                raise ProtocolError("dtmf_before_start", "send a start message before dtmf")
            return
        if started.keypad:  # a web page has no keypad: its keys are ignored
            self.log.info("call %s: dtmf", self.call_id)
            self.session.dtmf(digit)

    async def _protocol_error(self, e: ProtocolError) -> None:
        """The peer broke its carrier's protocol: an ``error`` event (sent where the carrier has
        one, counted either way by the writer); the call goes on."""
        if not self.codec.reports_errors:
            self._warn_once(f"error:{e.code}", "call %s: %s", self.call_id, e.code)
        await self.session.emit(ErrorEvent(e.code, e.message))

    async def _drain(self, timeout: float = 2.0) -> None:
        """Let the writer take what is queued (e.g. an error before a policy close)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.session.outbox.qsize() and not self.output_done.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ writing
    async def _writer(self) -> None:
        """Send the session's events and audio, in order. A peer that takes none of its output
        for ``server.send_timeout_s`` is cut off (slow consumer); other calls never wait for it."""
        try:
            await self._write()
        except outgoing.SlowConsumer:
            await self.slow_consumer()
        except (ConnectionClosed, ConnectionError):
            self.cut_off = True
        except Exception:
            self.log.exception("%s call %s: writer failed", self.codec.transport, self.call_id)
            metrics.ERRORS.labels("internal_error").inc()
            self.cut_off = True
            await self.link.fault([])
        self.output_done.set()
        # nothing more goes out: keep the session's producers moving (their events go nowhere)
        # until the call is torn down
        while True:
            await self.session.outbox.get()

    async def _write(self) -> None:
        s, codec = self.session, self.codec
        if codec.pace_s is not None:
            self._pacer = Pacer(self, codec.pace_s, lead=codec.pace_lead_s)
        while True:
            item = await s.outbox.get()
            if item is None or isinstance(item, Close):
                for message in codec.flush():
                    await self._send(message)
                if self._pacer is not None:
                    await self._pacer.finish()
                await self._await_playback()
                await self._transfer()
                code, reason = (1000, "session ended") if item is None else (item.code, item.reason)
                await self._close(code, reason)
                return
            if isinstance(item, AudioFrame):
                if item.reply_id in s.responder.interrupted:
                    continue  # barge-in: the rest of an interrupted reply is dropped
            else:
                self._count(item)
                if isinstance(item, AudioEnd) and item.interrupted:
                    self._drop_queued_audio()
                    self.log.info("call %s: barge-in, %s cut", self.call_id, item.reply_id)
            for message in codec.encode(item):
                await self._send(message)
            self._update_played()

    def _count(self, item) -> None:
        """The metrics of what goes out: counted here, once, the same for every carrier."""
        if isinstance(item, ErrorEvent):
            metrics.ERRORS.labels(item.code).inc()
        elif isinstance(item, Transcript):
            metrics.TRANSCRIPTS.labels("final" if item.final else "partial", item.language).inc()
        elif isinstance(item, Handoff):
            self.handoff = item
            metrics.HANDOFFS.labels(item.reason).inc()
            self.log.info("call %s: handoff (%s)", self.call_id, item.reason)

    async def _send(self, message: str | bytes) -> None:
        if self._pacer is not None:
            await self._pacer.put(message)
        elif not self.cut_off:
            await self.link.send(message)

    def _drop_queued_audio(self) -> None:
        """Barge-in: what is queued of the interrupted reply is not sent."""
        self.codec.drop_audio()
        if self._pacer is not None:
            self._pacer.clear()

    def _update_played(self) -> None:
        if self.codec.awaiting_playback:
            self._played.clear()
        else:
            self._played.set()

    async def _await_playback(self) -> None:
        """Let the carrier play what it has queued (a handoff message) before the call closes."""
        self._update_played()  # flush() may have asked for a confirmation (chan_websocket REPORT_QUEUE_DRAINED)
        if self.codec.awaiting_playback and not self.peer_gone:
            try:
                async with asyncio.timeout(MARK_WAIT_S):
                    await self._played.wait()
            except TimeoutError:
                self.log.warning("call %s: playback of %s never confirmed", self.call_id, list(getattr(self.codec, "pending_marks", ())))

    async def _transfer(self) -> None:
        """After a handoff has played: the carrier's transfer, if it has one (it logs and counts itself;
        a failed one leaves the call to end as it would have without it)."""
        if self.transfer is None or self.peer_gone or self.cut_off:
            return
        if self.handoff is not None:
            await self.transfer(self.codec, self.handoff)
        elif hasattr(self.transfer, "end"):  # a carrier whose call outlives its media stream (FreeSWITCH)
            await self.transfer.end(self.codec)

    async def _close(self, code: int, reason: str) -> None:
        goodbye = self.codec.hangup()
        if goodbye is not None and not self.peer_gone and not self.cut_off:
            try:
                await self.link.send(goodbye)
            except (outgoing.SlowConsumer, ConnectionError):
                self.cut_off = True
                await self.link.cut_off(None)
        await self.link.close(code, reason)

    async def slow_consumer(self) -> None:
        t = self.settings.server.send_timeout_s
        self.log.warning("call %s: slow consumer: the peer took no output for %.1f s; cut off", self.call_id, t)
        metrics.ERRORS.labels("slow_consumer").inc()
        self.cut_off = True
        last_words = self.codec.encode(ErrorEvent("slow_consumer", f"the client read none of its output for {t:g} s"))
        await self.link.cut_off(last_words[0] if last_words else None)
