"""Asterisk AudioSocket (TCP): `dauys serve --audiosocket-port P`.

Frames: 1 byte kind, 2 bytes big-endian length, payload.  Kinds: 0x00
hangup, 0x01 call UUID (16 bytes), 0x03 DTMF digit (ASCII), 0x10 signed
linear 16-bit 8 kHz audio, 0x11-0x18 the same at 12, 16, 24, 32, 44.1, 48,
96 and 192 kHz (Asterisk 22+ with slin12..slin192 channels), 0xff error.

Replies go back as 0x10 frames of exactly 320 bytes (20 ms), paced on a
monotonic clock, with only a few frames queued so barge-in is quick.  A
handoff hangs up (0x00) once its message has been sent, so the dialplan
continues (e.g. to a Queue()); with ``transfer.asterisk_ami_host`` set, the
transfer variable is first set on the caller's channel through AMI
(server/transfer.py, :class:`AudioSocketTransfer`).  DTMF 0 asks for the operator.

The protocol has neither authentication nor encryption: peers outside
``server.audiosocket_allow`` are disconnected before anything is read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from pipeline import metrics
from server import auth
from server.codecs import FRAME_BYTES, KIND_HANGUP, AudioSocketCodec, frame
from server.transfer import for_carrier
from server.transport import PACER_DEPTH, CallRunner, StreamLink

log = logging.getLogger("dauys.audiosocket")

QUEUE_FRAMES = PACER_DEPTH
"""Frames queued ahead of the pacer: what is still heard after a barge-in (60 ms)."""
WRITE_LIMIT = 8 * (FRAME_BYTES + 3)
"""The transport's write buffer high-water mark: a few frames (audio is paced in real time)."""


async def run_call(reader, writer, services, settings, registry: dict | None = None) -> None:
    """One AudioSocket call on an accepted TCP connection."""
    link = StreamLink(reader, writer, settings.server.send_timeout_s, WRITE_LIMIT)
    codec = AudioSocketCodec(settings.server.audiosocket_language, settings.server.audiosocket_consent)
    await CallRunner(link, codec, services, settings, registry, transfer=for_carrier("audiosocket", settings)).run()


REFUSAL_LOG_S = 60.0
"""A refused peer address is logged at most once in this long (a scanner cannot flood the log)."""


async def serve_audiosocket(host: str, port: int, hub, settings, registry):
    """Serve AudioSocket on ``host:port``; ``registry`` is the server's :class:`server.transport.CallRegistry`."""
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
        if not registry.admit(settings.server.max_sessions):  # the same capacity as WebSocket calls
            metrics.SESSIONS_REFUSED.labels("capacity").inc()
            writer.write(frame(KIND_HANGUP))
            writer.close()
            return
        try:
            services = await hub.wait(settings.server.ready_wait_s)
            if services is None:
                metrics.SESSIONS_REFUSED.labels("not_ready").inc()
                writer.write(frame(KIND_HANGUP))
                writer.close()
                return
            await run_call(reader, writer, services, settings, registry)
        finally:
            registry.release()

    return await asyncio.start_server(handle, host, port)
