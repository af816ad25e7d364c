"""Admission: API keys, loopback-only default, capacity, readiness (in-process servers on 127.0.0.1:0)."""

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server import auth
from server.app import check_bind
from tests.helpers.paths import ROOT
from tests.helpers.server import ServeProcess, make_settings

START = json.dumps({"type": "start", "output": {"pacing": "none"}})


def url(server, query=""):
    return f"ws://127.0.0.1:{server.port}/v1/voice{query}"


async def test_api_key_required_when_configured(make_server):
    server = await make_server(server={"port": 0, "api_keys": ["s3cret-key-0123456789"]})
    with pytest.raises(InvalidStatus) as e:
        async with connect(url(server)):
            pass
    assert e.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as e:
        async with connect(url(server), additional_headers={"Authorization": "Bearer wrong"}):
            pass
    assert e.value.response.status_code == 401
    for kwargs, query in (({"additional_headers": {"Authorization": "Bearer s3cret-key-0123456789"}}, ""), ({}, "?token=s3cret-key-0123456789")):
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
    check_bind(make_settings(server={"host": "0.0.0.0", "api_keys": ["k" * 16]}))
    check_bind(make_settings(server={"host": "0.0.0.0", "allow_unauthenticated_remote": True}))
    check_bind(make_settings())


def test_serve_command_exits_with_one_line_when_binding_off_loopback_without_keys():
    p = subprocess.run([sys.executable, "-m", "server", "serve", "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode != 0
    assert "refusing to listen" in p.stderr and "Traceback" not in p.stderr


async def test_capacity_is_enforced_with_1013(make_server):
    server = await make_server(server={"port": 0, "max_sessions": 1})
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


async def test_a_connection_that_never_starts_is_closed_and_frees_its_slot(make_server):
    """server.start_timeout_s: a client that connects and sends no start (or only bad ones) held a slot
    of server.max_sessions for good; it now gets error start_timeout and close 1008."""
    server = await make_server(server={"port": 0, "max_sessions": 1, "start_timeout_s": 0.6})
    async with connect(url(server)) as idle:
        await idle.send(json.dumps({"type": "start", "audio": {"encoding": "opus"}}))  # an invalid start does not count
        events = []
        with pytest.raises(ConnectionClosed) as e:
            async with asyncio.timeout(5):
                while True:
                    events.append(json.loads(await idle.recv()))
        assert (e.value.rcvd.code, e.value.rcvd.reason) == (1008, "no start")
        assert [ev["code"] for ev in events] == ["unsupported_encoding", "start_timeout"]
    await asyncio.sleep(0.1)
    async with connect(url(server)) as caller:  # the slot is free again, and a started call is not timed out
        await caller.send(START)
        assert json.loads(await caller.recv())["type"] == "ready"
        await asyncio.sleep(1.0)
        await caller.send(json.dumps({"type": "text", "text": "сәлем"}))
        async with asyncio.timeout(20):
            while isinstance(msg := await caller.recv(), bytes) or json.loads(msg)["type"] != "transcript":
                pass


async def test_a_phone_stream_that_never_starts_is_closed(make_server):
    """The same on a carrier: a Twilio stream that sends "connected" and then nothing."""
    server = await make_server(server={"port": 0, "start_timeout_s": 0.6})
    async with connect(f"ws://127.0.0.1:{server.port}/v1/twilio") as twilio:
        await twilio.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionClosed) as e:
            async with asyncio.timeout(5):
                while True:
                    await twilio.recv()
        assert e.value.rcvd.code == 1008 and 0.5 < asyncio.get_running_loop().time() - t0 < 3


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
        from tests.helpers.server import http_get

        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        async with connect(url(server)) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1013
    finally:
        server._server.close()
        await server._server.wait_closed()


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------
# limits on one session: length, utterance length, a client that stops reading


def _raw_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (RFC 6455), for the raw-socket client."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_ws(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket client on a bare socket with a small receive buffer: it reads the handshake
    response and then, unless the test reads, nothing more."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /v1/voice HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _drained_until_closed(s: socket.socket, within: float) -> bool:
    """Read what the server had buffered; True if the server has closed the connection by then."""
    s.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not s.recv(1 << 16):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


@pytest.mark.slow
async def test_a_client_that_stops_reading_is_cut_off_and_the_others_go_on(make_server):
    """A caller that never reads fills its buffers; within send_timeout_s of the server being unable to
    send to it, it is cut off (error slow_consumer counted, 1008, TCP closed), its session freed;
    a second caller meanwhile gets every reply on time."""
    from pipeline.metrics import REGISTRY

    send_timeout = 2.0
    server = await make_server(server={"port": 0, "send_timeout_s": send_timeout})
    cut_before = REGISTRY.get_sample_value("dauys_errors_total", {"code": "slow_consumer"}) or 0.0
    slow = await asyncio.to_thread(_raw_ws, server.port)
    t0 = time.monotonic()
    try:
        # 48 kHz PCM sent as fast as synthesised: the disclosure and a few spoken replies are megabytes
        start = {"type": "start", "output": {"encoding": "pcm_s16le", "sample_rate": 48000, "pacing": "none"}, "language": "kk"}
        slow.sendall(_raw_frame(json.dumps(start).encode()))
        for _ in range(4):
            slow.sendall(_raw_frame(json.dumps({"type": "text", "text": "Депозит пайызы қанша?"}).encode()))
        async with asyncio.timeout(5):
            while len(server.sessions) < 1:
                await asyncio.sleep(0.02)
        slow_id = next(iter(server.sessions))
        cut_at = None

        async def watch():
            nonlocal cut_at
            while slow_id in server.sessions:
                await asyncio.sleep(0.05)
            cut_at = time.monotonic()

        watcher = asyncio.ensure_future(watch())
        latencies = []
        async with connect(url(server)) as good:
            await good.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}}))
            async with asyncio.timeout(30):
                while isinstance(m := await good.recv(), bytes) or json.loads(m)["type"] != "audio_end":
                    pass
            # ask again and again while the slow one stalls, and once after it is gone
            while cut_at is None or len(latencies) < 2 or (latencies and latencies[-1][0] < cut_at):
                assert time.monotonic() - t0 < 60, "the slow consumer was never cut off"
                asked = time.monotonic()
                await good.send(json.dumps({"type": "text", "text": "Картам бұғатталып қалды"}))
                got_reply = None
                async with asyncio.timeout(30):
                    while True:
                        m = await good.recv()
                        if isinstance(m, bytes):
                            continue
                        ev = json.loads(m)
                        if ev["type"] == "reply":
                            got_reply = time.monotonic() - asked
                        if ev["type"] == "audio_end":
                            break
                latencies.append((asked, got_reply, time.monotonic() - asked))
        await watcher
    finally:
        closed = await asyncio.to_thread(_drained_until_closed, slow, 10.0)
        slow.close()
    assert cut_at - t0 < 20, f"cut off after {cut_at - t0:.1f} s"
    assert closed, "the server kept the slow consumer's TCP connection open"
    assert (REGISTRY.get_sample_value("dauys_errors_total", {"code": "slow_consumer"}) or 0.0) == cut_before + 1
    # the other caller: every reply text within 2 s of asking, its audio complete within 15 s
    assert all(r is not None and r < 2.0 and done < 15.0 for _, r, done in latencies), latencies
    assert any(asked < cut_at for asked, _, _ in latencies) and any(asked > cut_at for asked, _, _ in latencies)


