"""Twilio's request validation on /v1/twilio (X-Twilio-Signature), the stream secret, and DTMF 0's handoff.

Signatures are computed here with Twilio's documented algorithm
(base64(HMAC-SHA1(auth token, URL + sorted POST parameters))), checked first
against Twilio's published example, then sent the way Twilio sends them on
the WebSocket upgrade: over the ``wss://`` URL Twilio connects to, which a
TLS proxy in front of the server turns into the ``ws://`` one used here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server import twilio_auth
from server.app import check_bind
from server.config import ConfigError, load_settings
from tests.helpers.server import ServeProcess, http_get, make_settings

TOKEN = "f00dfeedc0ffee5ca1ab1e0123456789"
SILENCE = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of mu-law silence

# Twilio's published example (its security docs and the helper libraries' tests)
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234", "From": "+14158675309", "To": "+18005551212"}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def documented_signature(token: str, url: str, params: dict | None = None) -> str:
    """Twilio's algorithm written out independently of server/twilio_auth.py."""
    data = url + "".join(k + params[k] for k in sorted(params or {}))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _metric(name: str, labels: dict) -> float:
    from pipeline.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def refused() -> float:
    return _metric("dauys_sessions_refused_total", {"reason": "auth"})


def twilio_sessions() -> float:
    return _metric("dauys_sessions_total", {"transport": "twilio"})


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/v1/twilio"


def wss_url(port: int) -> str:
    """What Twilio signs: the URL it connects to (TLS ends at a proxy in front of ws_url)."""
    return f"wss://127.0.0.1:{port}/v1/twilio"


def start_message(sid: str, **params) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
        "accountSid": "AC0", "callSid": "CA" + sid[2:], "streamSid": sid, "tracks": ["inbound"],
        "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


async def upgrade_status(url: str, signature: str | None = None, *extra: tuple[str, str], **headers) -> int:
    """101 if the upgrade went through, else the HTTP status of the refusal."""
    pairs = list(headers.items()) + list(extra)
    if signature is not None:
        pairs.insert(0, ("X-Twilio-Signature", signature))
    try:
        async with connect(url, additional_headers=pairs):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


async def raw_upgrade(port: int, host: str, signature: str, extra: str = "") -> int:
    """An upgrade with a Host header of our choosing (as a proxy forwards it); the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(uuid.uuid4().bytes).decode()
    writer.write((
        f"GET /v1/twilio HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Twilio-Signature: {signature}\r\n{extra}\r\n"
    ).encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status.split()[1])


async def call(url: str, signature: str, **params) -> tuple[list[dict], int | None]:
    """connected, start, 20 ms media frames until the server's first media, stop: (what came back, close code)."""
    sid = "MZ" + uuid.uuid4().hex
    got: list[dict] = []
    async with connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
        await ws.send(CONNECTED)
        await ws.send(start_message(sid, **params))
        try:
            async with asyncio.timeout(30):
                seq = 2
                while not any(m["event"] == "media" for m in got):
                    await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid, "media": {"track": "inbound", "payload": SILENCE}}))
                    seq += 1
                    try:
                        async with asyncio.timeout(0.02):
                            got.append(json.loads(await ws.recv()))
                    except TimeoutError:
                        pass
                await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": sid, "stop": {"accountSid": "AC0", "callSid": "CA0"}}))
                async for m in ws:
                    got.append(json.loads(m))
                    if got[-1]["event"] == "mark":  # Twilio echoes a mark once playback reaches it
                        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": got[-1]["mark"]}))
        except ConnectionClosed:
            pass
    return got, ws.close_code


