"""Speech out, end to end: the spoken disclosure, a spoken question answered with audio, barge-in,
Twilio Media Streams and Asterisk AudioSocket with protocol-faithful clients."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.dialogue.kb import KnowledgeBase
from models.audio import Encoding, decode_wire, encode_wire, read_audio, resample
from tests.helpers.audio import clip, espeak
from tests.helpers.server import collect

pytestmark = pytest.mark.slow

QUESTION_KK = "Картам бұғатталып қалды"  # espeak-ng + whisper-base, language fixed: card_blocked (score 0.27)


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load(None)


@pytest.fixture(scope="module")
def question_kk():
    return espeak(QUESTION_KK, "kk", 140)


def start_msg(language="auto", encoding="pcm_s16le", rate=16000, pacing="realtime"):
    return json.dumps({"type": "start", "audio": {"encoding": encoding, "sample_rate": rate}, "output": {"encoding": encoding, "sample_rate": rate, "pacing": pacing}, "language": language})


async def send_audio(ws, samples16k, encoding=Encoding.PCM_S16LE, rate=16000, realtime=True, frame_ms=20, log=None):
    data = encode_wire(resample(samples16k, 16000, rate), encoding)
    step = encoding.sample_width * rate * frame_ms // 1000
    t0 = time.monotonic()
    for i, off in enumerate(range(0, len(data), step)):
        await ws.send(data[off : off + step])
        if log is not None:
            log.append((time.monotonic(), (off + step) / (encoding.sample_width * rate)))
        if realtime:
            delay = t0 + (i + 1) * frame_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def test_disclosure_is_the_first_audio_and_ready_carries_its_text(live_server):
    async with connect(live_server["ws"]) as ws:
        await ws.send(start_msg(pacing="none"))
        events, audio = await collect(ws, lambda e: e["type"] == "audio_end")
    ready = events[0]
    assert ready["type"] == "ready" and ready["ai_generated"] is True
    assert "жасанды интеллект" in ready["disclosure"]["text"] and ready["disclosure"]["language"] == "kk"
    first_audio = next(e for e in events if e["type"] == "audio_start")
    assert first_audio["reply_id"] == "disclosure" and first_audio["ai_generated"] is True
    assert first_audio["provenance"]["models"]["tts"].startswith(("espeak-ng", "piper"))
    pcm = decode_wire(bytes(audio["disclosure"]), Encoding.PCM_S16LE)
    assert len(pcm) / 16000 > 2.0 and np.sqrt(np.mean(pcm**2)) > 0.01


async def test_spoken_kazakh_question_gets_the_kazakh_answer_with_audio_in_the_phone_format(live_server, kb, question_kk):
    async with connect(live_server["ws"]) as ws:
        await ws.send(start_msg("kk", "mulaw", 8000, pacing="none"))
        await send_audio(ws, np.concatenate([question_kk, np.zeros(16000, np.float32)]), Encoding.MULAW, 8000, realtime=False)
        first, first_audio = await collect(ws, lambda e: e["type"] == "reply", timeout=90)
        if first[-1]["dialogue"]["act"] == "confirm":  # an uncertain match is put to the caller first
            assert first[-1]["dialogue"]["entries"] == ["card_blocked"], first[-1]
            await ws.send(json.dumps({"type": "text", "text": "Иә"}))
        await ws.send(json.dumps({"type": "end"}))
        events, audio = await collect(ws, lambda e: e["type"] == "session_end", timeout=90)
    events = first + events
    final = next(e for e in events if e["type"] == "transcript" and e["final"])
    reply = [e for e in events if e["type"] == "reply"][-1]
    assert first[-1]["utterance_id"] == final["utterance_id"] and reply["language"] == "kk"
    assert reply["text"] == kb.by_id["card_blocked"].answers["kk"], (final["text"], reply["text"])
    start = next(e for e in events if e["type"] == "audio_start" and e["reply_id"] == reply["reply_id"])
    assert start["encoding"] == "mulaw" and start["sample_rate"] == 8000
    assert events.index(final) < events.index(reply) < events.index(start)
    pcm = decode_wire(bytes(audio[reply["reply_id"]]), Encoding.MULAW)
    assert len(pcm) / 8000 > 3.0


async def test_barge_in_stops_reply_audio_within_200ms_of_speech_start(live_server):
    speech = read_audio(clip("kk_kscd_ex1.wav")).samples
    sent: list[tuple[float, float]] = []  # (wall time, input seconds sent)
    async with connect(live_server["ws"]) as ws:
        await ws.send(start_msg("kk"))
        # let the disclosure play out (it is not interruptible), then ask by text
        await collect(ws, lambda e: e["type"] == "audio_end" and e["reply_id"] == "disclosure")
        await ws.send(json.dumps({"type": "text", "text": "Депозит пайызы қанша?"}))
        events, _ = await collect(ws, lambda e: e["type"] == "audio_start")
        reply_id = events[-1]["reply_id"]
        frames: list[float] = []
        events2 = []

        async def reader():
            async for msg in ws:
                if isinstance(msg, bytes):
                    frames.append(time.monotonic())
                else:
                    ev = json.loads(msg)
                    events2.append((time.monotonic(), ev))
                    if ev["type"] == "audio_end":
                        return

        r = asyncio.ensure_future(reader())
        await asyncio.sleep(0.6)  # some reply audio has gone out
        await send_audio(ws, speech, log=sent)
        await asyncio.wait_for(r, 30)
    end = next(ev for _, ev in events2 if ev["type"] == "audio_end")
    assert end["reply_id"] == reply_id and end["interrupted"] is True
    started = next(ev for _, ev in events2 if ev["type"] == "speech_started")
    # wall time at which the client had sent the input up to speech start + 200 ms
    limit_wall = next(w for w, t in sent if t >= started["t"] + 0.2)
    late = [f for f in frames if f > limit_wall + 0.05]  # 50 ms for loopback delivery
    assert not late, f"{len(late)} reply frames arrived after speech start + 200 ms"


# ------------------------------------------------------------------------------------ Twilio
async def test_twilio_media_stream_round_trip_with_marks_and_barge_in(live_server, question_kk):
    url = live_server["ws"].replace("/v1/voice", "/v1/twilio")
    sid = "MZ" + uuid.uuid4().hex
    received = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": "AC0", "callSid": "CA0", "streamSid": sid, "tracks": ["inbound"],
            "customParameters": {"language": "kk"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))

        async def reader():
            async for msg in ws:
                m = json.loads(msg)
                received.append((time.monotonic(), m))
                if m["event"] == "mark":  # Twilio echoes a mark once playback reaches it
                    await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": m["mark"]}))

        r = asyncio.ensure_future(reader())
        mulaw = encode_wire(resample(np.concatenate([question_kk, np.zeros(16000, np.float32)]), 16000, 8000), Encoding.MULAW)
        seq = 2
        for off in range(0, len(mulaw), 160):  # 20 ms media messages, real time
            await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid,
                                      "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20),
                                                "payload": base64.b64encode(mulaw[off : off + 160]).decode()}}))
            seq += 1
            await asyncio.sleep(0.02)
        # wait for the reply to start playing, then barge in with more speech
        deadline = time.monotonic() + 40
        def reply_media():  # media sent after the disclosure's mark, i.e. the answer playing
            seen = False
            n = 0
            for _, m in received:
                if m["event"] == "mark" and m["mark"]["name"] == "dauys-ai:disclosure":
                    seen = True
                elif seen and m["event"] == "media":
                    n += 1
            return n

        while time.monotonic() < deadline and reply_media() < 25:
            await asyncio.sleep(0.1)
        barge = encode_wire(resample(read_audio(clip("kk_kscd_ex2.wav")).samples, 16000, 8000), Encoding.MULAW)
        for off in range(0, len(barge), 160):
            await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid,
                                      "media": {"track": "inbound", "payload": base64.b64encode(barge[off : off + 160]).decode()}}))
            seq += 1
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": sid, "stop": {"accountSid": "AC0", "callSid": "CA0"}}))
        await asyncio.wait_for(r, 30)
    events = [m["event"] for _, m in received]
    media = [m for _, m in received if m["event"] == "media"]
    assert media and all(m["streamSid"] == sid for m in media)
    payload = base64.b64decode(media[0]["media"]["payload"])
    assert len(payload) > 0 and len(decode_wire(payload, Encoding.MULAW)) == len(payload)
    marks = [m["mark"]["name"] for _, m in received if m["event"] == "mark"]
    assert marks and all(name.startswith("dauys-ai:") for name in marks)  # the disclosure at least
    assert "clear" in events, events[-20:]


# ------------------------------------------------------------------------------ AudioSocket
async def _read_frame(reader):
    head = await reader.readexactly(3)
    kind, length = struct.unpack(">BH", head)
    return kind, await reader.readexactly(length) if length else b""


async def test_audiosocket_call_paced_frames_and_hangup(make_server, question_kk):
    server = await make_server(server={"audiosocket_port": 0})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.audiosocket_port)
    writer.write(struct.pack(">BH", 0x01, 16) + uuid.uuid4().bytes)
    pcm = encode_wire(resample(np.concatenate([question_kk, np.zeros(8000, np.float32)]), 16000, 8000), Encoding.PCM_S16LE)
    arrivals: list[tuple[float, int]] = []

    async def rx():
        while True:
            try:
                kind, payload = await _read_frame(reader)
            except asyncio.IncompleteReadError:
                return
            if kind == 0x10:
                arrivals.append((time.monotonic(), len(payload)))

    r = asyncio.ensure_future(rx())
    t0 = time.monotonic()
    for i, off in enumerate(range(0, len(pcm), 320)):
        writer.write(struct.pack(">BH", 0x10, 320) + pcm[off : off + 320].ljust(320, b"\0"))
        await writer.drain()
        await asyncio.sleep(max(0, t0 + (i + 1) * 0.02 - time.monotonic()))
    # keep the line open (silence) while the disclosure and the answer play
    silence = b"\0" * 320
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and len(arrivals) < 300:
        writer.write(struct.pack(">BH", 0x10, 320) + silence)
        await writer.drain()
        await asyncio.sleep(0.02)
    writer.write(b"\x00\x00\x00")  # hangup
    await writer.drain()
    await asyncio.wait_for(r, 10)
    writer.close()
    assert len(arrivals) >= 200
    assert all(n == 320 for _, n in arrivals)
    gaps = np.diff([t for t, _ in arrivals[20:250]]) * 1000
    assert abs(np.median(gaps) - 20.0) < 1.0, np.median(gaps)
    assert np.percentile(np.abs(gaps - 20.0), 90) < 5.0
    await asyncio.sleep(0.3)
    assert not server.sessions  # the hangup ended the session cleanly
