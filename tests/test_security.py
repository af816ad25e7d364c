"""Security: hashed API keys compared in constant time, the Origin allowlist, no secret in any log line."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from models.audio import Encoding, encode_wire
from server import auth
from server.app import check_bind
from server.config import ConfigError
from tests.helpers.audio import espeak
from tests.helpers.paths import ROOT
from tests.helpers.server import ServeProcess, make_settings

START = json.dumps({"type": "start", "output": {"pacing": "none"}})


def url(server, query=""):
    return f"ws://127.0.0.1:{server.port}/v1/voice{query}"


async def _status(uri, **kwargs) -> int:
    """101 if the WebSocket opened (and a session started), else the HTTP status of the refusal."""
    try:
        async with connect(uri, **kwargs) as ws:
            await ws.send(START)
            assert json.loads(await ws.recv())["type"] == "ready"
            return 101
    except InvalidStatus as e:
        return e.response.status_code


def _refused(reason: str) -> float:
    from pipeline.metrics import REGISTRY

    return REGISTRY.get_sample_value("dauys_sessions_refused_total", {"reason": reason}) or 0.0


PLAIN = "plain-key-0123456789"


async def test_hashed_and_plain_keys_work_in_header_and_query(make_server):
    hashed = "k3y-kept-only-as-a-hash"
    server = await make_server(server={"port": 0, "api_keys": [PLAIN], "api_key_hashes": [auth.hash_key(hashed).upper().replace("SHA256", "sha256")]})
    for key in (PLAIN, hashed):
        assert await _status(url(server), additional_headers={"Authorization": f"Bearer {key}"}) == 101
        assert await _status(url(server, f"?token={key}")) == 101
    before = _refused("auth")
    for bad in ({}, {"additional_headers": {"Authorization": f"Bearer {PLAIN[:-1]}"}}, {"additional_headers": {"Authorization": f"Bearer {auth.hash_key(hashed)}"}}):
        assert await _status(url(server), **bad) == 401
    assert await _status(url(server, "?token=")) == 401
    assert _refused("auth") == before + 4


def test_every_key_is_compared_every_time(monkeypatch):
    """No early exit: the same number of fixed-length comparisons whichever key matches, or none."""
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys, hashes = ["first-key", "second", "a-much-longer-third-key-than-the-others"], [auth.hash_key("fourth")]
    for presented, expected in (("first-key", True), ("fourth", True), ("a-much-longer-third-key-than-the-others", True), ("f", False), ("", False), (None, False)):
        calls.clear()
        assert auth.key_ok(presented, keys, hashes) is expected
        assert calls == [(32, 32)] * 4, (presented, calls)


def test_hash_format_and_origins_are_validated():
    with pytest.raises(ConfigError, match="api_key_hashes"):
        make_settings(server={"api_key_hashes": ["md5:abc"]})
    with pytest.raises(ConfigError, match="api_key_hashes"):
        make_settings(server={"api_key_hashes": ["sha256:" + "0" * 63]})
    with pytest.raises(ConfigError, match="allowed_origins"):
        make_settings(server={"allowed_origins": ["shop.example.kz"]})
    with pytest.raises(ConfigError, match="allowed_origins"):
        make_settings(server={"allowed_origins": ["https://shop.example.kz/page"]})
    s = make_settings(server={"allowed_origins": ["HTTPS://Shop.Example.kz/", "*"]})
    assert s.server.allowed_origins == ["https://shop.example.kz", "*"]
    from server.config import load_settings

    env = {"DAUYS_SERVER__API_KEY_HASHES": f"{auth.hash_key('a')},{auth.hash_key('b')}", "DAUYS_SERVER__ALLOWED_ORIGINS": "https://a.kz,https://b.kz"}
    s = load_settings(environ=env)
    assert s.server.api_key_hashes == [auth.hash_key("a"), auth.hash_key("b")] and s.server.allowed_origins == ["https://a.kz", "https://b.kz"]


def test_hashed_keys_allow_binding_off_loopback():
    with pytest.raises(SystemExit):
        check_bind(make_settings(server={"host": "0.0.0.0"}))
    check_bind(make_settings(server={"host": "0.0.0.0", "api_key_hashes": [auth.hash_key("k")]}))


def test_hash_key_command():
    p = subprocess.run([sys.executable, "-m", "server", "hash-key"], input="my secret key\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "sha256:" + hashlib.sha256(b"my secret key").hexdigest()
    assert "my secret key" not in p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "server", "hash-key", "--new"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    key, digest = p.stdout.split()
    assert p.returncode == 0 and len(key) >= 40 and digest == auth.hash_key(key)
    make_settings(server={"api_key_hashes": [digest]})  # valid as configured
    p = subprocess.run([sys.executable, "-m", "server", "hash-key"], input="", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "no key" in p.stderr


async def test_origin_same_host_allowed_others_refused_with_403(make_server):
    server = await make_server()
    own = f"http://127.0.0.1:{server.port}"
    assert await _status(url(server)) == 101  # no Origin: not a browser
    assert await _status(url(server), origin=own) == 101  # the web demo served by this server
    before = _refused("origin")
    for other in ("https://evil.example", f"http://localhost:{server.port}", f"http://127.0.0.1:{server.port + 1}", "null"):
        assert await _status(url(server), origin=other) == 403, other
    assert _refused("origin") == before + 4


async def test_origin_allowlist_and_keys_together(make_server):
    server = await make_server(server={"port": 0, "allowed_origins": ["https://shop.example.kz"], "api_keys": [PLAIN]})
    assert await _status(url(server, f"?token={PLAIN}"), origin="https://shop.example.kz") == 101
    assert await _status(url(server, f"?token={PLAIN}"), origin=f"http://127.0.0.1:{server.port}") == 101
    # a page elsewhere that got hold of a key still cannot open a call from a visitor's browser
    assert await _status(url(server, f"?token={PLAIN}"), origin="https://evil.example") == 403
    assert await _status(url(server), origin="https://shop.example.kz") == 401
    anyone = await make_server(server={"port": 0, "allowed_origins": ["*"]})
    assert await _status(url(anyone), origin="https://evil.example") == 101


def test_origin_check_unit():
    assert auth.origin_ok({"Origin": "https://voice.example.kz", "Host": "voice.example.kz"}, [])  # behind a TLS proxy
    assert auth.origin_ok({"Origin": "https://voice.example.kz", "Host": "voice.example.kz:443"}, [])
    assert not auth.origin_ok({"Origin": "http://voice.example.kz", "Host": "voice.example.kz:8765"}, [])
    assert auth.origin_ok({"Origin": "http://[::1]:8765", "Host": "[::1]:8765"}, [])
    assert not auth.origin_ok({"Origin": "http://127.0.0.1:99999", "Host": "127.0.0.1:99999"}, [])
    assert not auth.origin_ok({"Origin": "https://a.kz"}, [])  # no Host to compare with


@pytest.fixture(scope="module")
def keyed_server():
    """`dauys serve` with a hashed key and JSON logs at debug level (the most a log could show)."""
    server = ServeProcess("--log-format", "json", "--log-level", "debug", env={"DAUYS_SERVER__API_KEY_HASHES": auth.hash_key(KEY)})
    yield server
    server.kill()


KEY = "Zx9-the-real-key-7Qw"
WRONG = "Wr0ng-but-maybe-a-typo-of-another-key"


@pytest.mark.slow
async def test_no_key_in_any_log_line_and_a_session_id_on_every_session_line(keyed_server):
    srv = keyed_server
    async with connect(srv.ws + f"?token={KEY}") as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}}))
        ready = json.loads(await ws.recv())
        # a spoken question: its final is logged from a task the session spawned
        question = np.concatenate([espeak("Картам бұғатталып қалды", "kk", 140), np.zeros(16000, np.float32)])
        pcm = encode_wire(question, Encoding.PCM_S16LE)
        for i in range(0, len(pcm), 6400):
            await ws.send(pcm[i : i + 6400])
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(60):
            async for _ in ws:
                pass
    async with connect(srv.ws, additional_headers={"Authorization": f"Bearer {KEY}"}):
        pass
    async with connect(srv.ws + f"?api_key={WRONG}&token={KEY}"):  # any query value is kept out of the log
        pass
    for query, headers in ((f"?token={WRONG}", {}), ("", {"Authorization": f"Bearer {WRONG}"})):
        with pytest.raises(InvalidStatus):
            async with connect(srv.ws + query, additional_headers=headers):
                pass
    await asyncio.sleep(0.5)
    everything = "".join(srv.out + srv.err)
    assert KEY not in everything and WRONG not in everything
    lines = [json.loads(line) for line in srv.err if line.strip()]  # every log line is JSON
    access = [line["msg"] for line in lines if line["logger"] == "dauys.access"]
    assert any("/v1/voice?token=[REDACTED]" in m and " 101" in m for m in access), access
    assert any("/v1/voice?token=[REDACTED]" in m and " 401" in m for m in access), access
    sid = ready["session_id"]
    mine = [line for line in lines if sid in line["msg"]]
    assert len(mine) >= 3 and any(" final u1 " in line["msg"] for line in mine), lines  # started, final, closed
    assert all(line.get("session") == sid for line in mine), mine
    session_loggers = [line for line in lines if line["logger"] in ("dauys.session", "dauys.native", "dauys.reply")]
    assert session_loggers and all(line.get("session") for line in session_loggers), session_loggers


MARKER = "Zhyldyrmaqtan"
"""A made-up word in the caller's text: no personal data, so redaction keeps it; only not logging it keeps it out."""


