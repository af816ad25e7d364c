"""The native /v1/voice protocol (PROTOCOL.md) on one WebSocket connection."""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pipeline.errors import ProtocolError
from pipeline.events import End, Error, Start, Text, Transcript, parse_client_message
from pipeline.replies import AudioFrame
from pipeline.session import Close, Session
from server import metrics

log = logging.getLogger("dauys.native")


async def _writer(ws: ServerConnection, session: Session) -> None:
    while True:
        item = await session.outbox.get()
        if item is None:
            await ws.close(1000, "session ended")
            return
        if isinstance(item, Close):
            await ws.close(item.code, item.reason)
            return
        if isinstance(item, AudioFrame):
            if item.reply_id not in session.responder.interrupted:
                await ws.send(item.data)
            continue
        if isinstance(item, Error):
            metrics.ERRORS.labels(item.code).inc()
        elif isinstance(item, Transcript):
            metrics.TRANSCRIPTS.labels("final" if item.final else "partial", item.language).inc()
            if item.final and item.source == "audio" and session.stats.final_latencies:
                metrics.ENDPOINT_TO_FINAL.observe(session.stats.final_latencies[-1])
        await ws.send(item.to_json())


async def handle_native(ws: ServerConnection, services, settings, registry: dict | None = None) -> None:
    session = Session(services)
    registry = {} if registry is None else registry
    registry[session.id] = session
    writer = asyncio.ensure_future(_writer(ws, session))
    max_frame = settings.server.max_frame_bytes
    metrics.SESSIONS_TOTAL.labels("native").inc()
    try:
        async with asyncio.timeout(settings.server.max_session_s):
            async for message in ws:
                if len(message) > max_frame:
                    await session.emit(Error("frame_too_large", f"frames are limited to {max_frame} bytes"))
                    await _drain(session, writer)
                    await ws.close(1009, "frame too large")
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
                    elif isinstance(msg, End):
                        # flush and answer; but if the client goes away meanwhile, stop waiting
                        ending = asyncio.ensure_future(session.end("client_end"))
                        await asyncio.wait({ending, writer}, return_when=asyncio.FIRST_COMPLETED)
                        if not ending.done():
                            ending.cancel()
                            await asyncio.gather(ending, return_exceptions=True)
                        break
                except ProtocolError as e:
                    await session.emit(Error(e.code, e.message))
    except TimeoutError:
        await session.emit(Error("session_too_long", f"sessions are limited to {settings.server.max_session_s:.0f} s"))
        await session.end("max_duration")
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("session %s: internal error", session.id)
        metrics.ERRORS.labels("internal_error").inc()
        try:
            await ws.send(Error("internal_error", "server fault").to_json())
        except ConnectionClosed:
            pass
        await ws.close(1011, "internal error")
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
