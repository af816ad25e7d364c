"""Turn-taking test material: a scripted fast recogniser, and espeak-ng clauses with exact pauses."""

from __future__ import annotations

import asyncio

import numpy as np

from models.scheduler import Priority
from models.whisper import Recognition
from tests.helpers.audio import espeak

RATE = 16000


class ScriptedFinals:
    """The real scheduler for partials; each final (and speculative) decode is ``script(seconds of audio)``
    at once, as a fast recogniser would give it (a GPU decodes an utterance in some 20 ms), or after
    ``delay_s`` (an overloaded one)."""

    def __init__(self, inner, script, delay_s: float = 0.02) -> None:
        self.inner, self.script, self.delay_s = inner, script, delay_s

    async def submit(self, audio, language, allowed, priority, key=None, **kw):
        if priority is Priority.FINAL:
            await asyncio.sleep(self.delay_s)
            return Recognition(self.script(len(audio) / RATE), language or "ru", 1.0, 0.9, -0.1, 0.01, 1.2, len(audio) / RATE, 0.02)
        return await self.inner.submit(audio, language, allowed, priority, key, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def speech(text: str, voice: str = "ru") -> np.ndarray:
    """espeak-ng speech without the silence espeak-ng puts around it, so a pause is what the test makes."""
    x = espeak(text, voice, 140)
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return x[loud[0] : loud[-1] + 1]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def two_clause_script(first: str, second: str, first_s: float, pause_s: float, second_s: float, joined: str | None = None):
    """What a recogniser hears in an utterance this long (with the VAD's padding), for speech made
    of two clauses ``first_s`` and ``second_s`` long with a ``pause_s`` pause between: the first
    clause, the second alone (cut at the pause), or both (``joined``, default the two with a space)."""

    def script(seconds: float) -> str:
        if seconds < first_s + pause_s:
            return first
        if seconds < first_s + pause_s + 0.8 * second_s:
            return second
        return joined or f"{first} {second}"

    return script
