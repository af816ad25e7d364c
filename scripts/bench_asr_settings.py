#!/usr/bin/env python3
"""Quality vs latency of recogniser settings on real human speech: a grid of decoding and VAD settings.

    .venv/bin/python scripts/bench_asr_settings.py                                   # shared clips, full grid, clean
    .venv/bin/python scripts/bench_asr_settings.py --conditions phone --beams 1,5    # 8 kHz mu-law phone line
    .venv/bin/python scripts/bench_asr_settings.py --manifest ../shared/audio/manifest.jsonl \\
        --manifest extra_ru/manifest.jsonl --json grid.json                           # more clips (docs/asr_quality.md)

For every setting of the grid (``--beams`` x ``--fallback`` x ``--vad``, per
``--conditions``, plus ``--auto-beams`` in language ``auto``) every clip of
the manifests is recognised with the server's own engine
(:class:`models.whisper.WhisperEngine` built as ``load_whisper`` builds it:
``asr.model`` resolved by :mod:`models.registry`, so ``embedded:whisper-base``
is the real embedded weights; default here CPU int8) and scored like
``scripts/evaluate_asr.py`` (:func:`models.finetune.evaluate.score`: jiwer
after :func:`models.finetune.textnorm.normalize`; corpus CER/WER per
language; a decode the server rejects scores as an empty hypothesis).

Settings
--------
* ``beam``: ``asr.beam_size`` (CTranslate2 beam search; 1 = greedy).
* ``fallback``: ``off`` is the server's single decode.  ``on`` is
  faster-whisper's temperature fallback, done here (the server has none):
  after the decode at temperature 0 (beam search), if the text's gzip
  compression ratio is above ``asr.compression_ratio_threshold`` (2.4) or
  the average log-probability is below ``asr.log_prob_threshold`` (-1.0),
  and it is not silence (no-speech probability above
  ``asr.no_speech_threshold`` with that low log-probability), decode again
  by sampling at temperature 0.2, 0.4, ... 1.0 (5 samples each, best kept),
  from the same encoder output; if none passes, the attempt with the best
  average log-probability among those under the compression threshold
  wins.  The log-probability is faster-whisper's (``score * n / (n + 1)``);
  the chosen decode then goes through the server's own rejection rules.
* ``vad``: ``none`` decodes the clip whole (as ``evaluate_asr.py`` does);
  ``T/S`` streams it, with 0.5 s of silence before and 1 s after, in 20 ms
  frames through the project's :class:`pipeline.segmenter.Segmenter`
  (Silero VAD v6) with ``vad.threshold`` T and ``vad.min_silence_ms`` S
  (other ``vad.*`` as configured) and decodes each utterance it cuts (the
  final decode); the clip's hypothesis is the accepted utterances' texts
  joined.  The VAD's own endpointing wait (``min_silence_ms``) is latency
  on top of the decode time reported here.
* ``lang``: ``manifest`` forces each row's language (a session started with
  it); ``auto`` detects among ``asr.languages`` with ``asr.language_prior``.
* condition ``phone``: each clip (with its silence, for the VAD settings
  too: the same samples for every setting) through
  :func:`models.finetune.degrade.phone_degrade` (8 kHz, 300-3400 Hz, random
  gain, line noise at 15-30 dB SNR with probability 0.8, G.711 mu-law),
  seeded by ``--seed`` and the clip's position.

Figures per setting: CER and WER per language and overall; rejected (decodes
the server would discard) and empty (clips whose hypothesis is empty);
fallback (decodes that needed at least one re-decode); decode time per clip
(encode + language ID + generate(s), summed over the clip's utterances)
median and nearest-rank p95 over clips; RTF (total decode time / total clip
audio); and "other load": CPU cores busy with other processes while the
setting ran (machine busy time from /proc/stat minus this process), so a
noisy measurement shows.  ``--repeats N`` runs the whole grid N times, one
setting after another in each pass (so drifting load hits every setting
alike), and keeps each clip's median decode time (and the largest other
load); quality is scored on the first pass.  Progress goes to stderr; the markdown table to
stdout; ``--json OUT`` writes every figure and every clip's hypothesis.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, beside this script (when loaded from elsewhere)
from benchlib import DEFAULT_AUDIO, CpuMeter, p95  # noqa: E402  (benchlib also puts the project root on sys.path)

from models.whisper import SAMPLE_RATE, WhisperEngine  # noqa: E402

DEFAULT_MANIFEST = DEFAULT_AUDIO / "manifest.jsonl"
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
BEST_OF = 5
LEAD_S = 0.5
TAIL_S = 1.0
FRAME = 320  # 20 ms at 16 kHz, as a microphone or phone line sends it


# ---------------------------------------------------------------------------
# The engine, with faster-whisper's temperature fallback


def _fw_avg_logprob(score: float, n_tokens: int) -> float:
    """faster-whisper's average log-probability from CTranslate2's length-normalised score (length_penalty 1)."""
    return score * n_tokens / (n_tokens + 1)


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data))) if data else 0.0


class FallbackEngine(WhisperEngine):
    """The server's engine; :meth:`recognize_fallback` adds faster-whisper's temperature fallback.

    Only this script uses it.  One decode of :meth:`recognize_fallback`
    reuses one encoder output for every attempt, as faster-whisper does.
    """

    _sampling: tuple[float, int] | None = None

    def _generate(self, enc, prompts, max_new, hypotheses=1):
        if self._sampling is None:
            return super()._generate(enc, prompts, max_new, hypotheses)
        temperature, best_of = self._sampling
        return self.model.generate(
            enc,
            prompts,
            beam_size=1,
            num_hypotheses=best_of,
            sampling_topk=0,
            sampling_temperature=temperature,
            max_length=self._max_length(len(prompts[0]), max_new),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )

    def recognize_fallback(self, audio: np.ndarray, language: str | None, allowed):
        """(Recognition, attempts): decode at temperature 0 with the configured beam, then fall back."""
        t0 = time.perf_counter()
        enc = self._encode(audio)
        if language is None:
            language, lang_p, lang_probs = self.detect_language(enc, allowed)
        else:
            lang_p, lang_probs = 1.0, {}
        prompt = self._prompt(language)
        max_new = self._max_new(len(audio) / SAMPLE_RATE)
        o = self.options
        attempts = []  # (result, fw avg logprob, compression ratio)
        chosen = None
        for temperature in (0.0, *FALLBACK_TEMPERATURES):
            self._sampling = None if temperature == 0.0 else (temperature, BEST_OF)
            try:
                res = self._generate(enc, [prompt], max_new)[0]
            finally:
                self._sampling = None
            ids = list(res.sequences_ids[0])
            text = self.tokenizer.decode([t for t in ids if t < self._eot]).strip()
            avg = _fw_avg_logprob(float(res.scores[0]) if res.scores else -10.0, len(ids))
            ratio = _compression_ratio(text)
            attempts.append((res, avg, ratio))
            needs = ratio > o.compression_ratio_threshold or avg < o.log_prob_threshold
            if res.no_speech_prob > o.no_speech_threshold and avg < o.log_prob_threshold:
                needs = False  # silence: nothing to retry
            if not needs:
                chosen = res
                break
        if chosen is None:
            under = [a for a in attempts if a[2] <= o.compression_ratio_threshold] or attempts
            chosen = max(under, key=lambda a: a[1])[0]
        rec = self._finish(chosen, audio, language, lang_p, lang_probs, max_new)
        rec.decode_s = time.perf_counter() - t0
        return rec, len(attempts)


def load_engine(settings, device: str | None, compute_type: str | None) -> FallbackEngine:
    """The engine ``models.whisper.load_whisper`` builds from ``settings.asr``, as a :class:`FallbackEngine`."""
    from models.whisper import load_whisper

    update = {k: v for k, v in (("device", device), ("compute_type", compute_type)) if v}
    return load_whisper(settings.asr.model_copy(update=update), engine_class=FallbackEngine)


# ---------------------------------------------------------------------------
# The grid


@dataclass(frozen=True)
class Setting:
    condition: str  # clean | phone
    beam: int
    fallback: bool
    vad: tuple[float, int] | None  # (threshold, min_silence_ms) or None: the clip decoded whole
    lang: str = "manifest"  # manifest | auto

    @property
    def vad_label(self) -> str:
        return "none" if self.vad is None else f"{self.vad[0]:g}/{self.vad[1]}"

    @property
    def label(self) -> str:
        return f"{self.condition} beam={self.beam} fallback={'on' if self.fallback else 'off'} vad={self.vad_label} lang={self.lang}"

    def to_dict(self) -> dict:
        return {"condition": self.condition, "beam": self.beam, "fallback": self.fallback,
                "vad": None if self.vad is None else {"threshold": self.vad[0], "min_silence_ms": self.vad[1]}, "lang": self.lang}


def parse_vad(spec: str) -> tuple[float, int] | None:
    if spec.strip().lower() in ("none", "off", "whole"):
        return None
    try:
        t, s = spec.split("/")
        return float(t), int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--vad item {spec!r}: use none or THRESHOLD/MIN_SILENCE_MS, e.g. 0.5/400") from None


def build_grid(conditions, beams, fallbacks, vads, auto_beams) -> list[Setting]:
    grid = []
    for cond in conditions:
        for vad in vads:
            for fb in fallbacks:
                for beam in beams:
                    grid.append(Setting(cond, beam, fb, vad))
        for beam in auto_beams:
            grid.append(Setting(cond, beam, False, None, "auto"))
    return grid


# ---------------------------------------------------------------------------
# Clips


@dataclass
class Clip:
    id: str
    language: str
    text: str
    audio: np.ndarray
    """The clip with LEAD_S of silence before and TAIL_S after (phone-degraded as a whole for ``phone``)."""
    n: int
    """Samples of the clip itself (it starts at LEAD_S)."""
    source: str = ""

    @property
    def seconds(self) -> float:
        return self.n / SAMPLE_RATE

    def whole(self) -> np.ndarray:
        lead = int(LEAD_S * SAMPLE_RATE)
        return self.audio[lead : lead + self.n]


def load_clips(manifests, languages, limit: int | None = None) -> tuple[list, list]:
    """(rows, bad rows) from every manifest (models.finetune.data.load_rows: opt-outs honoured)."""
    from models.finetune.data import load_rows

    rows, bad = [], []
    for m in manifests:
        loaded = load_rows(m, languages=languages)
        rows += loaded.rows
        bad += loaded.bad
    return (rows[:limit] if limit else rows), bad


def prepare(rows, condition: str, seed: int) -> list[Clip]:
    lead, tail = np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32), np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)
    clips = []
    for i, row in enumerate(rows):
        samples = np.asarray(row.load_audio(), np.float32)
        padded = np.concatenate([lead, samples, tail])
        if condition == "phone":
            from models.finetune.degrade import phone_degrade

            padded = phone_degrade(padded, np.random.default_rng([seed, i]))
        elif condition != "clean":
            raise ValueError(f"condition {condition!r}: use clean or phone")
        clips.append(Clip(str(row.id), row.language, row.text, padded, len(samples), getattr(row, "source", "")))
    return clips


def segment(audio: np.ndarray, vad_model, vad_settings, threshold: float, min_silence_ms: int) -> list[np.ndarray]:
    """The utterances the project's Segmenter cuts from ``audio`` streamed in 20 ms frames."""
    from pipeline.segmenter import Segmenter

    s = vad_settings
    seg = Segmenter(
        vad_model.stream(),
        threshold=threshold,
        min_speech_ms=s.min_speech_ms,
        min_silence_ms=min_silence_ms,
        speculative_ms=min(s.speculative_ms, min_silence_ms - 32),
        speech_pad_ms=s.speech_pad_ms,
        max_utterance_s=s.max_utterance_s,
    )
    events = []
    for i in range(0, len(audio), FRAME):
        events += seg.push(audio[i : i + FRAME])
    events += seg.finish()
    return [e.audio for e in events if e.kind == "end" and e.audio is not None and len(e.audio)]