async def _serve_with(services, **sections):
    """An in-process server whose sessions see these settings too (sessions read their limits
    and VAD settings from their services)."""
    from dataclasses import replace

    from server.app import DauysServer
    from tests.helpers.server import LoadedHub

    settings = make_settings(**{**sections, "server": {"port": 0, **sections.get("server", {})}})
    server = DauysServer(settings, hub=LoadedHub(replace(services, settings=settings)))
    await server.start()
    return server


async def _events_until_closed(ws, timeout: float) -> tuple[list[dict], int | None]:
    events = []
    try:
        async with asyncio.timeout(timeout):
            async for m in ws:
                if isinstance(m, str):
                    events.append(json.loads(m))
    except ConnectionClosed:
        pass
    return events, ws.close_code


async def test_session_length_limit_ends_the_session_cleanly(make_server):
    server = await make_server(server={"port": 0, "max_session_s": 1.5})
    t0 = time.monotonic()
    async with connect(url(server)) as ws:
        await ws.send(START)
        events, code = await _events_until_closed(ws, 30)
    took = time.monotonic() - t0
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["session_too_long"]
    assert events[-1] == {"type": "session_end", "reason": "max_duration"} and code == 1000
    assert 1.5 <= took < 15, took


async def test_long_speech_is_cut_at_max_utterance_with_a_forced_final(services):
    from models.audio import Encoding, encode_wire, read_audio
    from tests.helpers.audio import clip

    # no pause long enough to end an utterance: only the length limit can
    server = await _serve_with(services, vad={"max_utterance_s": 2.0, "min_silence_ms": 3000, "speculative_ms": 96})
    try:
        speech = read_audio(clip("kk_kscd_ex1.wav")).samples  # 5 s of continuous speech
        async with connect(url(server)) as ws:
            await ws.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}}))
            pcm = encode_wire(speech, Encoding.PCM_S16LE)
            for i in range(0, len(pcm), 6400):
                await ws.send(pcm[i : i + 6400])
            async with asyncio.timeout(60):  # before any `end`: the limit alone makes the final
                while isinstance(m := await ws.recv(), bytes) or not ((ev := json.loads(m))["type"] in ("transcript", "speech_discarded") and ev.get("final", True)):
                    pass
            await ws.send(json.dumps({"type": "end"}))
            rest, code = await _events_until_closed(ws, 60)  # no decode left in flight after the test
            assert rest[-1]["type"] == "session_end" and code == 1000
        assert ev["type"] == "transcript" and ev["forced"] is True and ev["text"], ev
        assert ev["t_end"] - ev["t_start"] <= 2.0 + 0.25, ev
    finally:
        server._server.close()
        await server._server.wait_closed()


