"""Law 230-VIII on every transport: the disclosure is the first audio, in the caller's language
(an `auto` call hears kk then ru); the Art. 17 record in provenance and /readyz; the signed
handoff record reaches the human (webhook); DTMF 0 on AudioSocket hands off and hangs up.

A stand-in TTS (a buzz whose pitch names the language, 12 ms per character) makes what the
caller hears observable: which texts, in which order, for how long.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import AudioChunk, Encoding, decode_wire
from pipeline.policy import detect_handoff
from server.config import DEFAULT_LANGUAGES, SessionSettings
from tests.helpers.server import collect, http_get

SEC_PER_CHAR = 0.012
RATE = 16000
F0 = {"kk": 125.0, "ru": 250.0, "uz": 175.0}
SECRET = "test-webhook-secret"


class StandInTts:
    """A TTS stand-in: a harmonic buzz at F0[language], SEC_PER_CHAR seconds per character."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def model_id_for(self, language: str) -> str:
        return f"standin:{language}"

    def synthesize(self, text, language, config=None):
        self.calls.append((text, language))
        n = round(len(text) * SEC_PER_CHAR * RATE)
        t = np.arange(n) / RATE
        f0 = F0.get(language, 200.0)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, int(3800 // f0) + 1))
        yield AudioChunk((0.2 * x).astype(np.float32), RATE)

    def seconds(self, calls) -> float:
        return sum(round(len(text) * SEC_PER_CHAR * RATE) for text, _ in calls) / RATE

    def warmup(self, *a) -> None:
        pass

    def close(self) -> None:
        pass


def pitch(pcm: np.ndarray, rate: int) -> float:
    """The strongest line between 100 and 300 Hz (the stand-in's fundamental)."""
    spec = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    f = np.fft.rfftfreq(len(pcm), 1 / rate)
    band = (f >= 100) & (f <= 300)
    return float(f[band][np.argmax(spec[band])])


def assert_kk_then_ru(pcm: np.ndarray, rate: int, calls: list[tuple[str, str]]) -> None:
    kk_s = StandInTts.seconds(None, [c for c in calls if c[1] == "kk"])
    head, tail = pcm[: int(0.5 * rate)], pcm[int((kk_s + 0.1) * rate) : int((kk_s + 0.6) * rate)]
    assert abs(pitch(head, rate) - F0["kk"]) < 10 and abs(pitch(tail, rate) - F0["ru"]) < 10, (pitch(head, rate), pitch(tail, rate))


@pytest.fixture
def compliance_server(make_server):
    """In-process servers (with AudioSocket) whose sessions see the given settings and speak through a StandInTts."""

    async def make(**sections):
        sections["server"] = {"audiosocket_port": 0, **sections.get("server", {})}
        tts = StandInTts()
        return await make_server(services_with={"tts": tts}, **sections), tts

    return make


class Receiver:
    """An HTTP receiver on 127.0.0.1 answering with ``statuses`` in turn (the last one repeats)."""

    def __init__(self, statuses=(200,)) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[float, dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((time.monotonic(), dict(self.headers), body))
                status = outer.statuses[min(len(outer.requests), len(outer.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dauys/handoff"

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(200,)):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def webhook_settings(url: str, **more) -> dict:
    return {"handoff_webhook": url, "handoff_webhook_secret": SECRET, "handoff_webhook_backoff_s": 0.05, **more}


def verified(headers: dict, body: bytes) -> dict:
    """The JSON body, after checking the signature the way a receiver must."""
    want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Dauys-Signature"], want)
    assert abs(int(headers["X-Dauys-Timestamp"]) - time.time()) < 60
    return json.loads(body)


def webhook_count(result: str) -> float:
    from pipeline.metrics import REGISTRY

    return REGISTRY.get_sample_value("dauys_handoff_webhook_total", {"result": result}) or 0.0


async def counted(result: str, expected: float, timeout: float = 5.0) -> None:
    """The sender counts a delivery once the receiver's answer is back, a moment after the receiver saw it."""
    deadline = time.monotonic() + timeout
    while webhook_count(result) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert webhook_count(result) == expected


def start_msg(language="auto", pacing="none"):
    return json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16000},
                       "output": {"encoding": "pcm_s16le", "sample_rate": 16000, "pacing": pacing}, "language": language})


# ------------------------------------------------------------------------------ texts
def test_every_served_language_has_a_disclosure_that_names_the_handoff_word():
    s = SessionSettings()
    for lang in [*DEFAULT_LANGUAGES, "ky"]:
        got, text = s.disclosure_for(lang)
        assert got == lang and text, lang
        quoted = text.split("«")[1].split("»")[0] if "«" in text else text.split("'")[1]
        assert detect_handoff(quoted) is not None, (lang, quoted)  # saying the word does reach a person


def test_disclosure_fallback_and_processing_notice():
    s = SessionSettings(disclosure={"kk": "KK.", "ru": "RU."}, processing_notice={"ru": "Звонок обрабатывается."})
    assert s.disclosure_for("de") == ("ru", "RU. Звонок обрабатывается.")  # no text: ru, with its notice
    assert s.disclosure_for("kk") == ("kk", "KK.")
    assert SessionSettings(disclosure={"kk": "KK.", "en": "EN."}).disclosure_for("tr") == ("kk", "KK.")
    assert s.disclosures(None) == [("kk", "KK."), ("ru", "RU. Звонок обрабатывается.")]
    assert SessionSettings(disclosure={"kk": "KK."}).disclosures(None) == [("kk", "KK.")]  # no repeat of the fallback
    assert s.disclosures("uz") == [("ru", "RU. Звонок обрабатывается.")]


# ------------------------------------------------------------------------------ native
async def test_native_auto_session_hears_kk_then_ru_disclosure_first(compliance_server):
    server, tts = await compliance_server(compliance={"risk_class": "medium"})
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(start_msg("auto"))
        events, audio = await collect(ws, lambda e: e["type"] == "audio_end")
        calls = list(tts.calls)
        await ws.send(json.dumps({"type": "text", "text": "Депозит пайызы қанша?"}))
        later, _ = await collect(ws, lambda e: e["type"] == "audio_end")
    s = server.settings.session
    ready = events[0]
    assert ready["type"] == "ready" and ready["disclosure"] == {"text": s.disclosure["kk"], "language": "kk"}
    assert ready["disclosures"] == [{"text": s.disclosure["kk"], "language": "kk"}, {"text": s.disclosure["ru"], "language": "ru"}]
    starts = [e for e in events if e["type"] == "audio_start"]
    assert [e["reply_id"] for e in starts] == ["disclosure"] and list(audio) == ["disclosure"]
    assert [lang for _, lang in calls] == ["kk"] * 2 + ["ru"] * 2  # two sentences each, kk first
    assert " ".join(t for t, _ in calls) == f"{s.disclosure['kk']} {s.disclosure['ru']}"
    pcm = decode_wire(bytes(audio["disclosure"]), Encoding.PCM_S16LE)
    assert abs(len(pcm) / 16000 - tts.seconds(calls)) < 0.03
    assert_kk_then_ru(pcm, 16000, calls)
    assert starts[0]["provenance"]["compliance"] == {"risk_class": "medium", "autonomy": "low"}
    reply = next(e for e in later if e["type"] == "reply")
    assert reply["provenance"]["compliance"] == {"risk_class": "medium", "autonomy": "low"}
    # the machine-readable marking travels inside the provenance too, as in synthesised files
    assert reply["provenance"]["ai_generated"] is True and starts[0]["provenance"]["ai_generated"] is True
    assert {"system", "models", "created", "session_id", "reply_id"} <= set(reply["provenance"])


async def test_native_fixed_language_discloses_once_in_it(compliance_server):
    server, tts = await compliance_server(session={"processing_notice": {"uz": "Qo'ng'iroq xizmat sifati uchun qayta ishlanadi."}})
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(start_msg("uz"))
        events, audio = await collect(ws, lambda e: e["type"] == "audio_end")
    ready = events[0]
    text = server.settings.session.disclosure["uz"] + " Qo'ng'iroq xizmat sifati uchun qayta ishlanadi."
    assert ready["disclosure"] == {"text": text, "language": "uz"} and ready["disclosures"] == [ready["disclosure"]]
    assert {lang for _, lang in tts.calls} == {"uz"} and " ".join(t for t, _ in tts.calls) == text
    pcm = decode_wire(bytes(audio["disclosure"]), Encoding.PCM_S16LE)
    assert abs(len(pcm) / 16000 - tts.seconds(tts.calls)) < 0.03 and abs(pitch(pcm, 16000) - F0["uz"]) < 10


async def test_readyz_and_file_provenance_carry_the_art_17_record(compliance_server):
    from pipeline.marking import provenance

    server, _ = await compliance_server(compliance={"risk_class": "high", "autonomy": "medium"})
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/readyz")
    assert status == 200 and json.loads(body)["compliance"] == {"risk_class": "high", "autonomy": "medium"}
    assert provenance({"tts": "x"})["compliance"] == {"risk_class": "minimum", "autonomy": "low"}  # the defaults


# ------------------------------------------------------------------------------ Twilio
async def test_twilio_first_audio_is_the_kk_ru_disclosure(compliance_server):
    server, tts = await compliance_server()
    sid, call_sid = "MZ" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    received = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/twilio") as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": "AC0", "callSid": call_sid, "streamSid": sid, "tracks": ["inbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        async with asyncio.timeout(20):
            async for msg in ws:
                m = json.loads(msg)
                received.append(m)
                if m["event"] == "mark":  # played out: Twilio echoes it
                    await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": m["mark"]}))
                    break
        session = next(iter(server.sessions.values()))
        assert session.transport == "twilio" and session.carrier_call_id == call_sid  # for the handoff record
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2", "streamSid": sid, "stop": {"accountSid": "AC0", "callSid": call_sid}}))
    assert received[-1]["mark"]["name"] == "dauys-ai:disclosure"
    assert received[0]["event"] == "media" and all(m["event"] == "media" for m in received[:-1])
    pcm = decode_wire(b"".join(base64.b64decode(m["media"]["payload"]) for m in received[:-1]), Encoding.MULAW)
    assert abs(len(pcm) / 8000 - tts.seconds(tts.calls)) < 0.03
    assert [lang for _, lang in tts.calls] == ["kk"] * 2 + ["ru"] * 2
    assert_kk_then_ru(pcm, 8000, tts.calls)


# ------------------------------------------------------------------------------ AudioSocket
async def _read_frame(reader):
    kind, length = struct.unpack(">BH", await reader.readexactly(3))
    return kind, await reader.readexactly(length) if length else b""


class AudioSocketPeer:
    """Asterisk's side: the UUID, then silence every 20 ms as Asterisk streams it, and what the test sends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.call_id = uuid.uuid4()
        self.frames: list[tuple[float, int, bytes]] = []  # (arrival, kind, payload)

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(struct.pack(">BH", 0x01, 16) + self.call_id.bytes)
        await self.writer.drain()
        self.rx = asyncio.ensure_future(self._rx())
        self.tx = asyncio.ensure_future(self._tx())
        return self

    async def _tx(self):
        t0 = time.monotonic()
        i = 0
        while not self.rx.done():
            self.writer.write(struct.pack(">BH", 0x10, 320) + b"\0" * 320)
            await self.writer.drain()
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - time.monotonic()))

    async def send(self, kind: int, payload: bytes) -> None:
        self.writer.write(struct.pack(">BH", kind, len(payload)) + payload)
        await self.writer.drain()

    async def _rx(self):
        while True:
            try:
                kind, payload = await _read_frame(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self.frames.append((time.monotonic(), kind, payload))
            if kind == 0x00:
                return

    async def quiet(self, gap: float = 0.4, timeout: float = 20) -> None:
        """Wait until audio has come and then stopped for ``gap`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not self.frames or time.monotonic() - self.frames[-1][0] < gap):
            await asyncio.sleep(0.05)

    def audio(self, frames) -> np.ndarray:
        return decode_wire(b"".join(p for _, k, p in frames if k == 0x10), Encoding.PCM_S16LE)

    async def __aexit__(self, *exc):
        self.tx.cancel()
        if not self.rx.done():
            self.writer.write(struct.pack(">BH", 0x00, 0))
            await self.writer.drain()
            await asyncio.wait_for(self.rx, 10)
        self.writer.close()


async def test_audiosocket_first_audio_is_the_kk_ru_disclosure(compliance_server):
    server, tts = await compliance_server()
    async with AudioSocketPeer(server.audiosocket_port) as peer:
        await peer.quiet()
        disclosure = list(peer.frames)
        session = next(iter(server.sessions.values()))
        assert session.transport == "audiosocket" and session.carrier_call_id == str(peer.call_id)
    assert disclosure and all(k == 0x10 and len(p) == 320 for _, k, p in disclosure)
    pcm = peer.audio(disclosure)
    assert abs(len(pcm) / 8000 - tts.seconds(tts.calls)) <= 0.04  # the last frame is padded to 20 ms
    assert [lang for _, lang in tts.calls] == ["kk"] * 2 + ["ru"] * 2
    assert_kk_then_ru(pcm, 8000, tts.calls)


@pytest.mark.slow
async def test_audiosocket_dtmf_0_hands_off_then_hangs_up_and_the_record_reaches_the_webhook(compliance_server, receiver):
    hook = receiver()
    server, tts = await compliance_server(compliance=webhook_settings(hook.url))
    async with AudioSocketPeer(server.audiosocket_port) as peer:
        await peer.quiet()
        n_disclosure = len(peer.frames)
        calls_before = len(tts.calls)
        t_dtmf = time.monotonic()
        await peer.send(0x03, b"0")
        await asyncio.wait_for(peer.rx, 15)  # the server hangs up: the reader ends at 0x00
    after = peer.frames[n_disclosure:]
    assert after[-1][1] == 0x00 and all(k == 0x10 for _, k, _ in after[:-1])  # the handoff audio, then the hang-up
    handoff_text = server.settings.session.handoff_text("kk")
    assert tts.calls[calls_before:] == [(handoff_text, "kk")]
    pcm = peer.audio(after[:-1])
    assert abs(len(pcm) / 8000 - tts.seconds([(handoff_text, "kk")])) <= 0.04 and abs(pitch(pcm, 8000) - F0["kk"]) < 10
    assert after[-1][0] - after[-2][0] < 1.0 and after[0][0] > t_dtmf
    await hook.wait(1)
    assert len(hook.requests) == 1
    record = verified(hook.requests[0][1], hook.requests[0][2])
    assert record["transport"] == "audiosocket" and record["carrier_call_id"] == str(peer.call_id)
    assert record["reason"] == "user_request" and record["language"] == "kk" and record["session_id"]
    assert "reason: user_request" in record["summary"]


# ------------------------------------------------------------------------------ webhook
async def _native_handoff(server, texts, language="kk"):
    """A native call that says ``texts`` and asks for a person; (ready, seconds from handoff to session_end)."""
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(start_msg(language))
        ready = json.loads(await ws.recv())
        for t in texts:
            await ws.send(json.dumps({"type": "text", "text": t}))
        events, _ = await collect(ws, lambda e: e["type"] == "session_end")
    return ready, events


async def test_handoff_record_is_signed_redacted_and_complete(compliance_server, receiver):
    hook = receiver()
    server, _ = await compliance_server(compliance=webhook_settings(hook.url))
    before = webhook_count("delivered")
    ready, events = await _native_handoff(server, ["Менің ИИН 900101300126, картам бұғатталды", "оператор"])
    assert any(e["type"] == "handoff" for e in events)
    await hook.wait(1)
    assert len(hook.requests) == 1
    _, headers, body = hook.requests[0]
    assert headers["Content-Type"].startswith("application/json")
    record = verified(headers, body)
    assert set(record) == {"event", "id", "session_id", "carrier_call_id", "transport", "language", "reason", "summary", "timestamp"}
    assert record["event"] == "handoff" and record["session_id"] == ready["session_id"] and record["carrier_call_id"] is None
    assert record["transport"] == "native" and record["language"] == "kk" and record["reason"] == "user_request"
    assert "[IIN]" in record["summary"] and b"900101300126" not in body
    assert abs(datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp() - time.time()) < 60
    await counted("delivered", before + 1)
    tampered = body.replace(b'"kk"', b'"ru"')
    with pytest.raises(AssertionError):
        verified(headers, tampered)


async def test_handoff_record_is_retried_after_a_500(compliance_server, receiver):
    hook = receiver([500, 200])
    server, _ = await compliance_server(compliance=webhook_settings(hook.url))
    retried, delivered = webhook_count("retried"), webhook_count("delivered")
    await _native_handoff(server, ["оператор"])
    await hook.wait(2)
    await asyncio.sleep(0.3)
    assert len(hook.requests) == 2
    first, second = (verified(h, b) for _, h, b in hook.requests)
    assert first == second  # the same record (same id): receivers deduplicate on it
    await counted("delivered", delivered + 1)
    assert webhook_count("retried") == retried + 1


async def test_persistent_webhook_failure_is_bounded_and_never_holds_up_the_call(compliance_server, receiver):
    hook = receiver([503])
    server, _ = await compliance_server(compliance=webhook_settings(hook.url, handoff_webhook_tries=3, handoff_webhook_backoff_s=0.3))
    failed = webhook_count("failed")
    t0 = time.monotonic()
    _, events = await _native_handoff(server, ["оператор"])
    ended = time.monotonic()
    assert events[-1]["type"] == "session_end" and events[-1]["reason"] == "handoff"
    await asyncio.sleep(0.3 + 0.6 + 1.0)  # both backoffs, and time for a 4th try that must not come
    assert len(hook.requests) == 3
    assert hook.requests[1][0] > ended  # the call had ended before the first retry
    await counted("failed", failed + 1)
    # nobody listening at all: counted as failed too, the call unaffected
    hook.close()
    server2, _ = await compliance_server(compliance=webhook_settings(hook.url, handoff_webhook_tries=2))
    _, events = await _native_handoff(server2, ["оператор"])
    assert events[-1]["reason"] == "handoff"
    await counted("failed", failed + 2)
    assert time.monotonic() - t0 < 30


def test_webhook_must_be_https_off_loopback_and_needs_a_secret():
    from server.config import ConfigError, load_settings

    for url in ("http://hooks.example.kz/h", "ftp://127.0.0.1/h"):
        with pytest.raises(ConfigError, match="handoff_webhook"):
            load_settings(cli={"compliance": {"handoff_webhook": url, "handoff_webhook_secret": "s"}}, environ={})
    with pytest.raises(ConfigError, match="DAUYS_COMPLIANCE__HANDOFF_WEBHOOK_SECRET"):
        load_settings(cli={"compliance": {"handoff_webhook": "https://hooks.example.kz/h"}}, environ={})
    s = load_settings(environ={"DAUYS_COMPLIANCE__HANDOFF_WEBHOOK": "https://hooks.example.kz/h", "DAUYS_COMPLIANCE__HANDOFF_WEBHOOK_SECRET": "123"})
    assert s.compliance.handoff_webhook_secret.get_secret_value() == "123" and "123" not in repr(s)
