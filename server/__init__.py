"""The server layer, the edge of Dauys: the process, its transports and its operator surface.

The asyncio server (``app``) with the native /v1/voice protocol (``native``), Twilio
Media Streams (``twilio``, ``twilio_auth``) and Asterisk AudioSocket (``audiosocket``);
plain HTTP on the same port (``http``: health, readiness, metrics, the web demo in
``web/``); who may connect (``auth``), bounded sending (``outgoing``), configuration
(``config``), logs (``logs``), Prometheus metrics (``metrics``), and the ``dauys``
command (``cli``, with ``client`` for ``dauys call``).
"""

__version__ = "0.1.0"
