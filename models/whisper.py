"""Whisper on CTranslate2, driven directly through faster-whisper's loaded model.

One :class:`WhisperEngine` per process, shared by every session.  Calls are
blocking and meant for worker threads (CTranslate2 releases the GIL).  Unlike
``WhisperModel.transcribe`` (a lazy generator over 30 s windows), a call here
decodes one VAD-cut utterance eagerly and returns a :class:`Recognition`
carrying the signals used to reject hallucinations.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from models.errors import ModelError

log = logging.getLogger("dauys.asr")

SAMPLE_RATE = 16000

# Whisper's language tokens. Kyrgyz (ky) is not among them: see asr.language_aliases.
WHISPER_LANGUAGES = {
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
}
LANGUAGE_ALIASES = {"ky": "kk"}
"""Languages Whisper has no token for, decoded with a close relative's token (the default of ``asr.language_aliases``)."""

HOP = 160
# Known Whisper hallucinations on non-speech (subtitle credits and the like).
HALLUCINATION_PHRASES = (
    "продолжение следует",
    "субтитры",
    "редактор субтитров",
    "спасибо за просмотр",
    "thank you for watching",
    "thanks for watching",
    "please subscribe",
    "www.",
    "http",
    "amara.org",
    "dimatorzok",
)


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    max_tokens_per_second: float = 15.0
    encoder_window_s: float | None = None
    """None: 30 s on CUDA; on the CPU the utterance plus 1 s, at least 10 s (several times faster)."""
    prompt: str = ""
    """Text given as Whisper's previous text (domain words and names), empty = none. Cut to the
    last MAX_PROMPT_TOKENS tokens. Off by default: on the understanding benchmark a domain prompt
    raised wrong answers (README, *Understanding*)."""


@dataclass
class Recognition:
    text: str
    language: str
    language_probability: float
    confidence: float
    """exp(mean token log-probability), 0..1."""
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    duration: float
    """Seconds of audio decoded."""
    decode_s: float
    """Wall time of the decode."""
    rejected: str | None = None
    """Why the text was judged not to be speech (no_speech, repetition, hallucination, empty)."""
    language_probs: dict[str, float] = field(default_factory=dict)
    """Whisper's own (unweighted) probabilities of the allowed languages, when detected."""
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    """With n-best decoding, the other hypotheses (text, average token log-probability), best
    first; those equal to ``text`` or judged repetitive are left out."""


def confidence(avg_logprob: float) -> float:
    """A recognition's confidence, 0..1: exp of its mean token log-probability (floored at -20)."""
    return float(math.exp(max(-20.0, min(0.0, avg_logprob))))


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


_LOOP = re.compile(r"(.{1,12}?)\1{4,}", re.DOTALL)


def collapse_loops(text: str) -> str:
    """Cut a decoding loop ("лəлəлəлəлə...") down to one occurrence of its unit."""
    return _LOOP.sub(r"\1", text)


MAX_PROMPT_TOKENS = 223
"""Whisper's previous-text budget: half its 448-token context, less the start-of-previous token."""


