"""Word and character error rates of the recogniser the server runs, per language, on an operator's rows.

Every row is decoded with the same engine and settings as the server
(:func:`models.whisper.load_whisper` from the server's configuration, the
same ``WhisperEngine.recognize`` call, the same encoder window, decoding
options and rejection rules).  Two language modes:

* ``manifest``: the row's language is forced, as a session started with
  ``"language": "kk"`` does;
* ``auto``: the language is detected among ``asr.languages`` weighted by
  ``asr.language_prior`` (:meth:`AsrSettings.language_weights`), as an
  ``auto`` session's first utterance is; language-ID accuracy is reported.

A decode the server would discard (``rejected``: no speech, repetition,
hallucination, empty) scores as an empty hypothesis, because the caller gets
no transcript.  Reference and hypothesis are compared after
:func:`models.finetune.textnorm.normalize`; WER and CER are corpus-level
(total edits over total reference words/characters, spaces count as
characters for CER), per language and overall.  RTF is decode time over
audio time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from models.finetune.textnorm import normalize

LanguageMode = Literal["manifest", "auto"]


@dataclass
class UtteranceResult:
    id: str
    language: str
    """The reference language (the row's)."""
    reference: str
    hypothesis: str
    """What the caller would get: the text, or "" when the server would discard the decode."""
    ref_norm: str
    hyp_norm: str
    detected_language: str
    """The language the decode ran in (forced, or detected in auto mode)."""
    audio_s: float
    decode_s: float
    words: int
    word_errors: int
    chars: int
    char_errors: int
    rejected: str | None = None
    raw_text: str = ""
    """The decoded text before the rejection rules."""

    @property
    def wer(self) -> float:
        return self.word_errors / self.words if self.words else 0.0

    @property
    def cer(self) -> float:
        return self.char_errors / self.chars if self.chars else 0.0

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "language": self.language,
            "detected_language": self.detected_language,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "ref_norm": self.ref_norm,
            "hyp_norm": self.hyp_norm,
            "wer": round(self.wer, 4),
            "cer": round(self.cer, 4),
            "words": self.words,
            "word_errors": self.word_errors,
            "chars": self.chars,
            "char_errors": self.char_errors,
            "audio_s": round(self.audio_s, 3),
            "decode_s": round(self.decode_s, 4),
            "rejected": self.rejected,
            "raw_text": self.raw_text,
        }


def score(reference: str, hypothesis: str, language: str) -> tuple[str, str, int, int, int, int]:
    """(ref_norm, hyp_norm, reference words, word edits, reference chars, char edits) with jiwer."""
    import jiwer

    ref = normalize(reference, language)
    hyp = normalize(hypothesis, language)
    if not ref:
        raise ValueError(f"reference {reference!r} is empty after normalisation")
    w = jiwer.process_words(ref, hyp)
    c = jiwer.process_characters(ref, hyp)
    words = w.hits + w.substitutions + w.deletions
    chars = c.hits + c.substitutions + c.deletions
    return ref, hyp, words, w.substitutions + w.deletions + w.insertions, chars, c.substitutions + c.deletions + c.insertions


def _stats(results: Sequence[UtteranceResult], auto: bool) -> dict:
    words = sum(r.words for r in results)
    chars = sum(r.chars for r in results)
    audio = sum(r.audio_s for r in results)
    decode = sum(r.decode_s for r in results)
    d = {
        "n": len(results),
        "wer": sum(r.word_errors for r in results) / words if words else 0.0,
        "cer": sum(r.char_errors for r in results) / chars if chars else 0.0,
        "words": words,
        "chars": chars,
        "audio_s": audio,
        "decode_s": decode,
        "rtf": decode / audio if audio else 0.0,
        "rejected": sum(1 for r in results if r.rejected),
    }
    if auto:
        d["lid_accuracy"] = sum(1 for r in results if r.detected_language == r.language) / len(results) if results else 0.0
    return d


