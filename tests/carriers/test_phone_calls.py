"""Phone calls end to end with protocol-faithful clients: Twilio Media Streams (8 kHz mu-law JSON,
marks, clear on barge-in) and Asterisk AudioSocket (TLV frames over TCP, paced 20 ms frames, hangup)."""

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

from models.audio import Encoding, decode_wire, encode_wire, read_audio, resample
from tests.helpers.audio import clip

pytestmark = pytest.mark.slow


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
