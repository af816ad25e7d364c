"""The server layer, the edge of Dauys: the process, its transports and its operator surface.

The asyncio server (``app``) and its services (``services``: models loaded once, hot switch);
one call runner (``transport``) with a Sans-I/O codec per carrier (``codecs``): the native
/v1/voice protocol (``native``), Twilio Media Streams (``twilio``, ``twilio_auth``) and Asterisk
AudioSocket (``audiosocket``); plain HTTP on the same port (``endpoints``: health, readiness,
metrics, the web demo in ``web/``); who may connect (``auth``), bounded sending (``outgoing``),
configuration (``config``), logs (``logs``), and the ``dauys`` command (``cli``, with ``client``
for ``dauys call``).
"""
