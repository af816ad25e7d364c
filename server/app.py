"""The server: one websockets asyncio server answering WebSocket and plain HTTP on one port."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve

from pipeline import metrics
from pipeline.capture import CaptureError, open_capture
from pipeline.session import Close
from server import auth, endpoints, outgoing, review, twilio_auth
from server.native import handle_native
from server.services import ModelHub, SwitchError
from server.transport import CallRegistry
from server.twilio import handle_twilio

log = logging.getLogger("dauys.server")
access_log = logging.getLogger("dauys.access")

VOICE_PATH = "/v1/voice"
TWILIO_PATH = "/v1/twilio"
REVIEW_PATH = review.REVIEW_WS_PATH
PURGE_EVERY_S = 3600.0
# ---- carriers on their own paths (issue 17): admitted like /v1/voice (an API key or a loopback peer)
ASTERISK_WS_PATH = "/v1/asterisk"
"""Asterisk chan_websocket media (server/asterisk_ws.py)."""
FREESWITCH_PATH = "/v1/freeswitch"
"""FreeSWITCH mod_audio_stream (server/freeswitch.py)."""
TELNYX_PATH = "/v1/telnyx"
"""Telnyx Media Streaming (server/telnyx.py)."""
VONAGE_PATH = "/v1/vonage"
"""Vonage Voice API WebSocket (server/vonage.py)."""
CARRIER_PATHS = (ASTERISK_WS_PATH, FREESWITCH_PATH, TELNYX_PATH, VONAGE_PATH)


class DauysServer:
    def __init__(self, settings, hub: ModelHub | None = None) -> None:
        self.settings = settings
        self.hub = hub or ModelHub(settings)
        self._server = None
        self._audiosocket = None
        self.sessions = CallRegistry()
        """Live sessions by id (for shutdown and inspection), and the calls admitted (every carrier)."""
        self.connections: set[ServerConnection] = set()
        self.stopping = False
        self._retirer: asyncio.Future | None = None
        self._metrics = None
        self.auth_fails = auth.FailThrottle(settings.server.auth_fail_limit, settings.server.auth_fail_window_s)
        self.key_connections: dict[str, int] = {}
        """Open connections by API key (its hash), for server.max_sessions_per_key."""
        self._key_releases: set[asyncio.Future] = set()
        self.capture = None
        """The CaptureWriter when capture.enabled (its store serves /review and is purged by retention)."""
        self._purger: asyncio.Future | None = None
        self._loop_lag: asyncio.Future | None = None
        self._asr_target = _model_target(settings.asr.model)

    @property
    def active(self) -> int:
        """Calls admitted (WebSocket and AudioSocket), against server.max_sessions."""
        return self.sessions.active

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def _process_request(self, connection: ServerConnection, request):
        path = urlsplit(request.path).path
        if path in (VOICE_PATH, TWILIO_PATH) or path in CARRIER_PATHS:
            s = self.settings.server
            client = auth.client_address(connection.remote_address, request.headers)
            retry = self.auth_fails.retry_after(client)
            if retry is not None:
                metrics.SESSIONS_REFUSED.labels("throttled").inc()
                return endpoints.too_many(retry, "too many failed authentications from your address, try again later\n")
            twilio_signed = path == TWILIO_PATH and bool(self.settings.twilio.auth_token.get_secret_value())
            refused = twilio_auth.check(request, connection.remote_address, self.settings) if path == TWILIO_PATH else auth.check(
                request.path, request.headers, connection.remote_address, s.api_keys, s.allow_unauthenticated_remote,
                s.api_key_hashes, s.allowed_origins,
            )
            if refused:
                if refused[0] == HTTPStatus.UNAUTHORIZED or refused is twilio_auth.REFUSED:  # a wrong key or a forged signature
                    self.auth_fails.failed(client)
                metrics.SESSIONS_REFUSED.labels("origin" if refused[1].startswith("origin") else "auth").inc()
                return endpoints.text(HTTPStatus(refused[0]), refused[1] + "\n")
            # Twilio's signed upgrades carry no key: sessions per key do not apply to them
            if s.max_sessions_per_key and (s.api_keys or s.api_key_hashes) and not twilio_signed and not self._hold_key(connection, request):
                metrics.SESSIONS_REFUSED.labels("key_limit").inc()
                return endpoints.too_many(5, f"this API key has {s.max_sessions_per_key} connections open (server.max_sessions_per_key)\n")
            return None  # go on with the WebSocket handshake
        if path == REVIEW_PATH:
            return self._review_request(connection, request)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return endpoints.text(HTTPStatus.NOT_FOUND, f"WebSocket endpoint is {VOICE_PATH}\n")
        if path == "/healthz":
            return endpoints.text(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            detail = readiness_detail(self.hub, self.settings)
            status = HTTPStatus.OK if detail["ready"] else HTTPStatus.SERVICE_UNAVAILABLE
            return endpoints.as_json(status, detail if self._trusted(connection, request) else {"ready": detail["ready"]})
        if path == "/metrics":
            if self.settings.server.metrics_port is not None:
                return endpoints.text(HTTPStatus.NOT_FOUND, "not found (metrics are on server.metrics_port)\n")
            if not self._trusted(connection, request):
                return endpoints.text(HTTPStatus.FORBIDDEN, "metrics are served to loopback clients and with Authorization: Bearer KEY\n")
            return endpoints.metrics()
        if path == "/favicon.ico":
            return endpoints.response(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        page = endpoints.static(path)
        return page or endpoints.text(HTTPStatus.NOT_FOUND, "not found\n")

    def _review_request(self, connection: ServerConnection, request):
        """/v1/review (the review page's WebSocket): an operator key (capture.operator_key_hashes), same origin."""
        client = auth.client_address(connection.remote_address, request.headers)
        retry = self.auth_fails.retry_after(client)
        if retry is not None:
            return endpoints.too_many(retry, "too many failed authentications from your address, try again later\n")
        refused = review.check(request, self.settings, self.capture)
        if refused:
            if refused[0] == HTTPStatus.UNAUTHORIZED:
                self.auth_fails.failed(client)
            return endpoints.text(HTTPStatus(refused[0]), refused[1] + "\n")
        return None

    def _trusted(self, connection: ServerConnection, request) -> bool:
        """May this request see internals (auth.trusted: loopback, or a valid bearer key)?
        A wrong bearer key counts as a failed authentication; a throttled address is not trusted."""
        remote, headers = connection.remote_address, request.headers
        client = auth.client_address(remote, headers)
        if self.auth_fails.retry_after(client) is not None:
            return auth.is_loopback(client)
        if auth.trusted(remote, headers, self.settings.server):
            return True
        if auth.bearer_key(headers) is not None:
            self.auth_fails.failed(client)
        return False

    def _hold_key(self, connection: ServerConnection, request) -> bool:
        """Count this connection against its API key until it closes; False if the key is at its limit."""
        kid = auth.hash_key(auth.presented_key(request.path, request.headers) or "")  # counted by the key's sha256
        if self.key_connections.get(kid, 0) >= self.settings.server.max_sessions_per_key:
            return False
        self.key_connections[kid] = self.key_connections.get(kid, 0) + 1

        async def release() -> None:
            try:
                await connection.wait_closed()
            finally:
                left = self.key_connections.get(kid, 1) - 1
                if left > 0:
                    self.key_connections[kid] = left
                else:
                    self.key_connections.pop(kid, None)

        task = asyncio.ensure_future(release())
        self._key_releases.add(task)
        task.add_done_callback(self._key_releases.discard)
        return True

    def _metrics_request(self, connection: ServerConnection, request):
        """The separate metrics listener (server.metrics_port): /metrics and /healthz, nothing else."""
        path = urlsplit(request.path).path
        if path == "/metrics":
            return endpoints.metrics()
        if path == "/healthz":
            return endpoints.text(HTTPStatus.OK, "ok\n")
        return endpoints.text(HTTPStatus.NOT_FOUND, "not found\n")

    def _process_response(self, connection: ServerConnection, request, response) -> None:
        """The access log: one line per request; query values (``?token=``) are never logged."""
        path = urlsplit(request.path).path
        level = logging.DEBUG if path in ("/healthz", "/readyz", "/metrics") and response.status_code < 400 else logging.INFO
        if access_log.isEnabledFor(level):
            remote = connection.remote_address[0] if connection.remote_address else "-"
            access_log.log(level, '%s "GET %s" %d', remote, auth.redact_path(request.path), response.status_code)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        if urlsplit(ws.request.path).path == REVIEW_PATH:
            await review.handle(ws, self.capture.store, self.settings.server.max_frame_bytes)
            return
        if self.stopping:
            metrics.SESSIONS_REFUSED.labels("shutting_down").inc()
            await outgoing.close(ws, 1001, "server shutting down")
            return
        if not self.sessions.admit(self.settings.server.max_sessions):
            metrics.SESSIONS_REFUSED.labels("capacity").inc()
            await outgoing.close(ws, 1013, "at capacity, try again later")
            return
        self.connections.add(ws)
        try:
            services = await self.hub.wait(self.settings.server.ready_wait_s)
            if services is None:
                metrics.SESSIONS_REFUSED.labels("not_ready").inc()
                await outgoing.close(ws, 1013, "models are not ready, try again later")
                return
            if urlsplit(ws.request.path).path == TWILIO_PATH:
                await handle_twilio(ws, services, self.settings, self.sessions)
            elif urlsplit(ws.request.path).path in CARRIER_PATHS:
                await handle_carrier(ws, services, self.settings, self.sessions)
            else:
                await handle_native(ws, services, self.settings, self.sessions)
        finally:
            self.sessions.release()
            self.connections.discard(ws)

    async def start(self) -> None:
        """Raises CaptureError (one line) when capture is enabled but cannot work (no key, unwritable dir)."""
        s = self.settings.server
        if self.settings.capture.enabled:
            ready = self.hub.services if getattr(self.hub, "ready", False) else None
            self.capture = getattr(ready, "capture", None) or open_capture(self.settings.capture)
            self.hub.capture = self.capture
            self._purger = asyncio.ensure_future(self._purge_loop())
        self.hub.start()
        self._loop_lag = asyncio.ensure_future(metrics.watch_loop_lag())  # dauys_event_loop_lag_seconds
        self._server = await serve(
            self._handler,
            s.host,
            s.port,
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=max(4 * s.max_frame_bytes, 1 << 20),
            max_queue=32,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            server_header="dauys",
        )
        if s.audiosocket_port is not None:
            from server.audiosocket import serve_audiosocket

            self._audiosocket = await serve_audiosocket(s.audiosocket_host, s.audiosocket_port, self.hub, self.settings, self.sessions)
        if s.metrics_port is not None:
            self._metrics = await serve(
                _no_sessions, s.metrics_host, s.metrics_port, process_request=self._metrics_request,
                process_response=self._process_response, server_header="dauys",
            )

    async def switch_asr(self, asr_settings) -> str:
        """Hot model switch: new sessions get ``asr_settings.model``; calls in progress keep theirs.

        Returns the new model id; raises server.services.SwitchError (old model kept) on failure.
        """
        svc = await self.hub.switch_asr(asr_settings)
        self.settings = self.settings.model_copy(update={"asr": asr_settings})
        self._asr_target = _model_target(asr_settings.model)
        metrics.MODEL_SWITCHES.inc()
        if self._retirer is None or self._retirer.done():
            self._retirer = asyncio.ensure_future(self._retire_old_models())
        return svc.asr.model_id

    async def _purge_loop(self) -> None:
        """capture.retention_days: expired calls are deleted at start and every hour (in a thread)."""
        days = self.settings.capture.retention_days
        while True:
            try:
                gone = await asyncio.to_thread(self.capture.store.purge, days)
                if gone:
                    log.info("capture: %d calls older than %d days deleted", len(gone), days)
            except Exception as e:  # noqa: BLE001 - never stop the server for this
                log.error("capture: retention purge failed: %s", type(e).__name__)
            await asyncio.sleep(PURGE_EVERY_S)

    def asr_changed(self, asr_settings) -> bool:
        """Does reloading ``asr_settings`` mean another model? A changed section, or the same ``asr.model``
        path now leading elsewhere (a symbolic link repointed by `dauys finetune --from-capture`)."""
        return asr_settings != self.settings.asr or _model_target(asr_settings.model) != self._asr_target

    async def _retire_old_models(self) -> None:
        while self.hub.retire(list(self.sessions.values())):
            await asyncio.sleep(1.0)

    @property
    def audiosocket_port(self) -> int | None:
        return self._audiosocket.sockets[0].getsockname()[1] if self._audiosocket else None

    @property
    def metrics_port(self) -> int | None:
        return self._metrics.sockets[0].getsockname()[1] if self._metrics else None

    async def shutdown(self, grace_s: float) -> None:
        """Graceful stop: accept nothing new, let replies being spoken finish (up to
        ``grace_s``), then close every session with 1001 (going away)."""
        self.stopping = True
        if self._server is not None:
            self._server.close(close_connections=False)
        if self._audiosocket is not None:
            self._audiosocket.close()
        # finals already endpointed, the replies they start, replies being spoken: until none is left
        # (a final's reply starts after it) or grace_s is over
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        owed = [t for s in self.sessions.values() for t in s.in_flight()]
        if owed:
            log.info("shutdown: waiting up to %.0fs for %d finals and replies in progress", grace_s, len(owed))
        while owed and loop.time() < deadline:
            await asyncio.wait(owed, timeout=deadline - loop.time())
            owed = [t for s in self.sessions.values() for t in s.in_flight()]
        # behind what each session has queued (the end of a reply's audio, its audio_end): close 1001
        for session in list(self.sessions.values()):
            session.outbox_put_nowait(Close(1001, "server shutting down"))
        if self.connections:
            await asyncio.wait([asyncio.ensure_future(ws.wait_closed()) for ws in self.connections], timeout=outgoing.CLOSE_WAIT_S)
        # whatever is left (a connection without a session yet, a full outbox): close it directly, all at once
        await asyncio.gather(*(outgoing.close(ws, 1001, "server shutting down", 2.0) for ws in list(self.connections)))
        await self.stop()

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
        if self.capture is not None:
            await asyncio.to_thread(self.capture.flush, 10.0)
        if self._loop_lag is not None:
            self._loop_lag.cancel()
        if self._audiosocket is not None:
            self._audiosocket.close()
        if self._metrics is not None:
            self._metrics.close()
            await self._metrics.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.hub.close()


def _model_target(model: str) -> str:
    """Where a local ``asr.model`` path really leads (symbolic links resolved); other names as they are."""
    from pathlib import Path

    p = Path(model).expanduser()
    try:
        return str(p.resolve()) if p.exists() else model
    except OSError:
        return model


async def handle_carrier(ws: ServerConnection, services, settings, registry) -> None:
    """A call on one of CARRIER_PATHS, by its path."""
    from server.asterisk_ws import handle_asterisk_ws
    from server.transfer import for_carrier

    path = urlsplit(ws.request.path).path
    if path == ASTERISK_WS_PATH:
        await handle_asterisk_ws(ws, services, settings, registry, transfer=for_carrier("asterisk", settings))
    elif path == FREESWITCH_PATH:
        from server.freeswitch import handle_freeswitch

        await handle_freeswitch(ws, services, settings, registry, transfer=for_carrier("freeswitch", settings))
    elif path == TELNYX_PATH:
        from server.telnyx import handle_telnyx

        await handle_telnyx(ws, services, settings, registry, transfer=for_carrier("telnyx", settings))
    elif path == VONAGE_PATH:
        from server.vonage import handle_vonage

        await handle_vonage(ws, services, settings, registry)


async def _no_sessions(ws: ServerConnection) -> None:  # pragma: no cover - the metrics listener answers every request itself
    await ws.close(1008)


def readiness_detail(hub, settings) -> dict:
    """The /readyz body for loopback and keyed clients; others get only its ``ready``."""
    if hub.ready:
        svc = hub.services
        return {
            "ready": True, "asr": {"model": svc.asr.model_id, "device": svc.asr.device, "compute_type": svc.asr.compute_type},
            "languages": settings.asr.languages, "compliance": settings.compliance.classification(),
        }
    return {"ready": False, "error": hub.error, "compliance": settings.compliance.classification()}


def check_bind(settings) -> None:
    s = settings.server
    from server.auth import is_loopback

    as_host = s.audiosocket_host
    if s.audiosocket_port is not None and not is_loopback(as_host) and as_host != "localhost" and all(is_loopback(n.split("/")[0]) for n in s.audiosocket_allow):
        raise SystemExit(
            f"dauys: AudioSocket on {as_host} would accept loopback peers only: list Asterisk's addresses in "
            "server.audiosocket_allow (e.g. [\"10.0.0.5\"]); the protocol has no authentication or encryption, "
            "so keep it on a private network (VLAN, WireGuard, SSH tunnel)"
        )
    twilio_only = bool(settings.twilio.auth_token.get_secret_value())  # /v1/twilio signed; /v1/voice stays loopback-only
    if not s.api_keys and not s.api_key_hashes and not s.allow_unauthenticated_remote and not twilio_only and not is_loopback(s.host) and s.host != "localhost":
        raise SystemExit(
            f"dauys: refusing to listen on {s.host} without API keys: add --api-key KEY (or server.api_keys, server.api_key_hashes), "
            "or twilio.auth_token (DAUYS_TWILIO__AUTH_TOKEN) to serve only Twilio's signed requests, "
            "or set server.allow_unauthenticated_remote = true if a trusted proxy authenticates callers"
        )
    for warning in twilio_auth.bind_warnings(settings):
        log.warning(warning)


def _url_host(host: str) -> str:
    """``host`` as it stands in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


async def serve_forever(settings, reload_settings=None) -> int:
    """Serve until SIGINT/SIGTERM (graceful stop). With ``reload_settings`` (a callable
    returning fresh Settings), SIGHUP re-reads the configuration and switches the ASR
    model if the ``asr`` section changed, without dropping calls."""
    check_bind(settings)
    if not settings.session.spoken_disclosure:
        log.warning(
            "session.spoken_disclosure is off: callers will not HEAR that an AI answers (Law 230-VIII Art. 21); "
            "the disclosure is only sent as text in `ready`"
        )
    server = DauysServer(settings)
    try:
        await server.start()
    except CaptureError as e:  # capture on but unusable is never silent
        print(f"dauys: error: {e}", file=sys.stderr, flush=True)
        server.hub.close()
        return 2
    s = settings.server
    shown = _url_host(s.host)
    print(f"dauys: listening on http://{shown}:{server.port}/ (web demo), ws://{shown}:{server.port}{VOICE_PATH}", flush=True)
    if server.audiosocket_port is not None:
        print(f"dauys: AudioSocket on tcp://{_url_host(s.audiosocket_host)}:{server.audiosocket_port}", flush=True)
    if server.metrics_port is not None:
        print(f"dauys: metrics on http://{_url_host(s.metrics_host)}:{server.metrics_port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover
            pass
    if reload_settings is not None:

        async def reload() -> None:
            try:
                fresh = await asyncio.to_thread(reload_settings)
            except (Exception, SystemExit) as e:  # a bad edit of the config file must not stop the server
                log.error("reload: configuration not reloaded: %s", e)
                return
            if not server.asr_changed(fresh.asr):
                log.info("reload: the asr section is unchanged; nothing to switch (other sections need a restart)")
                return
            try:
                model_id = await server.switch_asr(fresh.asr)
            except SwitchError as e:
                log.error("reload: %s", e)
                return
            print(f"dauys: ASR model switched to {model_id} (new sessions; calls in progress keep theirs)", flush=True)

        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
        except (NotImplementedError, AttributeError):  # pragma: no cover
            pass
    load = asyncio.ensure_future(server.hub.wait(float("inf")))
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([load, waiter], return_when=asyncio.FIRST_COMPLETED)
    if load.done():
        if server.hub.error:
            print(f"dauys: error: {server.hub.error}", file=sys.stderr, flush=True)
            await server.stop()
            return 2
        svc = server.hub.services
        print(f"dauys: ready: ASR {svc.asr.model_id} on {svc.asr.device}/{svc.asr.compute_type}", flush=True)
    await waiter
    log.info("stopping: %d sessions open", len(server.sessions))
    await server.shutdown(settings.server.shutdown_grace_s)
    from pipeline import webhook

    await webhook.drain(10.0)  # handoff records still being delivered
    return 0
