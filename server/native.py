"""The native /v1/voice protocol (PROTOCOL.md) on one WebSocket connection."""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pipeline.errors import ProtocolError
from pipeline.events import Dtmf, End, ErrorEvent, Handoff, Start, Text, Transcript, parse_client_message
from pipeline.replies import AudioFrame
from pipeline.session import Close, Session
from pipeline import metrics
from server import outgoing

log = logging.getLogger("dauys.native")


async def _writer(ws: ServerConnection, session: Session, send_timeout: float) -> None:
    """Send the session's events and audio, in order. A client that takes none of its output
    for ``send_timeout`` s is cut off (1008 "slow consumer"); other sessions never wait for it."""
    try:
        while True:
            item = await session.outbox.get()
            if item is None or isinstance(item, Close):
                code, reason = (1000, "session ended") if item is None else (item.code, item.reason)
                await outgoing.close(ws, code, reason, send_timeout + outgoing.CLOSE_WAIT_S)
                return
            if isinstance(item, AudioFrame):
                if item.reply_id not in session.responder.interrupted:
                    await outgoing.send(ws, item.data, send_timeout)
                continue
            if isinstance(item, ErrorEvent):
                metrics.ERRORS.labels(item.code).inc()
            elif isinstance(item, Transcript):
                metrics.TRANSCRIPTS.labels("final" if item.final else "partial", item.language).inc()
            elif isinstance(item, Handoff):
                metrics.HANDOFFS.labels(item.reason).inc()
            await outgoing.send(ws, item.to_json(), send_timeout)
    except outgoing.SlowConsumer:
        log.warning("session %s: slow consumer: the client took no output for %.1f s; cut off (1008)", session.id, send_timeout)
        metrics.ERRORS.labels("slow_consumer").inc()
        error = ErrorEvent("slow_consumer", f"the client read none of its output for {send_timeout:g} s")
        await outgoing.cut_off(ws, error.to_json())
    except ConnectionClosed:
        pass
    # nothing more can be sent: keep the session's producers moving (their events go nowhere)
    # until the handler sees the closed connection
    while await session.outbox.get() is not None:
        pass


async def handle_native(ws: ServerConnection, services, settings, registry: dict | None = None) -> None:
    session = Session(services)
    registry = {} if registry is None else registry
    registry[session.id] = session
    send_timeout = settings.server.send_timeout_s
    writer = asyncio.ensure_future(_writer(ws, session, send_timeout))
    max_frame = settings.server.max_frame_bytes
    metrics.SESSIONS_TOTAL.labels("native").inc()
    try:
        async with asyncio.timeout(settings.server.max_session_s):
            async for message in ws:
                if (len(message) if isinstance(message, bytes) else len(message.encode("utf-8", "surrogatepass"))) > max_frame:
                    await session.emit(ErrorEvent("frame_too_large", f"frames are limited to {max_frame} bytes"))
                    await _drain(session, writer)
                    await outgoing.close(ws, 1009, "frame too large", send_timeout + outgoing.CLOSE_WAIT_S)
                    return
                try:
                    if isinstance(message, bytes):
                        await session.feed_audio(message)
                        continue
                    msg = parse_client_message(message)
                    if isinstance(msg, Start):
                        await session.start(msg)
                    elif isinstance(msg, Text):
                        await session.text(msg.text)
                    elif isinstance(msg, Dtmf):
                        if session.started is None:
                            raise ProtocolError("dtmf_before_start", "send a start message before dtmf")
                        if session.started.keypad:  # a web page has no keypad: its keys are ignored
                            session.dtmf(msg.digit)
                    elif isinstance(msg, End):
                        # flush and answer; but if the client goes away meanwhile, stop waiting
                        ending = asyncio.ensure_future(session.end("client_end"))
                        await asyncio.wait({ending, writer}, return_when=asyncio.FIRST_COMPLETED)
                        if not ending.done():
                            ending.cancel()
                            await asyncio.gather(ending, return_exceptions=True)
                        break
                except ProtocolError as e:
                    await session.emit(ErrorEvent(e.code, e.message))
    except TimeoutError:
        await session.emit(ErrorEvent("session_too_long", f"sessions are limited to {settings.server.max_session_s:.0f} s"))
        await session.end("max_duration")
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("session %s: internal error", session.id)
        metrics.ERRORS.labels("internal_error").inc()
        try:
            await outgoing.send(ws, ErrorEvent("internal_error", "server fault").to_json(), send_timeout)
        except (ConnectionClosed, outgoing.SlowConsumer):
            pass
        await outgoing.close(ws, 1011, "internal error", send_timeout + outgoing.CLOSE_WAIT_S)
    finally:
        if not writer.done() and ws.state is State.OPEN:
            # a normal end: let the writer deliver the last events and close with 1000
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=5)
            except (asyncio.TimeoutError, ConnectionClosed):
                pass
        writer.cancel()
        await session.close()
        registry.pop(session.id, None)
        log.info(
            "session %s closed: %d utterances, %d finals, %d partials, %d discarded",
            session.id, session.stats.utterances, session.stats.finals, session.stats.partials, session.stats.discarded,
        )


async def _drain(session: Session, writer: asyncio.Task, timeout: float = 2.0) -> None:
    """Let the writer send what is queued (e.g. an error before a policy close)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while session.outbox.qsize() and not writer.done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
