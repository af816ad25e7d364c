"""Speculative replies end to end (dialogue.speculative): real espeak-ng speech at real-time pace, the
real VAD, segmenter, session, knowledge-base dialogue, espeak-ng TTS, watermark and server; the
recogniser is the scripted fast stand-in of test_endpointing (so what is heard at each pause is
known). The reply prepared at the caller's pause is sent only after the endpoint, only when the
final is the same turn, and is the reply the non-speculative path gives."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from pipeline import metrics, watermark
from tests.helpers.server import send_audio
from tests.helpers.turns import RATE, ScriptedFinals
from tests.helpers.turns import silence as _silence
from tests.helpers.turns import speech as _speech

pytestmark = pytest.mark.slow


class TimedTts:
    """The real TTS, noting when each sentence's synthesis was asked for."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def synthesize(self, text, language):
        self.calls.append((time.perf_counter(), str(text)))
        return self.inner.synthesize(text, language)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _count(result: str) -> float:
    return metrics.SPECULATIVE_REPLIES.labels(result)._value.get()


async def _call(make_server, services, audio: np.ndarray, script, speculative: bool, tts=None) -> tuple[list, dict[str, bytearray]]:
    """One Russian session (16 kHz PCM out, unpaced): the audio at real-time pace; the events in
    order (text ones as dicts, with the arrival index of the first binary frame of each reply) and
    the reply audio by reply id."""
    server = await make_server(
        {"scheduler": ScriptedFinals(services.scheduler, script), "tts": tts or services.tts}, dialogue={"speculative": speculative}, vad={"adaptive": False}
    )
    events: list = []
    audio_by_reply: dict[str, bytearray] = {}
    current: list[str] = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "ru", "output": {"pacing": "none", "sample_rate": 16000}}))

        async def read():
            async for m in ws:
                if isinstance(m, str):
                    ev = json.loads(m)
                    ev["_at"] = time.perf_counter()
                    events.append(ev)
                    if ev["type"] == "audio_start":
                        current[:] = [ev["reply_id"]]
                        audio_by_reply[ev["reply_id"]] = bytearray()
                else:
                    if not audio_by_reply[current[0]]:
                        events.append({"type": "first_audio", "reply_id": current[0]})
                    audio_by_reply[current[0]] += m

        reader = asyncio.ensure_future(read())
        while not any(e["type"] == "audio_end" and e["reply_id"] == "disclosure" for e in events):
            await asyncio.sleep(0.02)
        await send_audio(ws, audio)
        await asyncio.sleep(1.5)
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(reader, 60)
    return events, audio_by_reply


def _replies(events: list) -> list[dict]:
    return [e for e in events if e["type"] == "reply"]


async def test_a_prepared_reply_is_sent_after_the_endpoint_and_is_the_same_reply(make_server, services):
    question = "Как разблокировать карту?"
    audio = np.concatenate([_speech(question), _silence(1.5)])
    hits, misses = _count("hit"), _count("miss")
    tts, plain_tts = TimedTts(services.tts), TimedTts(services.tts)
    events, audio_by_reply = await _call(make_server, services, audio, lambda s: question, True, tts)
    assert (_count("hit") - hits, _count("miss") - misses) == (1, 0)
    plain, plain_audio = await _call(make_server, services, audio, lambda s: question, False, plain_tts)
    assert _count("hit") - hits == 1  # speculation off: nothing prepared
    # the reply's first sentence was synthesised before the endpoint (before its final reached the
    # caller), once; without speculation after it
    for timed, evs, early in ((tts, events, True), (plain_tts, plain, False)):
        disclosed = next(e["_at"] for e in evs if e["type"] == "audio_end" and e["reply_id"] == "disclosure")
        final_at = next(e["_at"] for e in evs if e["type"] == "transcript" and e["final"])
        texts = [text for t, text in timed.calls if t > disclosed]
        first_at = next(t for t, _ in timed.calls if t > disclosed)
        assert len(texts) == len(set(texts)) >= 2, texts
        assert (first_at < final_at) is early, (first_at - final_at, texts)
    (reply,), (plain_reply,) = _replies(events), _replies(plain)
    assert reply["text"] == plain_reply["text"] and "разблокировать" in reply["text"].lower()
    assert reply["dialogue"] == plain_reply["dialogue"]
    # nothing of the reply reaches the caller before its final transcript
    kinds = [e["type"] for e in events if e.get("reply_id") == reply["reply_id"] or (e["type"] == "transcript" and e.get("final"))]
    assert kinds[:4] == ["transcript", "reply", "audio_start", "first_audio"], kinds
    # the same speech, every sample of it marked with this reply's watermark
    sent = np.frombuffer(bytes(audio_by_reply[reply["reply_id"]]), np.int16).astype(np.float32) / 32768
    again = np.frombuffer(bytes(plain_audio[plain_reply["reply_id"]]), np.int16).astype(np.float32) / 32768
    assert len(sent) == len(again) and len(sent) > RATE
    start = next(e for e in events if e["type"] == "audio_start" and e["reply_id"] == reply["reply_id"])
    found = watermark.detect(sent, 16000)
    assert found.found and found.label == start["watermark"]


async def test_speech_after_the_pause_voids_the_prepared_reply(make_server, services):
    """The caller pauses 300 ms after "Я потерял карту" (past the speculative point, short of the
    400 ms endpoint) and goes on about the balance: the reply prepared for the lost card is
    dropped, and the caller is answered about what they asked in the end."""
    first, second = _speech("Я потерял карту"), _speech("какой у меня баланс")
    audio = np.concatenate([first, _silence(0.3), second, _silence(1.5)])
    one = len(first) / RATE

    def script(seconds: float) -> str:
        return "Я потерял карту" if seconds < one + 0.5 else "Какой у меня баланс?"

    misses, hits = _count("miss"), _count("hit")
    events, _ = await _call(make_server, services, audio, script, True)
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert [f["text"] for f in finals] == ["Какой у меня баланс?"], finals
    assert _count("miss") - misses >= 1 and _count("hit") - hits == 1  # the second pause's speculation is the final's turn
    (reply,) = _replies(events)
    assert "баланс" in reply["text"].lower() or "остат" in reply["text"].lower(), reply["text"]
    assert "заблокируйте карту" not in reply["text"].lower()

