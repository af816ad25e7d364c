"""Admission: API keys, loopback-only default, capacity, readiness (in-process servers on 127.0.0.1:0)."""

import asyncio
import json
import subprocess
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server import auth
from server.app import check_bind
from tests.conftest import ROOT, make_settings

START = json.dumps({"type": "start", "output": {"pacing": "none"}})


def url(server, query=""):
    return f"ws://127.0.0.1:{server.port}/v1/voice{query}"


async def test_api_key_required_when_configured(make_server):
    server = await make_server(server={"api_keys": ["s3cret-key"]})
    with pytest.raises(InvalidStatus) as e:
        async with connect(url(server)):
            pass
    assert e.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as e:
        async with connect(url(server), additional_headers={"Authorization": "Bearer wrong"}):
            pass
    assert e.value.response.status_code == 401
    for kwargs, query in (({"additional_headers": {"Authorization": "Bearer s3cret-key"}}, ""), ({}, "?token=s3cret-key")):
        async with connect(url(server, query), **kwargs) as ws:
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"


def test_loopback_only_without_keys():
    assert auth.check("/v1/voice", {}, ("127.0.0.1", 5000), [], False) is None
    assert auth.check("/v1/voice", {}, ("::1", 5000, 0, 0), [], False) is None
    assert auth.check("/v1/voice", {}, ("203.0.113.7", 5000), [], False)[0] == 403
    assert auth.check("/v1/voice", {}, ("203.0.113.7", 5000), [], True) is None
    assert auth.key_ok("k2", ["k1", "k2"]) and not auth.key_ok("k", ["k1", "k2"]) and not auth.key_ok(None, ["k1"])


def test_refuses_to_bind_off_loopback_without_keys():
    with pytest.raises(SystemExit) as e:
        check_bind(make_settings(server={"host": "0.0.0.0"}))
    assert "--api-key" in str(e.value)
    check_bind(make_settings(server={"host": "0.0.0.0", "api_keys": ["k"]}))
    check_bind(make_settings(server={"host": "0.0.0.0", "allow_unauthenticated_remote": True}))
    check_bind(make_settings())


def test_serve_command_exits_with_one_line_when_binding_off_loopback_without_keys():
    p = subprocess.run([sys.executable, "-m", "server", "serve", "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode != 0
    assert "refusing to listen" in p.stderr and "Traceback" not in p.stderr


async def test_capacity_is_enforced_with_1013(make_server):
    server = await make_server(server={"max_sessions": 1})
    async with connect(url(server)) as first:
        await first.send(START)
        assert json.loads(await first.recv())["type"] == "ready"
        async with connect(url(server)) as second:
            with pytest.raises(ConnectionClosed) as e:
                await second.recv()
            assert e.value.rcvd.code == 1013
    # the slot is free again
    await asyncio.sleep(0.1)
    async with connect(url(server)) as third:
        await third.send(START)
        assert json.loads(await third.recv())["type"] == "ready"


async def test_sessions_wait_for_models_then_1013(services):
    from server.app import DauysServer

    class NeverReady:
        services = None
        error = None
        ready = False

        async def wait(self, timeout):
            await asyncio.sleep(timeout)
            return None

        def start(self):
            pass

        def close(self):
            pass

    server = DauysServer(make_settings(server={"port": 0, "ready_wait_s": 0.2}), hub=NeverReady())
    await server.start()
    try:
        from tests.conftest import http_get

        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        async with connect(url(server)) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1013
    finally:
        server._server.close()
        await server._server.wait_closed()


async def test_a_fault_in_one_session_closes_it_with_1011_and_spares_the_other(make_server, monkeypatch):
    from pipeline import segmenter

    server = await make_server()
    real_push = segmenter.Segmenter.push

    def push(self, samples):
        if getattr(self, "poisoned", False):
            raise RuntimeError("injected fault")
        return real_push(self, samples)

    monkeypatch.setattr(segmenter.Segmenter, "push", push)
    async with connect(url(server)) as bad, connect(url(server)) as good:
        for ws in (bad, good):
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"
        # poison one of the two sessions' segmenters
        live = list(server.sessions.values())
        assert len(live) == 2
        live[0]._segmenter.poisoned = True
        poisoned_id = live[0].id
        for ws in (bad, good):
            await ws.send(b"\x00\x00" * 1600)
        results = {}
        for name, ws in (("bad", bad), ("good", good)):
            try:
                async with asyncio.timeout(10):
                    async for msg in ws:
                        if isinstance(msg, bytes):
                            continue  # disclosure audio
                        results.setdefault(name, []).append(json.loads(msg))
            except TimeoutError:
                results.setdefault(name, []).append("open")
            except ConnectionClosed:
                pass
        closed = [name for name, ws in (("bad", bad), ("good", good)) if ws.close_code == 1011]
        assert len(closed) == 1, (results, poisoned_id)
        survivor = good if closed == ["bad"] else bad
        await survivor.send(json.dumps({"type": "text", "text": "сәлем"}))
        async with asyncio.timeout(20):
            while isinstance(msg := await survivor.recv(), bytes) or json.loads(msg)["type"] != "transcript":
                pass
        assert json.loads(msg)["text"] == "сәлем"
        faulted = results[closed[0]]
        assert any(isinstance(e, dict) and e.get("code") == "internal_error" for e in faulted)