async def test_typed_text_limit_is_exact(services):
    server = await _serve_with(services, server={"max_text_chars": 12})
    try:
        async with connect(url(server)) as ws:
            await ws.send(START)
            await ws.send(json.dumps({"type": "text", "text": "x" * 13}))
            await ws.send(json.dumps({"type": "text", "text": "сәлем сәлем!"}))  # 12: accepted
            seen = []
            async with asyncio.timeout(20):
                while not any(e["type"] == "transcript" for e in seen):
                    if isinstance(m := await ws.recv(), str):
                        seen.append(json.loads(m))
        assert [e["code"] for e in seen if e["type"] == "error"] == ["text_too_long"]
        assert next(e for e in seen if e["type"] == "transcript")["text"] == "сәлем сәлем!"
    finally:
        server._server.close()
        await server._server.wait_closed()


# ---------------------------------------------------------------------------------------------
# the real `dauys serve` process


@pytest.mark.slow
async def test_sigterm_during_a_reply_lets_it_finish_then_closes_1001_and_exits_0():
    server = await asyncio.to_thread(ServeProcess, env={"DAUYS_SERVER__SHUTDOWN_GRACE_S": "60"})
    try:
        frames_after_signal = 0
        async with connect(server.ws) as ws:
            await ws.send(json.dumps({"type": "start", "language": "kk"}))  # real-time paced audio
            await ws.send(json.dumps({"type": "text", "text": "Депозит пайызы қанша?"}))
            signalled_at = None
            events = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(120):
                    while True:
                        m = await ws.recv()
                        if isinstance(m, bytes):
                            frames_after_signal += signalled_at is not None
                            continue
                        ev = json.loads(m)
                        events.append(ev)
                        if ev["type"] == "audio_start" and ev["reply_id"] != "disclosure":
                            server.proc.send_signal(signal.SIGTERM)
                            signalled_at = time.monotonic()
            took = time.monotonic() - signalled_at
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, closed.value
        reply = next(e for e in events if e["type"] == "reply")
        end = events[-1]
        assert end == {"type": "audio_end", "reply_id": reply["reply_id"], "interrupted": False}, events[-3:]
        # the reply was spoken to its end at real-time pace: 40 ms frames for seconds after the signal
        assert frames_after_signal * 0.04 > 1.0 and took > 1.0, (frames_after_signal, took)
        assert await asyncio.to_thread(server.stop, 30) == 0
        # and it no longer listens
        with pytest.raises(OSError):
            async with connect(server.ws, open_timeout=2):
                pass
    finally:
        await asyncio.to_thread(server.kill)


@pytest.mark.slow
async def test_an_audiosocket_peer_that_stops_reading_is_dropped(make_server):
    """AudioSocket has no close frame to send a slow peer: within send_timeout_s of the paced audio
    (the spoken disclosure) finding no room, the TCP connection is dropped and the call freed."""
    from pipeline.metrics import REGISTRY

    server = await make_server(server={"audiosocket_port": 0, "send_timeout_s": 1.0})
    before = REGISTRY.get_sample_value("dauys_errors_total", {"code": "slow_consumer"}) or 0.0
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", server.audiosocket_port))
    s.setblocking(False)
    import uuid

    t0 = time.monotonic()
    s.sendall(struct.pack(">BH", 0x01, 16) + uuid.uuid4().bytes)
    silence = struct.pack(">BH", 0x10, 320) + b"\0" * 320
    dropped = None
    while time.monotonic() - t0 < 30:
        try:
            s.send(silence)  # the caller's line stays up (silence) but never reads what the server says
        except (BlockingIOError, InterruptedError):
            pass
        except (BrokenPipeError, ConnectionResetError):
            dropped = time.monotonic() - t0
            break
        if dropped is None and (REGISTRY.get_sample_value("dauys_errors_total", {"code": "slow_consumer"}) or 0.0) > before and not server.sessions:
            dropped = time.monotonic() - t0
            break
        await asyncio.sleep(0.02)
    s.close()
    assert dropped is not None, "the server kept a peer that reads nothing"
    assert dropped < 15, f"dropped after {dropped:.1f} s"
    assert (REGISTRY.get_sample_value("dauys_errors_total", {"code": "slow_consumer"}) or 0.0) == before + 1
    async with asyncio.timeout(10):
        while server.sessions:
            await asyncio.sleep(0.05)
