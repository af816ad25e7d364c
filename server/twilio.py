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
to the operators' queue); with ``transfer.twilio_to`` set, the live call is first
updated through the REST API to ``<Dial>`` it (server/transfer.py).  SignalWire and Fonoster speak the same messages.
Twilio has no error message: a bad message is counted in
``dauys_errors_total{code}``, logged (once per code and call), and the stream goes on.

The wire format is :class:`server.codecs.TwilioCodec`; the call's lifecycle is
:class:`server.transport.CallRunner`'s, the same for every carrier.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection

from server.codecs import TwilioCodec
from server.transfer import for_carrier
from server.transport import CallRunner, WebSocketLink


async def handle_twilio(ws: ServerConnection, services, settings, registry: dict | None = None) -> None:
    link = WebSocketLink(ws, settings.server.send_timeout_s)
    codec = TwilioCodec(settings.twilio.stream_secret.get_secret_value())
    await CallRunner(link, codec, services, settings, registry, transfer=for_carrier("twilio", settings)).run()