@pytest.mark.slow
async def test_caller_words_never_reach_the_log_even_at_debug_level(keyed_server):
    from pipeline.privacy import redact
    from tests.helpers.server import http_get

    srv = keyed_server
    said = f"Менің ИИН 900101300126, кодовое слово {MARKER}, картам бұғатталып қалды"
    assert MARKER in redact(said) and MARKER in redact(f"оператор {MARKER}")
    events = []
    async with connect(srv.ws + f"?token={KEY}") as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}}))
        await ws.send(json.dumps({"type": "text", "text": said}))
        await ws.send(json.dumps({"type": "text", "text": f"оператор {MARKER}"}))  # a handoff, whose summary quotes the caller
        async with asyncio.timeout(60):
            async for m in ws:
                if isinstance(m, str):
                    events.append(json.loads(m))
    assert any(e["type"] == "handoff" and MARKER in e["summary"] for e in events)  # it went all the way through
    await asyncio.to_thread(http_get, srv.url + "/healthz")  # logged at debug level
    await asyncio.sleep(0.5)
    lines = [json.loads(line) for line in srv.err if line.strip()]
    assert any(line["level"] == "debug" for line in lines)  # the log is at debug level
    everything = "".join(srv.out + srv.err)
    assert MARKER.lower() not in everything.lower() and "900101300126" not in everything


def test_secret_filter_unit():
    from server.logs import redact_secrets

    assert redact_secrets("GET /v1/voice?token=abc&x=1") == "GET /v1/voice?token=[REDACTED]&x=1"
    assert redact_secrets("Authorization: Bearer abc.def") == "Authorization: Bearer [REDACTED]"
    assert redact_secrets("Authorization: Basic dXNlcjpwYXNz") == "Authorization: [REDACTED]"
    assert redact_secrets("monkey=banana turnkey solution") == "monkey=banana turnkey solution"
