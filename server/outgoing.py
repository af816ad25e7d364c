"""Bounded sending on a WebSocket: a client that stops reading is cut off, never waited for.

``websockets`` writes each message to the transport and then waits while the
transport's buffer is above its high-water mark (``write_limit``, 32 KiB):
a peer that does not read blocks that wait forever, and so do ``close()``
and the keepalive ping (both wait the same way). Everything queued for such
a connection is already bounded (the session's outbox, the write buffer,
the kernel's socket buffers); these helpers bound the *time* too, so the
session is torn down and its resources released.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

SLOW_CONSUMER_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"
CLOSE_WAIT_S = 10.0
"""How long a close handshake may take (a well-behaved peer answers at once)."""


class SlowConsumer(Exception):
    """The peer took none of the pending output within the send timeout."""


async def send(ws: ServerConnection, message: str | bytes, timeout: float) -> None:
    """Send one message; :class:`SlowConsumer` if the peer has not made room for it in ``timeout`` s.

    The message itself is always handed to the transport before the wait, so
    a timeout never leaves a half-written frame.
    """
    try:
        async with asyncio.timeout(timeout):
            await ws.send(message)
    except TimeoutError:
        raise SlowConsumer from None


async def close(ws: ServerConnection, code: int, reason: str, timeout: float = CLOSE_WAIT_S) -> None:
    """Close with ``code``; if the peer does not complete the handshake in ``timeout`` s, drop the TCP connection."""
    try:
        async with asyncio.timeout(timeout):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()


async def cut_off(ws: ServerConnection, last_words: str | None = None, timeout: float = 1.0) -> None:
    """Cut off a slow consumer: queue ``last_words`` (an ``error`` event) and a close frame
    1008 "slow consumer" behind what it has not read, wait ``timeout`` s, then drop the connection."""
    if last_words is not None:
        try:
            async with asyncio.timeout(0.05):  # written at once; only the wait for room is cut short
                await ws.send(last_words)
        except Exception:
            pass
    await close(ws, SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON, timeout)