# ---------------------------------------------------------------------------
# Measuring


def _rate(errors: int, total: int) -> float | None:
    return errors / total if total else None


def run_setting(engine: FallbackEngine, setting: Setting, clips: list[Clip], asr_settings, vad_model=None, vad_settings=None, progress: bool = False) -> dict:
    """Recognise and score every clip with ``setting``: the grid row (figures) and each clip's result."""
    from models.finetune.evaluate import score

    engine.options = dataclasses.replace(engine.options, beam_size=setting.beam)
    weights = asr_settings.language_weights()
    per_clip = []
    meter = CpuMeter()
    for k, clip in enumerate(clips):
        if progress:
            print(f"\r  {setting.label}: {k + 1}/{len(clips)}", end="", file=sys.stderr, flush=True)
        pieces = [clip.whole()] if setting.vad is None else segment(clip.audio, vad_model, vad_settings, *setting.vad)
        language = clip.language if setting.lang == "manifest" else None
        texts, utts, decode_s, rejected, fallbacks = [], [], 0.0, 0, 0
        for audio in pieces:
            if setting.fallback:
                rec, attempts = engine.recognize_fallback(audio, language, weights)
            else:
                rec, attempts = engine.recognize(audio, language, weights), 1
            decode_s += rec.decode_s
            rejected += rec.rejected is not None
            fallbacks += attempts > 1
            if rec.rejected is None:
                texts.append(rec.text)
            utts.append({"seconds": round(len(audio) / SAMPLE_RATE, 3), "text": rec.text, "rejected": rec.rejected,
                         "language": rec.language, "avg_logprob": round(rec.avg_logprob, 3), "attempts": attempts,
                         "decode_s": round(rec.decode_s, 4)})
        hyp = " ".join(texts)
        ref_n, hyp_n, nw, we, nc, ce = score(clip.text, hyp, clip.language)
        per_clip.append({
            "id": clip.id, "language": clip.language, "audio_s": round(clip.seconds, 3), "reference": ref_n, "hypothesis": hyp_n,
            "words": nw, "word_errors": we, "chars": nc, "char_errors": ce, "cer": round(ce / nc, 4) if nc else 0.0,
            "utterances": utts, "rejected": rejected, "fallbacks": fallbacks, "decode_s": round(decode_s, 4),
            "detected": sorted({u["language"] for u in utts}),
        })
    use = meter.stop()
    wall, cpu = use.wall, use.client
    if progress:
        print(file=sys.stderr)
    return {"setting": setting.to_dict(), "label": setting.label, **summarise(per_clip, setting.lang == "auto"),
            "wall_s": round(wall, 2), "own_cpu_s": round(cpu, 2),
            "other_load": round(max(0.0, (use.busy - cpu) / wall), 2),
            "clips": per_clip}


