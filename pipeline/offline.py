"""Whole files through the server's own segmenter and recogniser (`dauys transcribe`, evaluation)."""

from __future__ import annotations

from typing import Iterator

from models.audio import read_audio
from models.vad import SileroVad
from models.whisper import load_whisper
from pipeline.segmenter import Segmenter


def transcribe_audio(engine, vad: SileroVad, settings, samples, language: str | None) -> Iterator[dict]:
    seg = Segmenter.from_settings(vad.stream(), settings.vad)
    starts: dict[int, float] = {}
    step = 16000 * 10
    events = []
    for off in range(0, len(samples), step):
        events += seg.push(samples[off : off + step])
    events += seg.finish()
    previous = None
    for ev in events:
        if ev.kind == "start":
            starts[ev.index] = ev.t
        elif ev.kind == "end":
            rec = engine.recognize(ev.audio, language, settings.asr.language_weights(previous))
            if not rec.rejected:
                previous = rec.language
            yield {
                "start": round(starts.get(ev.index, 0.0), 3),
                "end": ev.t,
                "text": "" if rec.rejected else rec.text,
                "language": rec.language,
                "confidence": round(rec.confidence, 3),
                "rejected": rec.rejected,
            }


def transcribe_file(settings, path, language: str | None = None) -> Iterator[dict]:
    engine = load_whisper(settings.asr)
    audio = read_audio(path).samples
    yield from transcribe_audio(engine, SileroVad(), settings, audio, language)
