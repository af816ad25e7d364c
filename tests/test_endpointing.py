"""Adaptive endpointing end to end: real espeak-ng speech streamed at real-time pace, the real Silero
VAD, segmenter, session, dialogue and server. The recogniser is a scripted stand-in for a fast one
(a GPU decodes an utterance in some 20 ms): whisper-base on these 2 CPU cores takes 240-400 ms from
the pause, later than a short endpoint could come, and hears espeak-ng's "и" or "оператор" too
unreliably for a test about what happens once the words are known."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.scheduler import Priority
from models.whisper import Recognition
from tests.helpers.audio import espeak
from tests.helpers.server import send_audio

pytestmark = pytest.mark.slow

RATE = 16000


class ScriptedFinals:
    """The real scheduler for partials; each final (and speculative) decode is ``script(seconds of audio)``
    at once, as a fast recogniser would give it."""

    def __init__(self, inner, script) -> None:
        self.inner, self.script = inner, script

    async def submit(self, audio, language, allowed, priority, key=None, **kw):
        if priority is Priority.FINAL:
            await asyncio.sleep(0.02)
            return Recognition(self.script(len(audio) / RATE), language or "ru", 1.0, 0.9, -0.1, 0.01, 1.2, len(audio) / RATE, 0.02)
        return await self.inner.submit(audio, language, allowed, priority, key, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _speech(text: str) -> np.ndarray:
    """espeak-ng speech without the silence espeak-ng puts around it, so a pause is what the test makes."""
    x = espeak(text, "ru", 140)
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return x[loud[0] : loud[-1] + 1]


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


async def _call(make_server, services, audio: np.ndarray, script, adaptive: bool) -> list[dict]:
    """One native Russian session: the audio at real-time pace, then the events until it ends."""
    server = await make_server({"scheduler": ScriptedFinals(services.scheduler, script)}, vad={"adaptive": adaptive})
    events: list[dict] = []
    async with connect(f"ws://127.0.0.1:{server.port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "ru", "output": {"pacing": "none"}}))

        async def read():
            async for m in ws:
                if isinstance(m, str):
                    events.append(json.loads(m))

        reader = asyncio.ensure_future(read())
        while not any(e["type"] == "audio_end" and e["reply_id"] == "disclosure" for e in events):
            await asyncio.sleep(0.02)
        try:
            await send_audio(ws, audio)  # 20 ms frames, real time
            await asyncio.sleep(1.0)
            await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass  # a handoff ends the session
        await asyncio.wait_for(reader, 60)
    return events


def _finals(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "transcript" and e["final"] and e["source"] == "audio"]


async def test_a_request_for_a_person_ends_the_turn_after_the_short_silence(make_server, services):
    """Words that settle the turn (a request for a person): the endpoint comes after
    vad.short_silence_ms (200) instead of vad.min_silence_ms (400); the same audio and VAD otherwise."""
    audio = np.concatenate([_speech("Соедините меня с оператором"), _silence(1.5)])
    gaps = {}
    for adaptive in (False, True):
        finals = _finals(await _call(make_server, services, audio, lambda s: "Соедините меня с оператором", adaptive))
        assert len(finals) == 1, finals
        gaps[adaptive] = finals[0]["t_endpoint"] - finals[0]["t_end"]  # the silence after the padded speech end
    assert gaps[False] - gaps[True] == pytest.approx(0.192, abs=0.07), gaps  # 12 - 6 VAD windows of 32 ms


async def test_a_pause_after_a_conjunction_does_not_cut_the_question(make_server, services):
    """"Я потерял карту и" + 600 ms + "не знаю что теперь делать": a fixed 400 ms endpoint cuts it
    in two utterances (the first answered on its own); adaptive endpointing waits
    vad.long_silence_ms after the conjunction and hears one question."""
    first, second = _speech("Я потерял карту и"), _speech("не знаю что теперь делать")
    audio = np.concatenate([first, _silence(0.6), second, _silence(1.5)])
    one, two = len(first) / RATE, len(second) / RATE

    def script(seconds: float) -> str:  # what a recogniser hears in an utterance this long (with the VAD's padding)
        if seconds < one + 0.6:
            return "Я потерял карту и"
        if seconds < one + 0.6 + 0.8 * two:
            return "не знаю что теперь делать"  # the second clause alone
        return "Я потерял карту и не знаю что теперь делать"

    fixed = _finals(await _call(make_server, services, audio, script, False))
    adaptive = _finals(await _call(make_server, services, audio, script, True))
    assert [f["text"] for f in fixed] == ["Я потерял карту и", "не знаю что теперь делать"], fixed
    assert [f["text"] for f in adaptive] == ["Я потерял карту и не знаю что теперь делать"], adaptive