def merge_repeats(runs: list[dict]) -> dict:
    """One grid row from repeated runs of a setting: quality from the first run, each clip's decode time the median over runs.

    (Beam search is deterministic, so repeats differ only in time; with
    fallback, sampling makes later runs' texts differ: they are not scored.)
    """
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    clips = []
    for k, c in enumerate(first["clips"]):
        times = [r["clips"][k]["decode_s"] for r in runs]
        clips.append({**c, "decode_s": round(statistics.median(times), 4), "decode_s_repeats": times})
    loads = [r["other_load"] for r in runs if r.get("other_load") is not None]
    row = {**first, **summarise(clips, first["setting"]["lang"] == "auto"), "clips": clips, "repeats": len(runs),
           "wall_s": round(sum(r["wall_s"] for r in runs), 2), "own_cpu_s": round(sum(r["own_cpu_s"] for r in runs), 2),
           "other_load": round(max(loads), 2) if loads else None}
    for key in ("by_language", "cer", "wer", "rejected", "empty", "fallbacks", "utterances", "lid_accuracy"):
        if key in first:
            row[key] = first[key]
    return row


def summarise(per_clip: list[dict], auto: bool = False) -> dict:
    by_lang = {}
    for lang in sorted({c["language"] for c in per_clip}):
        cs = [c for c in per_clip if c["language"] == lang]
        by_lang[lang] = {
            "n": len(cs),
            "cer": _rate(sum(c["char_errors"] for c in cs), sum(c["chars"] for c in cs)),
            "wer": _rate(sum(c["word_errors"] for c in cs), sum(c["words"] for c in cs)),
        }
    times = [c["decode_s"] for c in per_clip]
    audio = sum(c["audio_s"] for c in per_clip)
    out = {
        "by_language": by_lang,
        "cer": _rate(sum(c["char_errors"] for c in per_clip), sum(c["chars"] for c in per_clip)),
        "wer": _rate(sum(c["word_errors"] for c in per_clip), sum(c["words"] for c in per_clip)),
        "n": len(per_clip),
        "utterances": sum(len(c["utterances"]) for c in per_clip),
        "rejected": sum(c["rejected"] for c in per_clip),
        "empty": sum(1 for c in per_clip if not c["hypothesis"]),
        "fallbacks": sum(c["fallbacks"] for c in per_clip),
        "decode_median_s": statistics.median(times) if times else None,
        "decode_p95_s": p95(times),
        "audio_s": round(audio, 3),
        "rtf": sum(times) / audio if audio else None,
    }
    if auto:
        out["lid_accuracy"] = sum(1 for c in per_clip if c["detected"] == [c["language"]]) / len(per_clip) if per_clip else None
    return out