# ----------------------------------------------------------------------------- the algorithm
def test_signature_matches_twilios_published_vectors():
    assert twilio_auth.compute_signature(VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    assert documented_signature(VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    # a repeated parameter: each distinct value, sorted (twilio-php's RequestValidatorTest)
    repeated = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234", "1234"]}
    assert twilio_auth.compute_signature(VECTOR_TOKEN, VECTOR_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert twilio_auth.signature_ok(VECTOR_TOKEN, VECTOR_SIGNATURE, VECTOR_URL, VECTOR_PARAMS)
    # Twilio may sign the URL with the default port: kvaj... is the signature of https://mycompany.com:443/...
    assert twilio_auth.signature_ok(VECTOR_TOKEN, "kvajT1Ptam85bY51eRf/AJRuM3w=", VECTOR_URL, VECTOR_PARAMS)
    assert twilio_auth.signature_ok(VECTOR_TOKEN, VECTOR_SIGNATURE, VECTOR_URL.replace(".com", ".com:443"), VECTOR_PARAMS)
    for token, url, params, sig in (
        ("12346", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE),
        (VECTOR_TOKEN, VECTOR_URL + "&x=1", VECTOR_PARAMS, VECTOR_SIGNATURE),
        (VECTOR_TOKEN, VECTOR_URL.replace(".com", ".com:8443"), VECTOR_PARAMS, VECTOR_SIGNATURE),
        (VECTOR_TOKEN, VECTOR_URL, {**VECTOR_PARAMS, "Digits": "9999"}, VECTOR_SIGNATURE),
        (VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE[:-2]),
        (VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, ""),
        (VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, None),
        (VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, "invalid 王"),
    ):
        assert not twilio_auth.signature_ok(token, sig, url, params), (token, url, sig)


def test_the_websocket_upgrade_signs_the_url_alone():
    url = "wss://voice.example.kz/v1/twilio"
    assert twilio_auth.compute_signature(TOKEN, url) == documented_signature(TOKEN, url)
    assert twilio_auth.url_variants(url) == [url, "wss://voice.example.kz:443/v1/twilio"]
    assert twilio_auth.url_variants("wss://voice.example.kz:443/v1/twilio") == ["wss://voice.example.kz:443/v1/twilio", url]
    assert twilio_auth.url_variants("wss://[::1]:8443/v1/twilio") == ["wss://[::1]:8443/v1/twilio"]
    assert twilio_auth.signed_url("/v1/twilio", "voice.example.kz", "") == url
    assert twilio_auth.signed_url("/v1/twilio", "10.0.0.5:8765", "wss://voice.example.kz/dauys") == "wss://voice.example.kz/dauys/v1/twilio"
    assert twilio_auth.signed_url("/v1/twilio", None, "") is None


def test_signatures_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((type(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(twilio_auth.hmac, "compare_digest", counting)
    url = "wss://voice.example.kz/v1/twilio"
    for sig in (documented_signature(TOKEN, url), "x", ""):
        calls.clear()
        twilio_auth.signature_ok(TOKEN, sig, url)
        assert calls == [(bytes, 28), (bytes, 28)], calls  # both variants, every time, as bytes
    calls.clear()
    assert twilio_auth.stream_secret_ok({"secret": "abc"}, "abc") and not twilio_auth.stream_secret_ok({"secret": "abd"}, "abc")
    assert calls == [(bytes, 32), (bytes, 32)]
    assert not twilio_auth.stream_secret_ok({}, "abc") and not twilio_auth.stream_secret_ok({"secret": 1}, "abc")
    assert twilio_auth.stream_secret_ok({}, "")


# ----------------------------------------------------------------------------- configuration
def test_twilio_settings_from_the_environment_and_validated():
    s = load_settings(environ={"DAUYS_TWILIO__AUTH_TOKEN": "12345", "DAUYS_TWILIO__STREAM_SECRET": "1e5", "DAUYS_TWILIO__PUBLIC_URL": "wss://voice.example.kz/"})
    # digits stay a string (not JSON-parsed), the trailing slash goes
    assert s.twilio.auth_token.get_secret_value() == "12345" and s.twilio.stream_secret.get_secret_value() == "1e5"
    assert s.twilio.public_url == "wss://voice.example.kz"
    assert "12345" not in repr(s) and "12345" not in str(s.twilio)
    for bad in ("https://voice.example.kz", "voice.example.kz", "wss://voice.example.kz/?a=1", "wss://voice.example.kz:99999"):
        with pytest.raises(ConfigError, match="twilio.public_url"):
            make_settings(twilio={"public_url": bad})
    with pytest.raises(ConfigError, match="twilio.nope"):
        make_settings(twilio={"nope": 1})


def test_bind_rules_and_startup_warnings(caplog):
    with pytest.raises(SystemExit, match="twilio.auth_token"):
        check_bind(make_settings(server={"host": "0.0.0.0"}))
    with caplog.at_level(logging.WARNING, logger="dauys.server"):
        # Twilio only: signed requests on /v1/twilio, /v1/voice still serves loopback only
        check_bind(make_settings(server={"host": "0.0.0.0"}, twilio={"auth_token": TOKEN}))
        assert not caplog.records
        check_bind(make_settings(server={"host": "0.0.0.0", "api_keys": ["k-0123456789abcdef"]}))
        assert any("Twilio cannot present an API key" in r.getMessage() and "twilio.auth_token" in r.getMessage() for r in caplog.records)
        caplog.clear()
        check_bind(make_settings(server={"host": "0.0.0.0", "api_keys": ["k-0123456789abcdef"]}, twilio={"auth_token": TOKEN}))
        assert not caplog.records
        check_bind(make_settings(server={"host": "0.0.0.0", "allow_unauthenticated_remote": True}))
        assert any("accepts calls from anyone" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text


# ----------------------------------------------------------------------------- a real server
async def test_a_signed_upgrade_runs_a_call_and_unsigned_or_forged_ones_get_403(make_server):
    server = await make_server(twilio={"auth_token": TOKEN})
    port = server.port
    good = documented_signature(TOKEN, wss_url(port))
    sessions, refusals = twilio_sessions(), refused()
    got, code = await call(ws_url(port), good, language="kk")
    media = [m for m in got if m["event"] == "media"]
    assert media and base64.b64decode(media[0]["media"]["payload"]), got[:3]  # the spoken disclosure
    assert code == 1000 and twilio_sessions() == sessions + 1 and refused() == refusals
    forged = (
        None,  # no signature at all
        "",
        documented_signature("0" * 32, wss_url(port)),  # another account's token
        documented_signature(TOKEN, wss_url(port) + "?x=1"),  # another URL
        documented_signature(TOKEN, f"wss://127.0.0.1:{port + 1}/v1/twilio"),
        documented_signature(TOKEN, ws_url(port)),  # Twilio only connects over wss
        good[:5] + ("A" if good[5] != "A" else "B") + good[6:],  # one character off
    )
    for sig in forged:
        assert await upgrade_status(ws_url(port), sig) == 403, sig
    # a second signature header is not a way around the check
    assert await upgrade_status(ws_url(port), good, ("X-Twilio-Signature", "x")) == 403
    # refused before the handshake: no session was created, no handler ran, nothing was processed
    assert refused() == refusals + len(forged) + 1
    assert twilio_sessions() == sessions + 1 and not server.sessions and server.active == 0


async def test_api_keys_do_not_apply_to_a_signed_twilio(make_server):
    server = await make_server(server={"api_keys": ["native-key-0123456789"]}, twilio={"auth_token": TOKEN})
    port = server.port
    good = documented_signature(TOKEN, wss_url(port))
    assert await upgrade_status(ws_url(port), good) == 101  # Twilio cannot send a key and needs none
    assert await upgrade_status(ws_url(port), None, Authorization="Bearer native-key-0123456789") == 403  # a key is not a signature
    assert await upgrade_status(f"ws://127.0.0.1:{port}/v1/voice", good) == 401  # /v1/voice still needs its key
    assert await upgrade_status(f"ws://127.0.0.1:{port}/v1/voice", None, Authorization="Bearer native-key-0123456789") == 101
    # without a Twilio token, /v1/twilio keeps the API key rules: Twilio itself would get 401
    keyed = await make_server(server={"api_keys": ["native-key-0123456789"]})
    assert await upgrade_status(ws_url(keyed.port), documented_signature(TOKEN, wss_url(keyed.port))) == 401
    assert await upgrade_status(ws_url(keyed.port), None, Authorization="Bearer native-key-0123456789") == 101


async def test_public_url_behind_a_proxy(make_server):
    server = await make_server(twilio={"auth_token": TOKEN, "public_url": "wss://voice.example.kz"})
    port = server.port
    # Twilio signs the public URL; the server sees ws://127.0.0.1:port from the proxy
    assert await upgrade_status(ws_url(port), documented_signature(TOKEN, "wss://voice.example.kz/v1/twilio")) == 101
    assert await upgrade_status(ws_url(port), documented_signature(TOKEN, "wss://voice.example.kz:443/v1/twilio")) == 101
    assert await upgrade_status(ws_url(port), documented_signature(TOKEN, wss_url(port))) == 403
    prefixed = await make_server(twilio={"auth_token": TOKEN, "public_url": "wss://voice.example.kz/dauys/"})
    assert await upgrade_status(ws_url(prefixed.port), documented_signature(TOKEN, "wss://voice.example.kz/dauys/v1/twilio")) == 101
    assert await upgrade_status(ws_url(prefixed.port), documented_signature(TOKEN, "wss://voice.example.kz/v1/twilio")) == 403
    # no public_url: rebuilt from the Host header the proxy forwards, with or without the default port
    plain = await make_server(twilio={"auth_token": TOKEN})
    for host, signed in (
        ("voice.example.kz", "wss://voice.example.kz/v1/twilio"),
        ("voice.example.kz", "wss://voice.example.kz:443/v1/twilio"),
        ("voice.example.kz:443", "wss://voice.example.kz/v1/twilio"),
        ("voice.example.kz:8443", "wss://voice.example.kz:8443/v1/twilio"),
    ):
        assert await raw_upgrade(plain.port, host, documented_signature(TOKEN, signed)) == 101, (host, signed)
    assert await raw_upgrade(plain.port, "evil.example", documented_signature(TOKEN, "wss://voice.example.kz/v1/twilio")) == 403
    assert await raw_upgrade(plain.port, "voice.example.kz:8443", documented_signature(TOKEN, "wss://voice.example.kz/v1/twilio")) == 403
    signed = documented_signature(TOKEN, "wss://voice.example.kz/v1/twilio")
    assert await raw_upgrade(plain.port, "voice.example.kz", signed, "Host: evil.example\r\n") == 403  # which Host? neither


async def test_a_wrong_or_missing_stream_secret_ends_the_call_before_any_audio(make_server):
    server = await make_server(twilio={"auth_token": TOKEN, "stream_secret": "s3cret-param"})
    url, sig = ws_url(server.port), documented_signature(TOKEN, wss_url(server.port))
    got, code = await call(url, sig, language="kk", secret="s3cret-param")
    assert code == 1000 and any(m["event"] == "media" for m in got)
    for params in ({"language": "kk", "secret": "s3cret-paraM"}, {"language": "kk"}, {"secret": ""}):
        refusals = refused()
        got, code = await call(url, sig, **params)
        assert code == 1008 and got == [], (params, got)  # no disclosure, nothing spoken or heard
        assert refused() == refusals + 1
    async with asyncio.timeout(5):  # each call's handler unregisters it just after the close
        while server.sessions:
            await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- secrets in logs
@pytest.fixture(scope="module")
def twilio_server():
    """`dauys serve` at debug level with a Twilio token and a stream secret, from the environment."""
    server = ServeProcess("--log-level", "debug", env={"DAUYS_TWILIO__AUTH_TOKEN": TOKEN, "DAUYS_TWILIO__STREAM_SECRET": "param-s3cret-77"})
    yield server
    server.kill()


@pytest.mark.slow
async def test_no_token_secret_or_signature_in_any_log_line(twilio_server):
    srv = twilio_server
    port = int(srv.url.rsplit(":", 1)[1])
    good = documented_signature(TOKEN, wss_url(port))
    forged = documented_signature(TOKEN[::-1], wss_url(port))
    assert await upgrade_status(ws_url(port), forged) == 403
    assert await upgrade_status(ws_url(port), None) == 403
    got, code = await call(ws_url(port), good, language="kk", secret="param-s3cret-78")
    assert code == 1008
    got, code = await call(ws_url(port), good, language="kk", secret="param-s3cret-77")
    assert code == 1000 and got
    assert (await asyncio.to_thread(http_get, srv.url + "/healthz"))[0] == 200  # logged at debug level
    await asyncio.sleep(0.5)
    everything = "".join(srv.out + srv.err)
    for secret in (TOKEN, "param-s3cret-77", "param-s3cret-78", good, forged):
        assert secret not in everything, secret
    assert "refused a /v1/twilio upgrade" in everything and '"GET /v1/twilio" 403' in everything
    assert '"GET /healthz" 200' in everything  # debug lines were on: the most a log could show


# ----------------------------------------------------------------------------- DTMF 0 (issue 11, item 13)
@pytest.mark.slow
async def test_dtmf_0_on_twilio_speaks_the_handoff_then_closes_once_its_mark_comes_back(make_server):
    """Twilio's side played by hand: the handoff message's audio, its mark, and the stream
    closing only after Twilio reports that mark (so the TwiML's <Dial> follows the message)."""
    server = await make_server()
    sid = "MZ" + uuid.uuid4().hex
    handoffs = _metric("dauys_handoffs_total", {"reason": "user_request"})
    got: list[dict] = []
    async with connect(ws_url(server.port)) as ws:
        await ws.send(CONNECTED)
        await ws.send(start_message(sid, language="en"))
        await ws.send(json.dumps({"event": "dtmf", "streamSid": sid, "sequenceNumber": "2", "dtmf": {"track": "inbound_track", "digit": "0"}}))
        async with asyncio.timeout(60):
            while True:
                got.append(json.loads(await ws.recv()))
                if got[-1]["event"] != "mark":
                    continue
                if got[-1]["mark"]["name"] != "dauys-ai:disclosure":
                    break
                await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": got[-1]["mark"]}))
        events = [m["event"] for m in got]
        disclosure_end = next(i for i, m in enumerate(got) if m["event"] == "mark")
        handoff_audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in got[disclosure_end + 1 : -1] if m["event"] == "media")
        assert set(events[disclosure_end + 1 : -1]) == {"media"}, events  # the handoff message, and nothing else
        assert len(handoff_audio) / 8000 > 1.0, len(handoff_audio)  # "Connecting you to an operator, please hold."
        assert all(m["streamSid"] == sid for m in got)
        handoff_mark = got[-1]["mark"]["name"]
        assert handoff_mark.startswith("dauys-ai:") and handoff_mark != "dauys-ai:disclosure"
        # the message is still playing at Twilio's end: the stream stays open until its mark comes back
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await ws.recv()
        assert _metric("dauys_handoffs_total", {"reason": "user_request"}) == handoffs + 1
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": handoff_mark}}))
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
    assert ws.close_code == 1000


def test_a_logged_signature_header_is_redacted():
    from server.logs import redact_secrets

    assert redact_secrets("X-Twilio-Signature: RSOYDt4T1cUTdK1PDd93/VVr8B8=\r\nHost: a") == "X-Twilio-Signature: [REDACTED]\r\nHost: a"
    assert redact_secrets("x-twilio-signature:abc+/=") == "x-twilio-signature:[REDACTED]"
