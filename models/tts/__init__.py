"""Text to speech: Piper voices where configured, espeak-ng everywhere else.

Engines (each a :class:`TtsEngine`) are loaded once per process and shared by
every session.  ``synthesize()`` is a *blocking generator*: it yields one or
more :class:`~models.audio.AudioChunk` per sentence and is meant to be
stepped in a worker thread, never on the event loop.

- ``models.tts.base``: the engine protocol (:class:`TtsEngine`),
  :class:`SynthesisConfig`, :class:`TtsError`.  :func:`normalize_language`
  ('kk-KZ' -> 'kk') is :mod:`models.text`'s, re-exported here.
- ``models.tts.espeak``: :class:`EspeakTts` runs ``espeak-ng --stdout`` as a
  subprocess per sentence.  It is the offline fallback.
- ``models.tts.piper``: :class:`PiperTts` speaks a Piper voice through
  ``python -m piper_worker``, a separate GPL-3.0 program (never imported here).
- ``models.tts.router``: :class:`TtsRouter` maps languages to engines from a
  voice catalog, falls back to espeak-ng, and reports which engine served
  each call (:attr:`Synthesis.model_id`, for provenance).

Sentences are split by :func:`models.text.split_sentences`, once per call (the
router's); engines are handed one sentence at a time.
"""

from models.text import normalize_language
from models.tts.base import WARMUP_TEXT, SynthesisConfig, TtsEngine, TtsError
from models.tts.espeak import ESPEAK_INSTALL_HINT, ESPEAK_RATE, ESPEAK_VOICES, EspeakTts, parse_wav
from models.tts.piper import PIPER_INSTALL_HINT, PiperTts, piper_available
from models.tts.router import Synthesis, TtsRouter

__all__ = [
    "ESPEAK_INSTALL_HINT",
    "ESPEAK_RATE",
    "ESPEAK_VOICES",
    "PIPER_INSTALL_HINT",
    "WARMUP_TEXT",
    "EspeakTts",
    "PiperTts",
    "Synthesis",
    "SynthesisConfig",
    "TtsEngine",
    "TtsError",
    "TtsRouter",
    "normalize_language",
    "parse_wav",
    "piper_available",
]
