"""What every speech engine shares: the engine protocol, per-call settings, the error, the per-sentence loop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from models.audio import AudioChunk
from models.errors import ModelError
from models.text import split_sentences

WARMUP_TEXT = {
    "kk": "Сәлеметсіз бе.", "ky": "Саламатсызбы.", "uz": "Assalomu alaykum.", "tt": "Исәнмесез.",
    "tr": "Merhaba.", "az": "Salam.", "tk": "Salam.", "ba": "Һаумыһығыҙ.", "ru": "Здравствуйте.", "en": "Hello.",
}


class TtsError(ModelError):
    """Speech could not be produced: engine missing, voice unloadable, worker failure or timeout.
    The message is one line and names the fix where there is one."""


@dataclass(frozen=True)
class SynthesisConfig:
    """Per-call synthesis settings (as piper1-gpl's); ``None`` = the voice's default."""

    length_scale: float | None = None
    """Phoneme length scale: > 1 slower, < 1 faster.  espeak-ng: words per minute / length_scale."""
    volume: float | None = None
    """Multiplier for the samples (clipped to [-1, 1]); None = 1.0."""
    noise_scale: float | None = None
    """Piper only: generator noise."""
    noise_w_scale: float | None = None
    """Piper only: phoneme width noise."""
    speaker_id: int | None = None
    """Piper only: speaker of a multi-speaker voice."""

    def merged(self, over: SynthesisConfig | None) -> SynthesisConfig:
        """These settings with every non-None field of ``over`` taking precedence."""
        if over is None:
            return self
        return SynthesisConfig(**{f.name: (getattr(over, f.name) if getattr(over, f.name) is not None else getattr(self, f.name)) for f in fields(self)})


@runtime_checkable
class TtsEngine(Protocol):
    """A speech engine: one Piper voice, or espeak-ng for many languages."""

    name: str
    """Engine kind: 'piper' or 'espeak-ng'."""
    model_id: str
    """What served, for provenance: 'piper:kk_KZ-issai-high', 'espeak-ng'."""
    languages: tuple[str, ...]
    """Language codes this engine speaks."""
    sample_rate: int
    """Rate (Hz) of the chunks it yields."""

    def model_id_for(self, language: str) -> str:
        """The provenance id for speech in ``language`` ('espeak-ng:kk')."""
        ...

    def synthesize(self, text: str, language: str, config: SynthesisConfig | None = None) -> Iterator[AudioChunk]:
        """Blocking generator: one or more chunks per sentence (step it in a worker thread)."""
        ...

    def synthesize_sentence(self, sentence: str, language: str | None = None, config: SynthesisConfig | None = None) -> list[AudioChunk]:
        """All chunks for one sentence, already split (the router's call)."""
        ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class SentenceEngine:
    """``synthesize`` for engines that speak one sentence at a time: the text is split
    once (models.text) and each sentence goes to ``synthesize_sentence``."""

    def synthesize_sentence(self, sentence: str, language: str | None = None, config: SynthesisConfig | None = None) -> list[AudioChunk]:
        raise NotImplementedError

    def synthesize(self, text: str, language: str | None = None, config: SynthesisConfig | None = None) -> Iterator[AudioChunk]:
        for sentence in split_sentences(text):
            yield from self.synthesize_sentence(sentence, language, config)

