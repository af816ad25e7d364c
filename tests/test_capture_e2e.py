"""Consent and capture through the real protocol: a real server, real speech, the real recogniser.

Consent given upstream (start.consent), refused, asked by Dauys and answered by keys or words,
and a first turn that is no answer (not recorded, answered as usual); what a consented call
leaves on disk, encrypted; the consent in events, provenance and the log."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import read_audio
from pipeline.capture import CaptureStore, CaptureWriter, fernet_from_env, make_key
from tests.helpers.audio import clip
from tests.helpers.server import collect, send_audio

KEY_ENV = "DAUYS_TEST_CAPTURE_KEY"


@pytest.fixture
def capture(tmp_path):
    store = CaptureStore(tmp_path / "capture", fernet_from_env(KEY_ENV, {KEY_ENV: make_key()}))
    store.check_writable()  # as open_capture does at start
    writer = CaptureWriter(store, 64)
    yield writer
    writer.close()


async def _server(make_server, writer, **capture):
    return await make_server(
        services_with={"capture": writer},
        capture={"enabled": True, "dir": str(writer.store.root), "key_env": KEY_ENV, **capture},
    )


def _speech(name="kk_kscd_ex2.wav"):
    s = read_audio(clip(name)).samples
    pad = np.zeros(8000, dtype=np.float32)
    return np.concatenate([pad, s, pad, pad])


async def _call(server, start: dict, audio=None, texts=(), dtmf=(), timeout=90):
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "output": {"pacing": "none"}, "language": "kk"} | start))
        for d in dtmf:
            await ws.send(json.dumps({"type": "dtmf", "digit": d}))
            await asyncio.sleep(0.3)
        for t in texts:
            await ws.send(json.dumps({"type": "text", "text": t}))
        before = []
        if texts and audio is not None:  # speech would barge in on the typed turn's reply: let it come first
            before, _ = await collect(ws, lambda e: e["type"] == "audio_end" and e["reply_id"] != "disclosure", timeout)
        if audio is not None:
            await send_audio(ws, audio, realtime=False)
        await ws.send(json.dumps({"type": "end"}))
        events, _ = await collect(ws, lambda e: e["type"] == "session_end", timeout)
    return before + events


def _consent(events):
    return [e for e in events if e["type"] == "consent"]


async def test_consent_given_upstream_captures_the_utterance_with_its_transcript_and_reply(make_server, capture, caplog):
    server = await _server(make_server, capture)
    with caplog.at_level(logging.INFO):
        events = await _call(server, {"consent": {"recording": "granted"}}, audio=_speech())
    (c,) = _consent(events)
    assert (c["recording"], c["source"], c["captured"]) == ("granted", "upstream", True)
    assert events.index(c) == 1  # right after ready
    final = next(e for e in events if e["type"] == "transcript" and e["final"])
    reply = next(e for e in events if e["type"] == "reply" and e["utterance_id"] == final["utterance_id"])
    assert reply["provenance"]["consent"] == {"recording": "granted", "source": "upstream", "captured": True}
    assert capture.flush()
    store = capture.store
    (call,) = store.calls()
    assert call == next(e for e in events if e["type"] == "ready")["session_id"]
    (uid,) = store.utterance_ids(call)
    u = store.utterance(call, uid)
    assert (u.id, u.text, u.language, u.confidence) == (final["utterance_id"], final["text"], final["language"], final["confidence"])
    assert u.act == (reply.get("dialogue") or {}).get("act") and u.repeat_asked == (u.act in ("rephrase", "not_heard", "reask"))
    assert 1.5 < u.duration < 5
    assert any("recording consent granted (upstream), captured" in r.getMessage() for r in caplog.records)
    assert not any(final["text"] in r.getMessage() for r in caplog.records if final["text"])


async def test_refused_and_unasked_calls_leave_nothing_and_change_nothing_else(make_server, capture):
    server = await _server(make_server, capture)
    refused = await _call(server, {"consent": {"recording": "refused"}}, audio=_speech())
    unasked = await _call(server, {}, audio=_speech())
    assert [(c["recording"], c["source"], c["captured"]) for c in _consent(refused)] == [("refused", "upstream", False)]
    assert [(c["recording"], c["source"]) for c in _consent(unasked)] == [("refused", "not_asked")]
    for events in (refused, unasked):
        assert any(e["type"] == "transcript" and e["final"] for e in events) and any(e["type"] == "reply" for e in events)
    assert capture.flush()
    left = list(capture.store.root.iterdir())  # nothing but the writer's (empty) lock
    assert capture.store.calls() == [] and [p.name for p in left] == [".lock"] and left[0].read_bytes() == b""


async def test_dauys_asks_after_the_disclosure_and_key_1_grants(make_server, capture):
    server = await _server(make_server, capture, ask_consent=True)
    events = await _call(server, {"keypad": True}, dtmf=["1"], audio=_speech())
    asked, granted = _consent(events)
    assert asked["recording"] == "asked" and asked["questions"] == [
        {"language": "kk", "text": server.settings.capture.question["kk"] + " " + server.settings.capture.question_keys["kk"]}]
    assert (granted["recording"], granted["source"], granted["utterance_id"]) == ("granted", "dtmf", "dtmf:1")
    thanks = next(e for e in events if e["type"] == "reply" and e["utterance_id"] == "dtmf:1")
    assert thanks["dialogue"] == {"act": "consent", "recording": "granted"} and thanks["text"] == server.settings.capture.thanks["kk"]
    assert capture.flush()
    assert len(capture.store.calls()) == 1


@pytest.mark.parametrize("answer, decision", [("иә", "granted"), ("Нет.", "refused"), ("yoʻq", "refused")])
async def test_a_spoken_yes_or_no_decides_and_is_not_taken_as_a_question(make_server, capture, answer, decision):
    server = await _server(make_server, capture, ask_consent=True)
    events = await _call(server, {}, texts=[answer])
    assert _consent(events)[0]["questions"] == [{"language": "kk", "text": server.settings.capture.question["kk"]}]  # no keypad: no keys
    decided = _consent(events)[-1]
    assert (decided["recording"], decided["source"], decided["utterance_id"]) == (decision, "text", "u1")
    (reply,) = [e for e in events if e["type"] == "reply" and e["utterance_id"] == "u1"]
    assert reply["dialogue"]["act"] == "consent"


async def test_a_first_turn_that_is_no_answer_is_not_consent_and_is_answered_as_usual(make_server, capture):
    server = await _server(make_server, capture, ask_consent=True)
    events = await _call(server, {}, texts=["Сәлеметсіз бе, картам бұғатталып қалды"], audio=_speech())
    decided = _consent(events)[-1]
    assert (decided["recording"], decided["source"]) == ("refused", "unanswered")
    (reply,) = [e for e in events if e["type"] == "reply" and e["utterance_id"] == "u1"]
    assert reply["dialogue"]["act"] in ("answer", "confirm") and reply["provenance"]["consent"]["recording"] == "refused"
    assert capture.flush() and capture.store.calls() == []


async def test_disk_full_during_a_call_stops_its_capture_and_the_call_goes_on(make_server, capture):
    import errno

    from pipeline import metrics

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    capture.store.write_call = full
    server = await _server(make_server, capture)
    before = metrics.CAPTURE_DROPPED.labels("disk_full")._value.get()
    events = await _call(server, {"consent": {"recording": "granted"}}, audio=np.concatenate([_speech(), _speech()]))
    assert capture.flush()
    assert metrics.CAPTURE_DROPPED.labels("disk_full")._value.get() == before + 1
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    replies = [e for e in events if e["type"] == "reply" and e["utterance_id"].startswith("u")]
    assert len(finals) == 2 and len(replies) == 2 and events[-1]["type"] == "session_end"  # the call went on
    assert replies[-1]["provenance"]["consent"]["captured"] is False  # and says it is no longer captured
    assert capture.store.calls() == []


async def test_a_spoken_yes_in_russian_grants(make_server, capture):
    from tests.helpers.audio import espeak

    server = await _server(make_server, capture, ask_consent=True)
    pad = np.zeros(8000, dtype=np.float32)
    yes = np.concatenate([pad, espeak("Да.", "ru", 140), pad, pad])
    events = await _call(server, {"language": "ru"}, audio=np.concatenate([yes, _speech()]))
    decided = _consent(events)[1]
    assert (decided["recording"], decided["source"], decided["utterance_id"]) == ("granted", "voice", "u1")
    assert capture.flush()
    (call,) = capture.store.calls()
    assert capture.store.utterance_ids(call) == ["u2"]  # the answer itself is not kept, what follows is


async def test_retention_purges_expired_calls_when_the_server_starts(make_server, capture):
    capture.store.write_call("expired1", {"session_id": "expired1", "started": "2020-01-01T00:00:00Z"})
    capture.store.write_utterance("expired1", "u1", np.zeros(1600, np.float32), {"text": "x", "language": "kk", "confidence": 0.5})
    await _server(make_server, capture, retention_days=30)
    for _ in range(100):
        if not capture.store.calls():
            break
        await asyncio.sleep(0.05)
    assert capture.store.calls() == []


def _mulaw8k(samples16k):
    from models.audio import Encoding, encode_wire, resample

    return encode_wire(resample(samples16k, 16000, 8000), Encoding.MULAW)


async def test_twilio_custom_parameter_consent_captures_with_the_call_sid(make_server, capture):
    import base64
    import uuid

    server = await _server(make_server, capture)
    sid, call_sid = "MZ" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    async with connect(f"ws://127.0.0.1:{server.port}/v1/twilio") as ws:
        await ws.send(json.dumps({"event": "start", "streamSid": sid, "start": {
            "callSid": call_sid, "streamSid": sid, "customParameters": {"language": "kk", "consent": "granted"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        mulaw = _mulaw8k(_speech())
        for off in range(0, len(mulaw), 160):
            await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(mulaw[off : off + 160]).decode()}}))
        await asyncio.sleep(3.0)  # the utterance is recognised while the line stays open
        await ws.send(json.dumps({"event": "stop", "streamSid": sid}))
        try:
            async with asyncio.timeout(30):
                async for _ in ws:
                    pass
        except Exception:  # noqa: BLE001 - the server closes the stream
            pass
    for _ in range(100):
        if capture.store.calls():
            break
        await asyncio.sleep(0.05)
    assert capture.flush()
    (call,) = capture.store.calls()
    assert capture.store.call_meta(call)["carrier_call_id"] == call_sid and capture.store.call_meta(call)["transport"] == "twilio"
    assert capture.store.find_call(call_sid) == [call]
    assert capture.store.utterance_ids(call)


async def test_audiosocket_asks_and_key_1_grants(make_server, capture):
    import struct
    import uuid

    from models.audio import Encoding, encode_wire, resample

    server = await make_server(
        services_with={"capture": capture}, server={"audiosocket_port": 0, "audiosocket_consent": "ask"},
        capture={"enabled": True, "dir": str(capture.store.root), "key_env": KEY_ENV},
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.audiosocket_port)
    call_uuid = uuid.uuid4()
    writer.write(struct.pack(">BH", 0x01, 16) + call_uuid.bytes)
    silence = b"\0" * 320
    for _ in range(10):
        writer.write(struct.pack(">BH", 0x10, 320) + silence)
    writer.write(struct.pack(">BH", 0x03, 1) + b"1")
    pcm = encode_wire(resample(_speech(), 16000, 8000), Encoding.PCM_S16LE)
    for off in range(0, len(pcm), 320):
        writer.write(struct.pack(">BH", 0x10, 320) + pcm[off : off + 320].ljust(320, b"\0"))
    await writer.drain()
    await asyncio.sleep(3.0)
    writer.write(b"\x00\x00\x00")  # hangup
    await writer.drain()
    writer.close()
    for _ in range(200):
        if capture.store.calls() and not server.sessions:
            break
        await asyncio.sleep(0.05)
    assert capture.flush()
    (call,) = capture.store.calls()
    meta = capture.store.call_meta(call)
    assert meta["carrier_call_id"] == str(call_uuid) and meta["consent"] == {"recording": "granted", "source": "dtmf"}
    assert capture.store.utterance_ids(call)


async def test_speech_during_the_disclosure_never_cuts_it_even_with_a_consent_reply_queued(make_server, capture):
    """Key 1 during the (not interruptible) disclosure queues the thanks behind it; the caller then speaks:
    the queued thanks may be cut (barge-in), the disclosure must not be (Law 230-VIII Art. 21)."""
    server = await _server(make_server, capture, ask_consent=True)
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk", "keypad": True}))  # real-time pacing: the disclosure lasts
        await ws.send(json.dumps({"type": "dtmf", "digit": "1"}))
        await asyncio.sleep(0.5)
        await send_audio(ws, _speech(), realtime=False)
        await ws.send(json.dumps({"type": "end"}))
        events, _ = await collect(ws, lambda e: e["type"] == "session_end", 120)
    ends = {e["reply_id"]: e["interrupted"] for e in events if e["type"] == "audio_end"}
    assert ends.get("disclosure") is False, str([(e["type"], e.get("reply_id") or e.get("utterance_id"), e.get("interrupted")) for e in events])
    assert _consent(events)[-1]["recording"] == "granted"
