"""Who sees what: /metrics and the detail of /readyz (loopback or keyed clients only, or a separate
metrics listener), the AudioSocket allowlist, the failed-authentication throttle, sessions per key,
the minimum key length."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server import auth
from server.app import DauysServer, check_bind
from server.config import ConfigError
from tests.helpers.paths import ROOT
from tests.helpers.server import make_settings

START = json.dumps({"type": "start", "output": {"pacing": "none"}})
KEY = "access-test-key-0123456789"
OTHER_KEY = "another-tenant-key-0123456789"
REMOTE = {"X-Forwarded-For": "203.0.113.7"}
"""A caller relayed by a reverse proxy on this machine: tests run on loopback, so this is the remote view."""


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


async def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    return await asyncio.to_thread(_get, url, headers)


async def _status(uri: str, headers: dict | None = None) -> tuple[int, dict]:
    """(101, {}) if a session started, else the refusal's HTTP status and headers."""
    try:
        async with connect(uri, additional_headers=headers or {}) as ws:
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"
            return 101, {}
    except InvalidStatus as e:
        return e.response.status_code, e.response.headers


def _refused(reason: str) -> float:
    from pipeline.metrics import REGISTRY

    return REGISTRY.get_sample_value("dauys_sessions_refused_total", {"reason": reason}) or 0.0


