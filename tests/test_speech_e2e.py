"""Speech out, end to end: the spoken disclosure, a spoken question answered with audio, barge-in
(the phone carriers' calls are in tests/carriers/test_phone_calls.py)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import Encoding, decode_wire, read_audio
from models.dialogue.kb import KnowledgeBase
from tests.helpers.audio import clip
from tests.helpers.server import collect, send_audio

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load(None)


def start_msg(language="auto", encoding="pcm_s16le", rate=16000, pacing="realtime"):
    return json.dumps({"type": "start", "audio": {"encoding": encoding, "sample_rate": rate}, "output": {"encoding": encoding, "sample_rate": rate, "pacing": pacing}, "language": language})


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