# ---------------------------------------------------------------------------
# Report


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict]) -> str:
    langs = sorted({lang for r in rows for lang in r["by_language"]})
    head = ["condition", "beam", "fallback", "VAD", "lang"]
    for lang in langs:
        head += [f"{lang} CER %", f"{lang} WER %"]
    head += ["all CER %", "all WER %", "rejected / utts", "empty clips", "fallbacks", "decode median ms", "decode p95 ms", "RTF", "other load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        s = r["setting"]
        vad = "none" if s["vad"] is None else f"{s['vad']['threshold']:g}/{s['vad']['min_silence_ms']}"
        lang = s["lang"] + (f" (LID {100 * r['lid_accuracy']:.0f}%)" if r.get("lid_accuracy") is not None else "")
        cells = [s["condition"], str(s["beam"]), "on" if s["fallback"] else "off", vad, lang]
        for lg in langs:
            b = r["by_language"].get(lg, {})
            cells += [_pct(b.get("cer")), _pct(b.get("wer"))]
        cells += [_pct(r["cer"]), _pct(r["wer"]), f"{r['rejected']}/{r['utterances']}", str(r["empty"]), str(r["fallbacks"]),
                  f"{1000 * r['decode_median_s']:.0f}", f"{1000 * r['decode_p95_s']:.0f}", f"{r['rtf']:.3f}",
                  "-" if r.get("other_load") is None else f"{r['other_load']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "loadavg_at_start": load, "python": sys.version.split()[0]}


# ---------------------------------------------------------------------------


def _csv(kind):
    def parse(v: str):
        return [kind(x.strip()) for x in v.split(",") if x.strip()]
    return parse


def _onoff(v: str) -> bool:
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"fallback value {v!r}: use on or off")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", action="append", type=Path, help=f"JSONL/CSV manifest or datasets directory; repeatable (default {DEFAULT_MANIFEST})")
    p.add_argument("--beams", type=_csv(int), default=[1, 2, 5], help="beam sizes (default 1,2,5)")
    p.add_argument("--fallback", type=_csv(_onoff), default=[False, True], help="temperature fallback: off,on (default both)")
    p.add_argument("--vad", type=_csv(parse_vad), default=[None, (0.5, 400), (0.5, 250), (0.35, 400)],
                   help="none (clip whole) and/or THRESHOLD/MIN_SILENCE_MS through the Segmenter (default none,0.5/400,0.5/250,0.35/400)")
    p.add_argument("--conditions", type=_csv(str), default=["clean"], help="clean and/or phone (default clean)")
    p.add_argument("--auto-beams", type=_csv(int), default=[1], help="beam sizes also run with language auto, clip whole, no fallback (default 1; '' for none)")
    p.add_argument("--model", help="replaces asr.model (default: the server's, embedded:whisper-base)")
    p.add_argument("--config", help="the server's TOML configuration")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="default cpu")
    p.add_argument("--compute-type", default="auto", help="default auto: int8 on the CPU, float16 on CUDA (as the server)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phone degradation and of sampling (default 0)")
    p.add_argument("--limit", type=int, help="only the first N clips")
    p.add_argument("--repeats", type=int, default=1, help="passes over the grid; per clip the median decode time is kept, quality from the first pass (default 1)")
    p.add_argument("--json", metavar="OUT", help="write every figure and hypothesis as JSON to OUT")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.manifest:
        args.manifest = [DEFAULT_MANIFEST]
    for c in args.conditions:
        if c not in ("clean", "phone"):
            p.error(f"--conditions {c!r}: use clean and/or phone")
    if any(b < 1 or b > 10 for b in args.beams + args.auto_beams):
        p.error("beam sizes must be 1..10 (asr.beam_size)")
    return args