def _local_non_loopback_ipv4() -> str | None:
    """An address of this machine that is not loopback (traffic to it stays on the machine)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for ip in out:
        if "." in ip and not auth.is_loopback(ip):
            try:
                with socket.socket() as s:
                    s.bind((ip, 0))
                return ip
            except OSError:
                continue
    return None


# ---------------------------------------------------------------- metrics and readiness


def test_who_is_trusted_unit():
    s = make_settings(server={"api_keys": [KEY]}).server
    bare = make_settings().server
    assert auth.trusted(("127.0.0.1", 5000), {}, s) and auth.trusted(("::1", 5000, 0, 0), {}, bare)
    assert not auth.trusted(("203.0.113.7", 5000), {}, s)
    assert auth.trusted(("203.0.113.7", 5000), {"Authorization": f"Bearer {KEY}"}, s)
    assert not auth.trusted(("203.0.113.7", 5000), {"Authorization": f"Bearer {KEY[:-1]}"}, s)
    assert not auth.trusted(("203.0.113.7", 5000), {"Authorization": "Bearer "}, bare)  # no keys: nothing matches
    # a reverse proxy on this machine relaying a remote caller is not a loopback client
    assert not auth.trusted(("127.0.0.1", 5000), REMOTE, s)
    assert auth.trusted(("127.0.0.1", 5000), {**REMOTE, "Authorization": f"Bearer {KEY}"}, s)
    # what a remote client claims in X-Forwarded-For is ignored
    assert auth.client_address(("203.0.113.7", 1), {"X-Forwarded-For": "127.0.0.1"}) == "203.0.113.7"
    assert not auth.trusted(("203.0.113.7", 1), {"X-Forwarded-For": "127.0.0.1"}, s)
    # the proxy's own entry (the last) counts, not the client's
    assert auth.client_address(("127.0.0.1", 1), {"X-Forwarded-For": "127.0.0.1, 198.51.100.2"}) == "198.51.100.2"
    assert auth.client_address(("::1", 1, 0, 0), {"X-Forwarded-For": "[2001:db8::1]:443"}) == "2001:db8::1"
    assert auth.client_address(("127.0.0.1", 1), {"X-Forwarded-For": "198.51.100.2:5555"}) == "198.51.100.2"


async def test_metrics_and_readiness_detail_only_for_loopback_or_keyed_clients(make_server):
    server = await make_server(server={"api_keys": [KEY]})
    base = f"http://127.0.0.1:{server.port}"
    status, body, _ = await get(base + "/metrics")
    assert status == 200 and b"dauys_sessions_active" in body  # loopback: Prometheus on the same host
    for headers in (REMOTE, {**REMOTE, "Authorization": f"Bearer {OTHER_KEY}"}):
        status, body, _ = await get(base + "/metrics", headers)
        assert status == 403 and b"dauys_" not in body, (headers, body)
    status, body, _ = await get(base + f"/metrics?token={KEY}", REMOTE)  # keys in URLs do not open metrics
    assert status == 403 and b"dauys_" not in body
    status, body, _ = await get(base + "/metrics", {**REMOTE, "Authorization": f"Bearer {KEY}"})
    assert status == 200 and b"dauys_sessions_active" in body

    status, body, _ = await get(base + "/readyz", REMOTE)
    assert status == 200 and json.loads(body) == {"ready": True}
    for headers in ({}, {**REMOTE, "Authorization": f"Bearer {KEY}"}):
        status, body, _ = await get(base + "/readyz", headers)
        detail = json.loads(body)
        assert status == 200 and detail["ready"] is True and detail["asr"]["model"] and detail["languages"], detail


async def test_readiness_of_a_failed_server_tells_remote_clients_nothing_but_not_ready(services):
    class Failed:
        services = None
        error = "cannot load /srv/models/secret-model: CUDA out of memory"
        ready = False

        async def wait(self, timeout):
            return None

        def start(self):
            pass

        def close(self):
            pass

    server = DauysServer(make_settings(server={"port": 0}), hub=Failed())
    await server.start()
    try:
        status, body, _ = await get(f"http://127.0.0.1:{server.port}/readyz", REMOTE)
        assert status == 503 and json.loads(body) == {"ready": False}
        status, body, _ = await get(f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and json.loads(body) == {"ready": False, "error": Failed.error, "compliance": {"risk_class": "minimum", "autonomy": "low"}}
    finally:
        await server.stop()


async def test_metrics_on_their_own_listener_and_not_on_the_main_port(make_server):
    server = await make_server(server={"api_keys": [KEY], "metrics_port": 0})
    try:
        assert server.metrics_port and server.metrics_port != server.port
        status, body, _ = await get(f"http://127.0.0.1:{server.metrics_port}/metrics")
        assert status == 200 and b"dauys_sessions_active" in body
        assert (await get(f"http://127.0.0.1:{server.metrics_port}/readyz"))[0] == 404
        for headers in ({}, {"Authorization": f"Bearer {KEY}"}):
            status, body, _ = await get(f"http://127.0.0.1:{server.port}/metrics", headers)
            assert status == 404 and b"dauys_" not in body
    finally:
        await server.stop()


async def test_a_client_on_a_non_loopback_address_gets_no_metrics_and_no_detail(make_server):
    ip = _local_non_loopback_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to serve on")
    server = await make_server(server={"host": ip, "api_keys": [KEY]})
    base = f"http://{ip}:{server.port}"
    status, body, _ = await get(base + "/metrics")
    assert status == 403 and b"dauys_" not in body
    status, body, _ = await get(base + "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, body, _ = await get(base + "/metrics", {"Authorization": f"Bearer {KEY}"})
    assert status == 200 and b"dauys_sessions_active" in body
    assert "asr" in json.loads((await get(base + "/readyz", {"Authorization": f"Bearer {KEY}"}))[1])


# ---------------------------------------------------------------- AudioSocket


def test_audiosocket_binds_to_loopback_and_needs_an_allowlist_elsewhere():
    s = make_settings(server={"host": "0.0.0.0", "api_keys": [KEY], "audiosocket_port": 9092})
    assert s.server.audiosocket_host == "127.0.0.1"  # not server.host
    check_bind(s)
    with pytest.raises(SystemExit) as e:
        check_bind(make_settings(server={"audiosocket_port": 9092, "audiosocket_host": "0.0.0.0"}))
    assert "server.audiosocket_allow" in str(e.value)
    check_bind(make_settings(server={"audiosocket_port": 9092, "audiosocket_host": "0.0.0.0", "audiosocket_allow": ["10.0.0.5", "10.1.0.0/16"]}))
    with pytest.raises(ConfigError, match="audiosocket_allow"):
        make_settings(server={"audiosocket_allow": ["10.0.0.300"]})
    assert make_settings(server={"audiosocket_allow": [" 10.1.2.3/16 "]}).server.audiosocket_allow == ["10.1.0.0/16"]
    from server.config import load_settings

    assert load_settings(environ={"DAUYS_SERVER__AUDIOSOCKET_ALLOW": "10.0.0.5,10.1.0.0/16"}).server.audiosocket_allow == ["10.0.0.5/32", "10.1.0.0/16"]
    # the same from the command line: `dauys serve --audiosocket-port P --audiosocket-host H`, checked the same way
    from server.cli import _cli_layer, build_parser

    args = build_parser().parse_args(["serve", "--audiosocket-port", "9092", "--audiosocket-host", "0.0.0.0"])
    flagged = load_settings(None, _cli_layer(args), environ={})
    assert (flagged.server.audiosocket_port, flagged.server.audiosocket_host) == (9092, "0.0.0.0")
    with pytest.raises(SystemExit, match="server.audiosocket_allow"):
        check_bind(flagged)


def test_audiosocket_allowlist_unit():
    nets = ["10.0.0.5/32", "10.1.0.0/16", "fd00::/8"]
    assert auth.ip_allowed("10.0.0.5", nets) and auth.ip_allowed("10.1.200.3", nets) and auth.ip_allowed("fd00::2", nets)
    assert auth.ip_allowed("::ffff:10.0.0.5", nets)  # a dual-stack listener sees IPv4 peers like this
    assert not auth.ip_allowed("10.0.0.6", nets) and not auth.ip_allowed("127.0.0.1", nets) and not auth.ip_allowed("junk", nets)


async def test_audiosocket_peer_outside_the_allowlist_is_cut_off_unread(make_server, caplog):
    caplog.set_level(logging.WARNING, "dauys.audiosocket")
    server = await make_server(server={"audiosocket_port": 0, "audiosocket_allow": ["192.0.2.123"]})
    before = _refused("not_allowed")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.audiosocket_port)
        try:
            async with asyncio.timeout(3):  # nothing sent: an accepted peer would be waited on for frames
                assert await reader.read(100) == b""
        except ConnectionResetError:
            pass
        writer.close()
    finally:
        server._audiosocket.close()
    assert _refused("not_allowed") == before + 1
    assert any("127.0.0.1" in r.getMessage() and "audiosocket_allow" in r.getMessage() for r in caplog.records), caplog.records


async def test_audiosocket_loopback_peer_is_accepted_by_default(make_server):
    server = await make_server(server={"audiosocket_port": 0})
    before = _refused("not_allowed")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.audiosocket_port)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await reader.read(100)  # the call waits for Asterisk's frames
        writer.close()
    finally:
        server._audiosocket.close()
    assert _refused("not_allowed") == before


# ---------------------------------------------------------------- failed authentications, sessions per key


def test_fail_throttle_unit():
    now = [1000.0]
    t = auth.FailThrottle(3, 60, max_clients=4, clock=lambda: now[0])
    for _ in range(2):
        t.failed("198.51.100.1")
    assert t.retry_after("198.51.100.1") is None
    now[0] += 10
    t.failed("198.51.100.1")
    assert t.retry_after("198.51.100.1") == 50  # the window runs from the first failure
    assert t.retry_after("198.51.100.2") is None
    now[0] += 50
    assert t.retry_after("198.51.100.1") is None and len(t) == 0  # the window has passed: forgotten
    # IPv6 clients are counted by /64
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::3"):
        t.failed(host)
    assert t.retry_after("2001:db8::ffff") is not None and t.retry_after("2001:db8:0:1::1") is None
    # bounded: the least recently failed address is forgotten first
    for i in range(10):
        t.failed(f"203.0.113.{i}")
    assert len(t) == 4
    assert auth.FailThrottle(0, 60).retry_after("x") is None  # 0 = off


async def test_failed_authentications_are_throttled_per_client_even_with_the_right_key(make_server):
    server = await make_server(server={"api_keys": [KEY], "auth_fail_limit": 3})
    uri = f"ws://127.0.0.1:{server.port}/v1/voice"
    before = _refused("throttled")
    for headers in ({}, {"Authorization": f"Bearer {OTHER_KEY}"}, {"Authorization": "Bearer guess-0123456789abcdef"}):
        assert (await _status(uri, headers))[0] == 401
    status, headers = await _status(uri, {"Authorization": f"Bearer {KEY}"})
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60, headers
    assert (await _status(uri + f"?token={KEY}"))[0] == 429
    assert _refused("throttled") == before + 2
    # another client (relayed by a proxy on this machine) is not affected
    assert (await _status(uri, {**REMOTE, "Authorization": f"Bearer {KEY}"}))[0] == 101
    # a throttled address gets no metrics with a key either, and a wrong bearer on /metrics counts as a failure
    status, body, _ = await get(f"http://127.0.0.1:{server.port}/metrics", {"X-Forwarded-For": "198.51.100.9", "Authorization": f"Bearer {OTHER_KEY}"})
    assert status == 403
    for _ in range(2):
        await get(f"http://127.0.0.1:{server.port}/metrics", {"X-Forwarded-For": "198.51.100.9", "Authorization": f"Bearer {OTHER_KEY}"})
    status, _, _ = await get(f"http://127.0.0.1:{server.port}/metrics", {"X-Forwarded-For": "198.51.100.9", "Authorization": f"Bearer {KEY}"})
    assert status == 403
    assert (await _status(uri, {"X-Forwarded-For": "198.51.100.9", "Authorization": f"Bearer {KEY}"}))[0] == 429


async def test_sessions_per_key_are_limited_with_429(make_server):
    server = await make_server(server={"api_keys": [KEY], "api_key_hashes": [auth.hash_key(OTHER_KEY)], "max_sessions_per_key": 1})
    uri = f"ws://127.0.0.1:{server.port}/v1/voice"
    before = _refused("key_limit")
    async with connect(uri, additional_headers={"Authorization": f"Bearer {KEY}"}) as first:
        await first.send(START)
        assert json.loads(await first.recv())["type"] == "ready"
        status, headers = await _status(uri + f"?token={KEY}")
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert (await _status(uri, {"Authorization": f"Bearer {OTHER_KEY}"}))[0] == 101  # another key
        assert (await _status(uri, {"Authorization": f"Bearer {OTHER_KEY}"}))[0] == 101  # one at a time: fine
    assert _refused("key_limit") == before + 1
    for _ in range(50):  # released when the connection has closed
        if not server.key_connections:
            break
        await asyncio.sleep(0.05)
    assert server.key_connections == {}
    assert (await _status(uri, {"Authorization": f"Bearer {KEY}"}))[0] == 101


def test_short_keys_are_a_config_error_naming_the_fix():
    with pytest.raises(ConfigError) as e:
        make_settings(server={"api_keys": [KEY, "short-key"]})
    assert "server.api_keys" in str(e.value) and "dauys hash-key --new" in str(e.value) and "short-key" not in str(e.value)
    make_settings(server={"api_keys": ["x" * 16]})
    p = subprocess.run([sys.executable, "-m", "server", "serve", "--port", "0", "--api-key", "change-me"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "dauys hash-key --new" in p.stderr and "change-me" not in p.stderr and "Traceback" not in p.stderr
