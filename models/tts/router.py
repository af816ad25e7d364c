"""Per-language voice choice: languages -> engines, with espeak-ng as the fallback.

:class:`TtsRouter` maps languages to engines from a voice catalog
``{language: "path/to/voice.onnx" | "espeak-ng[:voice]"}``, falls back to
espeak-ng for languages without a usable Piper voice (and for a sentence a
Piper voice fails on), and reports which engine served each call
(:attr:`Synthesis.model_id`, for provenance).  The text of a call is split
into sentences here, once; each engine is handed one sentence at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from models.audio import AudioChunk
from models.text import MIN_CHARS, normalize_language, split_sentences
from models.tts.base import WARMUP_TEXT, SynthesisConfig, TtsEngine, TtsError
from models.tts.cache import SpeechCache
from models.tts.espeak import ESPEAK_INSTALL_HINT, EspeakTts
from models.tts.piper import PiperTts

log = logging.getLogger("dauys.tts")


class Synthesis(Iterator[AudioChunk]):
    """One call's audio, sentence by sentence, and which engine(s) served it.

    A blocking iterator (step it in a worker thread).  If the language's Piper
    voice fails on a sentence, that sentence is spoken by espeak-ng and
    :attr:`model_id` says so ('piper:kk_KZ-issai-high+espeak-ng:kk').
    """

    def __init__(self, router: TtsRouter, text: str, language: str, config: SynthesisConfig) -> None:
        self.language = normalize_language(language)
        self.served: list[str] = []
        """Provenance ids of the engines that spoke, in order of first use."""
        self._router = router
        self._planned = router.model_id_for(self.language)
        self._gen = self._run(text, config)

    @property
    def model_id(self) -> str | None:
        return "+".join(self.served) if self.served else self._planned

    def __iter__(self) -> Synthesis:
        return self

    def __next__(self) -> AudioChunk:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _mark(self, engine: TtsEngine) -> None:
        mid = engine.model_id_for(self.language)
        if mid not in self.served:
            self.served.append(mid)

    def _run(self, text: str, config: SynthesisConfig) -> Iterator[AudioChunk]:
        router, lang = self._router, self.language
        primary = router.engine_for(lang)
        cache = router.cache
        for sentence in split_sentences(text, router.max_sentence_chars):
            engine = primary
            voice = primary.model_id_for(lang)
            if cache is not None:
                chunks = cache.get(voice, lang, config, sentence)
                if chunks is not None:
                    self._mark(engine)
                    yield from chunks
                    continue
            try:
                chunks = list(engine.synthesize_sentence(sentence, lang, config))
                if cache is not None:
                    cache.put(voice, lang, config, sentence, chunks)
            except TtsError as e:
                fallback = router.fallback if router.fallback is not None and router.fallback is not engine and lang in router.fallback.languages else None
                if fallback is None:
                    raise
                log.warning("tts: %s failed (%s); speaking this sentence with %s", engine.model_id, e, fallback.model_id_for(lang))
                router.fallbacks += 1
                engine = fallback
                chunks = list(engine.synthesize_sentence(sentence, lang, config))
            self._mark(engine)
            yield from chunks


def resolve_catalog_voices(voices: Mapping[str, str | Path], settings=None) -> dict[str, str | Path]:
    """``{language: "catalog:<id>"}`` entries replaced by the pulled voice's .onnx in the model store.

    A voice that is not pulled is left out with a warning naming `dauys models pull` (its language is
    then spoken by espeak-ng, as with a missing voice file)."""
    from models.catalog import CATALOG_PREFIX
    from models.errors import ModelError
    from models.store import model_store

    out: dict[str, str | Path] = {}
    for lang, spec in voices.items():
        if not str(spec).startswith(CATALOG_PREFIX):
            out[lang] = spec
            continue
        try:
            out[lang] = model_store(settings).path_for(str(spec), kind="tts")
        except ModelError as e:
            log.warning("tts: the voice for %s: %s; until then espeak-ng speaks it", lang, e)
    return out


class TtsRouter:
    """Languages -> engines: a Piper voice where one is configured and usable, else espeak-ng."""

    def __init__(
        self,
        engines: Mapping[str, TtsEngine] | None = None,
        fallback: EspeakTts | None = None,
        default_config: SynthesisConfig | None = None,
        max_sentence_chars: int | None = 400,
    ) -> None:
        self.voices: dict[str, TtsEngine] = {normalize_language(k): v for k, v in (engines or {}).items()}
        self.fallback = fallback
        self.default_config = default_config or SynthesisConfig()
        self.max_sentence_chars = max_sentence_chars
        self.fallbacks = 0
        """Sentences a voice failed on and the fallback spoke instead."""
        self.cache: SpeechCache | None = None
        """Speech of the operator's fixed texts (:meth:`cache_texts`); None = every sentence is synthesised."""

    # -- construction ----------------------------------------------------
    @classmethod
    def from_catalog(
        cls,
        voices: Mapping[str, str | Path],
        *,
        fallback: str | None = "espeak-ng",
        length_scale: float | None = None,
        espeak_rate_wpm: int = 160,
        piper_processes: int = 1,
        timeout_s: float = 30.0,
        use_cuda: bool = False,
        start: bool = True,
        max_sentence_chars: int | None = 400,
    ) -> TtsRouter:
        """Build from a voice catalog ``{language: voice}``.

        A voice is the path of a Piper ``.onnx`` (its ``.onnx.json`` beside it),
        or ``"espeak-ng"`` / ``"espeak-ng:VOICE"`` to speak that language with
        espeak-ng (and a chosen espeak voice).  A Piper voice that is missing,
        cannot be loaded, or whose piper-tts is not installed is logged as a
        warning and its language falls back to espeak-ng.  ``start`` loads the
        Piper voices now (so a broken one is found at start-up, not mid-call).
        """
        espeak: EspeakTts | None = None
        if fallback == "espeak-ng" or any(str(v).startswith("espeak-ng") for v in voices.values()):
            try:
                espeak = EspeakTts(rate_wpm=espeak_rate_wpm, timeout_s=timeout_s)
            except TtsError as e:
                log.warning("tts: %s", e)
        elif fallback not in (None, "none"):
            raise TtsError(f"unknown TTS fallback {fallback!r} (use 'espeak-ng' or 'none')")
        engines: dict[str, TtsEngine] = {}
        by_path: dict[Path, PiperTts] = {}
        for language, spec in voices.items():
            lang = normalize_language(language)
            s = str(spec)
            if s.startswith("espeak-ng"):
                if espeak is None:
                    log.warning("tts: %s is configured for %s but espeak-ng is not available", s, lang)
                    continue
                if ":" in s:
                    espeak.add_voice(lang, s.split(":", 1)[1])
                engines[lang] = espeak
                continue
            path = Path(spec).expanduser()
            try:
                engine = by_path.get(path.resolve())
                if engine is None:
                    engine = PiperTts(path, languages=(lang,), processes=piper_processes, timeout_s=timeout_s, use_cuda=use_cuda)
                    if start:
                        engine.start()
                    by_path[path.resolve()] = engine
                else:
                    engine.languages = (*engine.languages, lang)
                engines[lang] = engine
            except TtsError as e:
                where = "it will be spoken by espeak-ng" if espeak is not None and lang in espeak.languages else "it has no voice"
                log.warning("tts: the Piper voice for %s is not usable: %s; %s", lang, e, where)
        return cls(
            engines,
            espeak if fallback == "espeak-ng" else None,
            SynthesisConfig(length_scale=length_scale),
            max_sentence_chars,
        )

    @classmethod
    def from_settings(cls, settings) -> TtsRouter | None:
        """From the ``[tts]`` settings section; None (replies text only) if no engine at all is usable."""
        device = getattr(settings, "device", "auto")
        use_cuda = device == "cuda" or (device == "auto" and _cuda_available())
        router = cls.from_catalog(
            resolve_catalog_voices(getattr(settings, "voices", {}) or {}, settings),
            fallback=getattr(settings, "fallback", "espeak-ng"),
            length_scale=getattr(settings, "length_scale", None),
            espeak_rate_wpm=getattr(settings, "espeak_rate_wpm", 160),
            piper_processes=getattr(settings, "piper_processes", 1),
            timeout_s=getattr(settings, "timeout_s", 30.0),
            use_cuda=use_cuda,
            max_sentence_chars=getattr(settings, "max_sentence_chars", 400),
        )
        if not router.languages:
            log.warning("tts: no speech engine is available (%s): replies will be text only", ESPEAK_INSTALL_HINT)
            router.close()
            return None
        for lang in router.languages:
            log.info("tts: %s -> %s", lang, router.model_id_for(lang))
        return router

    # -- queries ---------------------------------------------------------
    @property
    def languages(self) -> tuple[str, ...]:
        langs = dict.fromkeys(self.voices)
        if self.fallback is not None:
            langs.update(dict.fromkeys(self.fallback.languages))
        return tuple(langs)

    def engines(self) -> list[TtsEngine]:
        """Distinct engines, configured voices first."""
        out: list[TtsEngine] = []
        for e in [*self.voices.values(), *([self.fallback] if self.fallback is not None else [])]:
            if all(e is not x for x in out):
                out.append(e)
        return out

    def engine_for(self, language: str) -> TtsEngine:
        lang = normalize_language(language)
        engine = self.voices.get(lang)
        if engine is not None:
            return engine
        if self.fallback is not None and lang in self.fallback.languages:
            return self.fallback
        raise TtsError(f"no voice for language {language!r} (spoken: {', '.join(self.languages) or 'none'})")

    def model_id_for(self, language: str) -> str | None:
        """The engine/voice that will speak ``language`` (provenance); None if none can."""
        try:
            return self.engine_for(language).model_id_for(normalize_language(language))
        except TtsError:
            return None

    def describe(self) -> list[dict]:
        """Capabilities as data: one entry per language."""
        out = []
        for lang in self.languages:
            e = self.engine_for(lang)
            out.append({"language": lang, "engine": e.name, "model_id": e.model_id_for(lang), "sample_rate": e.sample_rate})
        return out

    # -- speech ----------------------------------------------------------
    def synthesize(self, text: str, language: str, config: SynthesisConfig | None = None) -> Synthesis:
        """Blocking iterator of chunks, sentence by sentence; its ``model_id`` says who spoke."""
        return Synthesis(self, text, language, self.default_config.merged(config))

    def cache_texts(self, texts: Iterable[tuple[str, str]], max_bytes: int) -> int:
        """Keep the speech of these (language, text) pairs once synthesised (:mod:`models.tts.cache`):
        the operator's fixed texts. A new call replaces the set. Returns the sentences allowed."""
        pairs = list(texts)
        if self.cache is None or self.cache.max_bytes != max_bytes:
            self.cache = SpeechCache(max_bytes)
        self._cache_pairs = [(normalize_language(lang), text) for lang, text in pairs]
        return self.cache.allow([text for _, text in pairs], self.max_sentence_chars)

    def prefill(self, stop: threading.Event | None = None) -> tuple[int, float]:
        """Synthesise the cached texts' sentences not cached yet, one at a time (blocking: run it in a
        thread); stops early when ``stop`` is set. Returns (sentences synthesised, seconds)."""
        t, n = time.perf_counter(), 0
        for lang, text in getattr(self, "_cache_pairs", []):
            if stop is not None and stop.is_set():
                break
            if self.model_id_for(lang) is None:
                continue
            engine = self.engine_for(lang)
            voice = engine.model_id_for(lang)
            try:
                for sentence in split_sentences(text, self.max_sentence_chars, MIN_CHARS):  # as replies are spoken
                    if stop is not None and stop.is_set():
                        break
                    if not self.cache.has(voice, lang, self.default_config, sentence):
                        self.cache.put(voice, lang, self.default_config, sentence, list(engine.synthesize_sentence(sentence, lang, self.default_config)))
                        n += 1
            except TtsError as e:
                log.warning("tts: pre-synthesising a %s text failed: %s", lang, e)
        return n, time.perf_counter() - t

    def warmup(self, language: str | None = None) -> float:
        """Load every Piper voice and speak a word in ``language``; seconds taken."""
        t = time.perf_counter()
        for e in self.engines():
            try:
                e.warmup()
            except TtsError as err:
                log.warning("tts: warm-up of %s failed: %s", e.model_id, err)
        if language is not None and self.model_id_for(language) is not None:
            try:
                for _ in self.synthesize(WARMUP_TEXT.get(normalize_language(language), "Test."), language):
                    pass
            except TtsError as err:
                log.warning("tts: warm-up in %s failed: %s", language, err)
        return time.perf_counter() - t

    def close(self) -> None:
        for e in self.engines():
            e.close()


def _cuda_available() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except Exception:  # pragma: no cover
        return False
