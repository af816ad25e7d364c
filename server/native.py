"""The native /v1/voice protocol (PROTOCOL.md) on one WebSocket connection.

The wire format is :class:`server.codecs.NativeCodec`; the call's lifecycle
(reading, the bounded writer, limits, metrics, teardown) is
:class:`server.transport.CallRunner`'s, the same for every carrier.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection

from server.codecs import NativeCodec
from server.transport import CallRunner, WebSocketLink


async def handle_native(ws: ServerConnection, services, settings, registry: dict | None = None) -> None:
    link = WebSocketLink(ws, settings.server.send_timeout_s)
    await CallRunner(link, NativeCodec(), services, settings, registry).run()