def _norm_words(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _echoes(text: str, prompt_norm: str) -> bool:
    """Is ``text`` (three words or more) a piece of the prompt?"""
    t = _norm_words(text)
    return len(t.split()) >= 3 and t in prompt_norm


def _is_hallucination_text(text: str) -> bool:
    low = text.lower()
    if not any(ch.isalnum() for ch in low):
        return True  # only punctuation or music notes
    return any(p in low for p in HALLUCINATION_PHRASES)


def choose_language(raw: dict[str, float], weights: dict[str, float], alias=lambda x: x) -> tuple[str, float, dict[str, float]]:
    """Weighted argmax over Whisper's language probabilities ``raw`` (code -> p).

    Returns (language, its share of the weighted mass, the raw probabilities).
    """
    scores = {lang: raw.get(lang, 0.0) * w for lang, w in weights.items()}
    best = max(scores, key=lambda k: (scores[k], k == alias(k)))
    total = sum({alias(k): v for k, v in scores.items()}.values()) or 1.0
    return best, scores[best] / total, {k: raw.get(k, 0.0) for k in weights}


def encoder_window_frames(duration_s: float, device: str, window_s: float | None = None) -> int:
    """The encoder window (mel frames) an utterance of ``duration_s`` is decoded with.

    ``window_s`` (``asr.encoder_window_s``) if set; else 30 s on CUDA, and on the
    CPU ``max(10 s, duration + 1 s)`` rounded up, at most 30 s.  Measured on
    whisper-base (scripts/bench_asr.py): a 10 s floor keeps short utterances
    from repeating themselves; beyond that, cost grows with length.  Fine-tuning
    (models/finetune/train.py) trains on the same windows.
    """
    win = window_s or (30.0 if device == "cuda" else min(30.0, max(10.0, math.ceil(duration_s + 1.0))))
    return int(win * SAMPLE_RATE) // HOP


def log_mel(extractor, audio: np.ndarray, frames: int) -> np.ndarray:
    """Log-mel features of ``audio`` zero-padded (or cut) to ``frames`` frames: [n_mels, frames],
    by faster-whisper's ``extractor`` -- what the encoder sees, in serving and in fine-tuning."""
    audio = audio[: frames * HOP]
    padded = np.zeros(frames * HOP, np.float32)
    padded[: len(audio)] = audio
    return extractor(padded, padding=0)[:, :frames]


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    import ctranslate2

    if device == "auto":
        try:
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # a CUDA-less build
            device = "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class WhisperEngine:
    def __init__(
        self,
        model_path: str,
        *,
        model_id: str = "",
        device: str = "auto",
        compute_type: str = "auto",
        device_index: int = 0,
        cpu_threads: int = 0,
        num_workers: int = 1,
        options: DecodeOptions | None = None,
        language_aliases: dict[str, str] | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        self.device, self.compute_type = pick_device(device, compute_type)
        self.model_id = model_id or str(model_path)
        self.options = options or DecodeOptions()
        self.language_aliases = dict(language_aliases or {})
        try:
            self._wm = WhisperModel(
                str(model_path),
                device=self.device,
                device_index=device_index,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads,
                num_workers=num_workers,
            )
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"cannot load the ASR model at {model_path} on {self.device}/{self.compute_type} ({first}): "
                "check that it is a complete CTranslate2 Whisper export, or set asr.model to embedded:whisper-base"
            ) from None
        self.model = self._wm.model
        self.tokenizer = self._wm.hf_tokenizer
        self.features = self._wm.feature_extractor
        self.n_mels = self.features.mel_filters.shape[0]
        self._sot = self.tokenizer.token_to_id("<|startoftranscript|>")
        self._transcribe = self.tokenizer.token_to_id("<|transcribe|>")
        self._no_timestamps = self.tokenizer.token_to_id("<|notimestamps|>")
        self._eot = self.tokenizer.token_to_id("<|endoftext|>")
        self.is_multilingual = self.model.is_multilingual
        self._previous: list[int] = []
        if self.options.prompt.strip():
            ids = self.tokenizer.encode(" " + self.options.prompt.strip()).ids
            if len(ids) > MAX_PROMPT_TOKENS:
                log.warning("asr.prompt: %d tokens, more than the model takes (%d); the last %d are used", len(ids), MAX_PROMPT_TOKENS, MAX_PROMPT_TOKENS)
                ids = ids[-MAX_PROMPT_TOKENS:]
            self._previous = [self.tokenizer.token_to_id("<|startofprev|>"), *ids]
            self._prompt_norm = _norm_words(self.tokenizer.decode(ids))
        log.info("ASR model %s loaded on %s (%s)", self.model_id, self.device, self.compute_type)

    # ------------------------------------------------------------------
    def whisper_language(self, lang: str) -> str:
        """The language token used to decode ``lang`` (aliases such as ky -> kk)."""
        return self.language_aliases.get(lang, lang)

    def _window_frames(self, n_samples: int) -> int:
        return encoder_window_frames(n_samples / SAMPLE_RATE, self.device, self.options.encoder_window_s)

    def batch_key(self, audio: np.ndarray) -> int:
        """The encoder window (in mel frames) ``audio`` is decoded with.

        Only utterances with the same key are batched together: padding an
        utterance to a longer window than its own changes Whisper's output
        (see :meth:`recognize_batch`).  On CUDA every key is the 30 s window.
        """
        return self._window_frames(len(audio))

    def _features(self, audio: np.ndarray, frames: int) -> np.ndarray:
        return log_mel(self.features, audio, frames)

    def _encode_features(self, feats: list[np.ndarray]):
        import ctranslate2

        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(feats), dtype=np.float32))
        return self.model.encode(x, to_cpu=self.device == "cpu" and self.model.device == "cpu")

    def _encoder_row(self, enc, j: int, audio: np.ndarray, frames: int):
        """Row ``j`` of a batch's encoder output (sliced on the CPU, encoded again elsewhere)."""
        import ctranslate2

        if getattr(enc, "device", "cpu") == "cpu":
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(enc)[j : j + 1]))
        return self._encode_features([self._features(audio, frames)])

    def _encode(self, audio: np.ndarray):
        return self._encode_features([self._features(audio, self._window_frames(len(audio)))])

    def detect_language(self, encoder_output, allowed) -> tuple[str, float, dict[str, float]]:
        """The most probable language among ``allowed``.

        ``allowed`` is a list of codes or a dict of code -> prior weight (the
        expected mix of callers' languages, times any session stickiness);
        Whisper's probabilities are multiplied by it.  An alias (ky -> kk)
        shares its target's probability; the real language wins a tie.
        Returns (language, posterior among allowed, raw probabilities of ``allowed``).
        """
        return self._choose(self.model.detect_language(encoder_output)[0], allowed)

    def _choose(self, detected, allowed) -> tuple[str, float, dict[str, float]]:
        weights = allowed if isinstance(allowed, dict) else {lang: 1.0 for lang in allowed}
        probs = {tok[2:-2]: p for tok, p in detected}
        raw = {lang: probs.get(self.whisper_language(lang), 0.0) for lang in weights}
        return choose_language(raw, weights, self.whisper_language)

    def _start(self, language: str) -> list[int]:
        if not self.is_multilingual:
            return [self._sot, self._no_timestamps]
        return [self._sot, self.tokenizer.token_to_id(f"<|{self.whisper_language(language)}|>"), self._transcribe, self._no_timestamps]

    def _prompt(self, language: str) -> list[int]:
        """The decoder's prompt: ``asr.prompt`` as the previous text, if any, then the start tokens."""
        return self._previous + self._start(language)

    def _max_new(self, duration: float) -> int:
        return int(20 + self.options.max_tokens_per_second * duration)

    def recognize(self, audio: np.ndarray, language: str | None, allowed, hypotheses: int = 1) -> Recognition:
        """Decode one utterance (16 kHz float32). ``language=None`` detects among ``allowed``
        (a list, or a dict of prior weights: see :meth:`detect_language`). ``hypotheses`` > 1:
        beam search at least that wide, the runners-up in ``Recognition.alternatives``."""
        return self.recognize_batch([(audio, language, allowed, hypotheses)])[0]

    def recognize_batch(self, items) -> list[Recognition]:
        """Decode several utterances, e.g. from different calls, in as few CTranslate2 calls as possible.

        ``items`` is a sequence of ``(audio, language | None, allowed)`` as for
        :meth:`recognize`; the results come back in the same order and equal
        what :meth:`recognize` gives each item alone (tested on the shared
        clips).  Items are grouped by encoder window (:meth:`batch_key`); each
        group is one ``encode``, one batched ``detect_language`` (when any item
        needs detection) and one ``generate`` with a prompt per item (their
        language tokens differ).  Padding a short utterance to a longer window
        than its own changes Whisper's output, so groups never mix windows; the
        scheduler only batches items with the same key, so there it is one call.

        The decode budget (``asr.max_tokens_per_second``) differs per item;
        the group is decoded with the largest, and an item that reached its
        own, smaller length cap (usually a looping decode) is decoded again
        alone from its row of the encoder output with its own budget, so
        that its scores too are exactly what :meth:`recognize` gives.
        ``decode_s`` of each result is the wall time of its group's decode.
        """
        items = [tuple(it[:3]) + (max(1, int(it[3])) if len(it) > 3 else 1,) for it in items]  # (audio, language, allowed, hypotheses)
        out: list[Recognition | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (audio, _, _, n) in enumerate(items):
            groups.setdefault((self.batch_key(audio), n), []).append(i)
        for (frames, n), idx in groups.items():
            for i, rec in zip(idx, self._decode_group([items[i][:3] for i in idx], frames, n)):
                out[i] = rec
        return out  # type: ignore[return-value]

    def _decode_group(self, items: list, frames: int, hypotheses: int = 1) -> list[Recognition]:
        t0 = time.perf_counter()
        enc = self._encode_features([self._features(audio, frames) for audio, _, _ in items])
        langs: list[str] = []
        lang_info: list[tuple[float, dict[str, float]]] = []
        detected = None
        if any(language is None for _, language, _ in items):
            detected = self.model.detect_language(enc)
        for j, (_, language, allowed) in enumerate(items):
            if language is None:
                language, p, probs = self._choose(detected[j], allowed)
                lang_info.append((p, probs))
            else:
                lang_info.append((1.0, {}))
            langs.append(language)
        prompts = [self._prompt(lang) for lang in langs]
        budgets = [self._max_new(len(audio) / SAMPLE_RATE) for audio, _, _ in items]
        results = self._generate(enc, prompts, max(budgets), hypotheses)
        group_cap = self._length_cap(len(prompts[0]), max(budgets))
        recs = []
        for j, (audio, _, _) in enumerate(items):
            res = results[j]
            cap = self._length_cap(len(prompts[j]), budgets[j])
            if cap < group_cap and len(res.sequences_ids[0]) >= cap:
                # alone it would have been cut at its own budget: decode it again alone, for exact scores
                res = self._generate(self._encoder_row(enc, j, audio, frames), [prompts[j]], budgets[j], hypotheses)[0]
            recs.append(self._finish(res, audio, langs[j], *lang_info[j], budgets[j]))
        decode_s = time.perf_counter() - t0
        for rec in recs:
            rec.decode_s = decode_s
        return recs

    @staticmethod
    def _max_length(prompt_len: int, max_new: int) -> int:
        """The ``max_length`` that lets CTranslate2 generate ``max_new`` tokens after the prompt.

        Its Whisper ``generate`` decodes at most min(max_length / 2, max_length - (prompt
        length - 1)) steps (like OpenAI's ``sample_len = n_text_ctx // 2``), so passing
        prompt length + ``max_new`` gave about half the budget ``asr.max_tokens_per_second``
        names (measured: max_length 60 → 30 tokens). Whisper's 448-position context bounds it.
        """
        return min(448, max(2 * max_new, prompt_len - 1 + max_new))

    @classmethod
    def _length_cap(cls, prompt_len: int, max_new: int) -> int:
        """Most tokens CTranslate2 generates for this prompt and budget: ``max_new``,
        or fewer where Whisper's context runs out (at most 224)."""
        ml = cls._max_length(prompt_len, max_new)
        return min(ml // 2, ml - (prompt_len - 1))

    def _generate(self, enc, prompts: list[list[int]], max_new: int, hypotheses: int = 1):
        return self.model.generate(
            enc,
            prompts,
            beam_size=max(self.options.beam_size, hypotheses),
            num_hypotheses=hypotheses,
            max_length=self._max_length(len(prompts[0]), max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )

    def _finish(self, res, audio: np.ndarray, language: str, lang_prob: float, lang_probs: dict[str, float], max_new: int) -> Recognition:
        ids = [t for t in res.sequences_ids[0] if t < self._eot]
        raw = self.tokenizer.decode(ids).strip()
        text = collapse_loops(raw)
        # CTranslate2's score is the sum of log-probs divided by length (length_penalty=1).
        avg_logprob = float(res.scores[0]) if res.scores else -10.0
        ratio = compression_ratio(raw) if raw else 0.0
        rec = Recognition(
            text=text,
            language=language,
            language_probability=float(lang_prob),
            confidence=confidence(avg_logprob),
            avg_logprob=avg_logprob,
            no_speech_prob=float(res.no_speech_prob),
            compression_ratio=ratio,
            duration=len(audio) / SAMPLE_RATE,
            decode_s=0.0,
            language_probs=lang_probs,
        )
        rec.rejected = self._reject_reason(rec, len(ids), max_new)
        for seq, score in zip(res.sequences_ids[1:], (res.scores or [])[1:]):
            alt_ids = [t for t in seq if t < self._eot]
            alt = collapse_loops(self.tokenizer.decode(alt_ids).strip())
            if alt and alt != text and len(alt_ids) < max_new and compression_ratio(alt) <= self.options.compression_ratio_threshold:
                if all(alt != a for a, _ in rec.alternatives):
                    rec.alternatives.append((alt, float(score)))
        return rec

    def _reject_reason(self, rec: Recognition, n_ids: int, max_new: int) -> str | None:
        o = self.options
        if not rec.text:
            return "empty"
        if rec.no_speech_prob > o.no_speech_threshold and rec.avg_logprob < o.log_prob_threshold:
            return "no_speech"
        if rec.compression_ratio > o.compression_ratio_threshold or n_ids >= max_new:
            return "repetition"
        if _is_hallucination_text(rec.text):
            return "hallucination"
        if self._previous and _echoes(rec.text, self._prompt_norm):
            return "hallucination"  # Whisper repeating its prompt (silence, noise, music)
        return None

    def score_phrases(self, audio: np.ndarray, language: str, phrases: list[str]) -> list[float]:
        """How well each of a few short ``phrases`` explains ``audio``: the sum of its tokens'
        log-probabilities, teacher-forced (CTranslate2 ``align``), in ``language``.

        For closed sets where free decoding fails: a caller's "иә" or "жоқ" that whisper-base
        writes as "Илай" or "Білік" is still far likelier as "Иә." than as "Жоқ.". Cost grows
        with the number of phrases (one encoder pass, one batched decoder pass)."""
        import ctranslate2

        if not phrases:
            return []
        frames = self._window_frames(len(audio))
        feats = self._features(audio, frames)
        ids = [self.tokenizer.encode(" " + p.strip()).ids for p in phrases]
        enc = self._encode_features([feats])
        if getattr(enc, "device", "cpu") == "cpu":  # one encoder pass, its output repeated per phrase
            batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(np.asarray(enc), len(ids), axis=0)))
        else:  # on the GPU, where encoding is cheap and the output cannot be read as an array
            batch = self._encode_features([feats] * len(ids))
        out = self.model.align(batch, self._start(language), ids, [frames // 2] * len(ids))
        return [float(np.sum(np.log(np.clip(np.asarray(r.text_token_probs, dtype=np.float64), 1e-9, 1.0)))) for r in out]

    def warmup(self, allowed: list[str]) -> float:
        """One decode of synthetic audio so the first caller does not pay for lazy init."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        audio = (0.05 * rng.standard_normal(SAMPLE_RATE * 2)).astype(np.float32)
        self.recognize(audio, None, allowed)
        return time.perf_counter() - t0


def load_whisper(settings, engine_class: type | None = None) -> WhisperEngine:
    """Build the engine from ``AsrSettings`` (resolving and verifying the weights);
    ``engine_class``: a :class:`WhisperEngine` subclass to build instead (benchmarks)."""
    from models.registry import resolve_asr_model
    from models.store import model_store

    resolved = resolve_asr_model(settings.model, settings.cache_dir, settings.download, store=model_store(settings))
    opts = DecodeOptions(
        beam_size=settings.beam_size,
        no_speech_threshold=settings.no_speech_threshold,
        log_prob_threshold=settings.log_prob_threshold,
        compression_ratio_threshold=settings.compression_ratio_threshold,
        max_tokens_per_second=settings.max_tokens_per_second,
        encoder_window_s=settings.encoder_window_s,
        prompt=settings.prompt,
    )
    if not str(resolved.path):
        raise ModelError("empty model path")
    return (engine_class or WhisperEngine)(
        str(resolved.path),
        model_id=resolved.model_id,
        device=settings.device,
        compute_type=settings.compute_type,
        device_index=settings.device_index,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.num_workers,
        options=opts,
        language_aliases=settings.language_aliases,
    )