def run(args, settings=None, engine=None, out=sys.stdout) -> dict:
    """The whole benchmark for parsed ``args``; returns the report (also printed as markdown to ``out``)."""
    import ctranslate2

    from models.vad import SileroVad
    from server.config import settings_for

    if settings is None:
        settings = settings_for(args.model, config_file=args.config)
    elif args.model:
        settings = settings.model_copy(update={"asr": settings.asr.model_copy(update={"model": args.model})})
    rows, bad = load_clips(args.manifest, settings.asr.languages, args.limit)
    for b in bad:
        print(f"  bad row {b.id} ({b.source}): {b.reason} {b.detail}", file=sys.stderr)
    if not rows:
        raise SystemExit(f"bench_asr_settings: no usable rows in {', '.join(map(str, args.manifest))}")
    if engine is None:
        engine = load_engine(settings, args.device, args.compute_type)
    ctranslate2.set_random_seed(args.seed)
    vad_model = SileroVad() if any(v is not None for v in args.vad) else None
    grid = build_grid(args.conditions, args.beams, args.fallback, args.vad, args.auto_beams)
    info = machine()
    engine.recognize(rows[0].load_audio(), rows[0].language, settings.asr.language_weights())  # warm-up, untimed
    results = []
    for cond in args.conditions:
        clips = prepare(rows, cond, args.seed)
        settings_here = [s for s in grid if s.condition == cond]
        runs = {s: [] for s in settings_here}
        for _ in range(args.repeats):  # whole passes over the grid, so drifting machine load hits every setting alike
            for s in settings_here:
                runs[s].append(run_setting(engine, s, clips, settings.asr, vad_model, settings.vad, progress=not args.no_progress))
        results += [merge_repeats(runs[s]) for s in settings_here]
    report = {
        "model": engine.model_id, "device": engine.device, "compute_type": engine.compute_type,
        "cpu_threads": settings.asr.cpu_threads, "manifests": [str(m) for m in args.manifest],
        "clips": len(rows), "audio_s": round(sum(r.duration for r in rows), 3), "machine": info,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if out is sys.stdout else "",
        "rows": results,
    }
    print(f"model {report['model']} ({report['device']}/{report['compute_type']}), {report['clips']} clips, "
          f"{report['audio_s']:.1f} s of audio; {info['nproc']} CPUs ({info['cpu_model']})\n", file=out)
    print(markdown(results), file=out)
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    from models.errors import ModelError
    from server.config import ConfigError

    try:
        report = run(args)
    except (ConfigError, ModelError, OSError, ValueError) as e:
        print(f"bench_asr_settings: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