def _rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass
class EvalReport:
    results: list[UtteranceResult]
    language_mode: str = "manifest"
    model: str = ""
    device: str = ""
    compute_type: str = ""
    degrade_phone: bool = False
    wall_s: float = 0.0
    skipped_optout: Any = None
    """:class:`models.finetune.data.OptOuts` of the loaded source, when known."""
    bad: list = field(default_factory=list)
    """:class:`models.finetune.data.BadRow` of the loaded source, when known."""
    source: str = ""

    @property
    def overall(self) -> dict:
        """{n, wer, cer, words, chars, audio_s, decode_s, rtf, rejected[, lid_accuracy]} over every row."""
        return _stats(self.results, self.language_mode == "auto")

    @property
    def by_language(self) -> dict[str, dict]:
        """The same figures per reference language, languages sorted."""
        langs = sorted({r.language for r in self.results})
        return {lang: _stats([r for r in self.results if r.language == lang], self.language_mode == "auto") for lang in langs}

    def worst(self, n: int = 10) -> list[UtteranceResult]:
        """The ``n`` rows with the highest CER (longer references first among equals)."""
        return sorted(self.results, key=lambda r: (-r.cer, -r.chars, r.id))[: max(0, n)]

    def to_dict(self, worst: int = 10) -> dict:
        return {
            "source": self.source,
            "model": self.model,
            "device": self.device,
            "compute_type": self.compute_type,
            "language_mode": self.language_mode,
            "degrade_phone": self.degrade_phone,
            "wall_s": round(self.wall_s, 3),
            "overall": _rounded(self.overall),
            "by_language": {k: _rounded(v) for k, v in self.by_language.items()},
            "worst": [r.to_dict() for r in self.worst(worst)],
            "utterances": [r.to_dict() for r in self.results],
            "skipped_optout": self.skipped_optout.to_dict() if self.skipped_optout is not None else {"count": 0, "ids": [], "via": {}},
            "bad": [{"id": b.id, "reason": b.reason, "detail": b.detail, "source": b.source} for b in self.bad],
        }

    def table(self, worst: int = 0) -> str:
        """A plain-text per-language table, overall last; then the ``worst`` rows with reference and hypothesis."""
        auto = self.language_mode == "auto"
        head = f"{'language':<10}{'n':>5}{'audio_s':>10}{'WER':>9}{'CER':>9}{'RTF':>8}{'rejected':>10}" + (f"{'LID':>8}" if auto else "")
        lines = [
            f"model {self.model or '?'} ({self.device}/{self.compute_type}), language mode {self.language_mode}"
            + (", phone-degraded" if self.degrade_phone else ""),
            head,
            "-" * len(head),
        ]

        def line(name: str, s: dict) -> str:
            out = f"{name:<10}{s['n']:>5}{s['audio_s']:>10.1f}{100 * s['wer']:>8.1f}%{100 * s['cer']:>8.1f}%{s['rtf']:>8.3f}{s['rejected']:>10}"
            return out + (f"{100 * s['lid_accuracy']:>7.0f}%" if auto else "")

        for lang, s in self.by_language.items():
            lines.append(line(lang, s))
        lines.append("-" * len(head))
        lines.append(line("overall", self.overall))
        skipped = self.skipped_optout.count if self.skipped_optout is not None else 0
        if skipped or self.bad:
            lines.append(f"not scored: {skipped} opted out, {len(self.bad)} bad")
        rows = self.worst(worst)
        if rows:
            lines.append("")
            lines.append(f"worst {len(rows)} by CER:")
            for r in rows:
                extra = f" rejected={r.rejected}" if r.rejected else ""
                extra += f" detected={r.detected_language}" if auto and r.detected_language != r.language else ""
                lines.append(f"  {r.id} [{r.language}] CER {100 * r.cer:.1f}% WER {100 * r.wer:.1f}%{extra}")
                lines.append(f"    ref: {r.ref_norm}")
                lines.append(f"    hyp: {r.hyp_norm}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Engines


def _asr_settings(settings):
    if settings is None:
        from server.config import load_settings

        settings = load_settings()
    return getattr(settings, "asr", settings)


def server_settings(model: str | None = None, *, config_file=None, environ: dict[str, str] | None = None, **asr: Any):
    """The server's :class:`Settings` (defaults < ``config_file`` < ``DAUYS_*`` environment < these arguments).

    ``model`` overrides ``asr.model`` (a CTranslate2 directory, ``embedded:whisper-base``,
    a size name or a hub id); ``asr`` keyword arguments override other ``asr.*`` keys.
    """
    from server.config import load_settings

    layer = {k: v for k, v in asr.items() if v is not None}
    if model is not None:
        layer["model"] = str(model)
    return load_settings(config_file, cli={"asr": layer} if layer else None, environ=environ)


def load_engine(model: str | None = None, *, settings=None, config_file=None, environ: dict[str, str] | None = None):
    """A :class:`models.whisper.WhisperEngine` built exactly as the server builds it.

    ``settings`` (a :class:`Settings`; default: read like the server does,
    from ``config_file`` and the environment) gives device, compute type,
    threads, decoding options and language aliases; ``model`` (e.g. the
    CTranslate2 export of a fine-tune) replaces ``asr.model``.
    """
    from models.whisper import load_whisper

    if settings is None:
        settings = server_settings(model, config_file=config_file, environ=environ)
    elif model is not None:
        settings = settings.model_copy(update={"asr": settings.asr.model_copy(update={"model": str(model)})})
    return load_whisper(settings.asr)


# ---------------------------------------------------------------------------
# Evaluation


def evaluate_rows(
    engine,
    rows: Iterable,
    language_mode: LanguageMode = "manifest",
    progress: bool = True,
    *,
    settings=None,
    degrade_phone: bool = False,
    seed: int = 0,
    loaded=None,
) -> EvalReport:
    """Decode and score every row (:class:`models.finetune.data.Row`, or dicts with audio/text/language/id).

    ``settings``: the server's :class:`Settings` or :class:`AsrSettings`
    (language weights for ``auto`` mode; default: the server's configuration
    from the environment).  ``degrade_phone``: run each row through
    :func:`models.finetune.degrade.phone_degrade` first (seeded per row by
    ``seed`` and its position).  ``loaded``: the
    :class:`models.finetune.data.LoadResult` the rows came from, whose
    opt-outs and bad rows are carried into the report.
    """
    if language_mode not in ("manifest", "auto"):
        raise ValueError(f"language_mode {language_mode!r}: use 'manifest' or 'auto'")
    rows = list(rows)
    asr = _asr_settings(settings)
    weights = asr.language_weights()
    from tqdm.auto import tqdm

    results: list[UtteranceResult] = []
    t0 = time.perf_counter()
    errs = chars = 0
    bar = tqdm(rows, total=len(rows), unit="utt", desc="evaluate", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for i, row in enumerate(bar):
        rid, text, lang = _get(row, "id", str(i)), _get(row, "text"), _get(row, "language")
        audio = _audio(row)
        if degrade_phone:
            from models.finetune.degrade import phone_degrade

            audio = phone_degrade(audio, np.random.default_rng([seed, i]))
        rec = engine.recognize(audio, lang if language_mode == "manifest" else None, weights)
        hyp = "" if rec.rejected else rec.text
        ref_n, hyp_n, nw, we, nc, ce = score(text, hyp, lang)
        results.append(
            UtteranceResult(
                id=str(rid), language=lang, reference=text, hypothesis=hyp, ref_norm=ref_n, hyp_norm=hyp_n,
                detected_language=rec.language, audio_s=len(audio) / 16000, decode_s=rec.decode_s,
                words=nw, word_errors=we, chars=nc, char_errors=ce, rejected=rec.rejected, raw_text=rec.text,
            )
        )
        errs, chars = errs + ce, chars + nc
        if progress:
            bar.set_postfix(cer=f"{100 * errs / max(1, chars):.1f}%")
    bar.close()
    return EvalReport(
        results,
        language_mode=language_mode,
        model=getattr(engine, "model_id", ""),
        device=getattr(engine, "device", ""),
        compute_type=getattr(engine, "compute_type", ""),
        degrade_phone=degrade_phone,
        wall_s=time.perf_counter() - t0,
        skipped_optout=getattr(loaded, "skipped_optout", None),
        bad=list(getattr(loaded, "bad", []) or []),
        source=getattr(loaded, "source", ""),
    )


def _get(row, name: str, default=None):
    if isinstance(row, dict):
        return row.get(name, default)
    return getattr(row, name, default)


def _audio(row) -> np.ndarray:
    if hasattr(row, "load_audio"):
        return np.asarray(row.load_audio(), np.float32)
    audio = _get(row, "audio")
    if isinstance(audio, np.ndarray):
        return audio.astype(np.float32, copy=False)
    from pipeline.audio import read_audio

    return read_audio(audio).samples
