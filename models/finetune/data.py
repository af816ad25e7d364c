"""Training and evaluation rows from an operator's recordings, with opt-outs honoured and bad rows reported.

Two sources:

* a **manifest**: JSON Lines (``.jsonl``), a JSON array (``.json``) or CSV
  (``.csv``; ``.tsv`` tab-separated), one row per recording.  Keys:
  ``audio`` | ``path`` | ``file`` (the audio file, relative to the
  manifest's folder, or absolute), ``text`` (also ``sentence`` or
  ``transcript``), ``language`` | ``lang`` (ISO 639-1, ``kk-KZ`` is read as
  ``kk``), optional ``id``, ``speaker`` (also ``speaker_id``,
  ``client_id``) and the opt-out fields below;
* a Hugging Face ``datasets`` **directory** written by ``save_to_disk``: an
  ``Audio`` column (or a ``{"array", "sampling_rate"}`` struct, or a column of
  file paths) plus text and language columns named as above.  Audio bytes
  are decoded here with the project's own decoder (``wave``/PyAV), so the
  ``torchcodec`` package that ``datasets`` wants for decoding is not needed.

Every row is checked; a row that cannot be used is reported in
:attr:`LoadResult.bad` with a reason code (never fatal):
``bad_line`` (not JSON / not an object), ``no_audio_field``, ``missing_file``,
``unreadable_audio``, ``empty_audio``, ``empty_text`` (nothing left after
:func:`models.finetune.textnorm.normalize`), ``too_long`` (over
``max_seconds``, default 30: the recogniser's encoder window), ``no_language``,
``unknown_language`` (not among ``languages``).

Opt-outs.  Kazakhstan's Law No. 230-VIII (Art. 23) lets works be used to
train AI systems unless the rights holder has reserved that right in a
machine-readable form.  Reservations are read in the manner of the W3C
TDM Reservation Protocol (TDMRep); any one of these excludes a recording:

1. a manifest field / dataset column ``tdm_reservation`` or
   ``tdm-reservation`` that is true (``1``, ``true``, ``"1"``, ``"yes"``), or
   ``ai_training`` equal to ``"opt-out"`` (also ``opt_out``, ``optout``,
   ``disallow``, ``no``, ``false``);
2. a sidecar JSON beside the audio file, ``clip.wav.json``,
   ``clip.wav.tdmrep.json``, ``clip.json`` or ``clip.tdmrep.json``, holding
   ``{"tdm-reservation": 1}`` (or one of the fields of 1.);
3. a ``tdmrep.json`` (or ``.well-known/tdmrep.json``) in the manifest's
   folder or in the audio file's folder: a TDMRep list of rules
   ``[{"location": "calls/2024/*", "tdm-reservation": 1}, ...]``.  A
   ``location`` is a glob (``*`` matches any characters, ``/`` included)
   relative to the folder holding the ``tdmrep.json`` (a leading ``/`` is
   ignored); the first matching rule decides, as in TDMRep, and a rule with
   ``"tdm-reservation": 0`` explicitly allows;
4. for a datasets directory, a dataset card ``README.md`` whose YAML front
   matter says ``tdm-reservation: 1`` (the whole dataset is skipped), or
   the columns of 1.

Opted-out rows are skipped before their audio is read and are counted in
:attr:`LoadResult.skipped_optout` (ids and the mechanism that excluded each).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import logging
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from models.finetune.textnorm import normalize

log = logging.getLogger("dauys.finetune.data")

SAMPLE_RATE = 16000
DEFAULT_MAX_SECONDS = 30.0

AUDIO_KEYS = ("audio", "path", "file")
TEXT_KEYS = ("text", "sentence", "transcript")
LANGUAGE_KEYS = ("language", "lang")
SPEAKER_KEYS = ("speaker", "speaker_id", "client_id")
RESERVATION_KEYS = ("tdm-reservation", "tdm_reservation")
AI_TRAINING_KEYS = ("ai_training", "ai-training")
_OPT_OUT_VALUES = {"opt-out", "opt_out", "optout", "disallow", "disallowed", "no", "false", "0", "reserved"}

BAD_REASONS = (
    "bad_line", "no_audio_field", "missing_file", "unreadable_audio", "empty_audio",
    "empty_text", "too_long", "no_language", "unknown_language",
)


def default_languages() -> set[str]:
    """Every language the server can decode: Whisper's tokens plus the configured aliases (ky)."""
    from models.whisper import LANGUAGE_ALIASES, WHISPER_LANGUAGES

    return set(WHISPER_LANGUAGES) | set(LANGUAGE_ALIASES)


# ---------------------------------------------------------------------------
# Result types


@dataclass
class Row:
    """One usable recording.

    ``audio`` is the file's path (manifests), or 16 kHz mono float32 samples
    (datasets that store arrays, or ``keep_audio=True``), or None when the
    samples are decoded on demand from a datasets directory; :meth:`load_audio`
    works in every case.
    """

    id: str
    audio: Path | np.ndarray | None
    text: str
    language: str
    speaker: str | None
    duration: float
    """Seconds of audio."""
    source: str = ""
    """Where the row came from: ``manifest.jsonl:12`` or ``dataset_dir#12``."""
    _loader: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path | None:
        return self.audio if isinstance(self.audio, Path) else None

    def load_audio(self) -> np.ndarray:
        """16 kHz mono float32 samples."""
        if isinstance(self.audio, np.ndarray):
            return self.audio
        if self._loader is not None:
            return self._loader()
        from models.audio import read_audio

        return read_audio(self.audio, SAMPLE_RATE).samples

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "audio": str(self.audio) if isinstance(self.audio, Path) else None,
            "text": self.text,
            "language": self.language,
            "speaker": self.speaker,
            "duration": round(self.duration, 3),
            "source": self.source,
        }


@dataclass(frozen=True)
class BadRow:
    id: str
    reason: str
    """One of :data:`BAD_REASONS`."""
    detail: str = ""
    source: str = ""


@dataclass
class OptOuts:
    """Rows skipped because their rights holder reserved AI training."""

    ids: list[str] = field(default_factory=list)
    via: dict[str, str] = field(default_factory=dict)
    """id -> the mechanism that excluded it (``field:tdm-reservation``, ``sidecar:clip.wav.json``, ``tdmrep:tdmrep.json``, ``dataset-card``, ...)."""

    @property
    def count(self) -> int:
        return len(self.ids)

    def add(self, row_id: str, via: str) -> None:
        self.ids.append(row_id)
        self.via[row_id] = via

    def to_dict(self) -> dict:
        return {"count": self.count, "ids": list(self.ids), "via": dict(self.via)}


@dataclass
class LoadResult:
    rows: list[Row]
    skipped_optout: OptOuts
    bad: list[BadRow]
    source: str = ""

    @property
    def audio_seconds(self) -> float:
        return sum(r.duration for r in self.rows)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for b in self.bad:
            reasons[b.reason] = reasons.get(b.reason, 0) + 1
        bad = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
        return (
            f"{len(self.rows)} rows ({self.audio_seconds / 60:.1f} min), "
            f"{self.skipped_optout.count} skipped (opt-out), {len(self.bad)} bad ({bad})"
        )

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rows": len(self.rows),
            "audio_s": round(self.audio_seconds, 3),
            "skipped_optout": self.skipped_optout.to_dict(),
            "bad": [{"id": b.id, "reason": b.reason, "detail": b.detail, "source": b.source} for b in self.bad],
        }


# ---------------------------------------------------------------------------
# Opt-out signals


def _truthy(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v == 1
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y", "on", "reserved")
    return False


def reservation_in(fields: dict) -> str | None:
    """The opt-out field set in ``fields`` (a row or sidecar), or None."""
    for k in RESERVATION_KEYS:
        if k in fields and _truthy(fields[k]):
            return k
    for k in AI_TRAINING_KEYS:
        v = fields.get(k)
        if isinstance(v, bool) and v is False:
            return k
        if isinstance(v, str) and v.strip().lower() in _OPT_OUT_VALUES:
            return k
    return None


class TdmRep:
    """The ``tdmrep.json`` rule lists of the folders a manifest's audio lives in (cached per folder)."""

    def __init__(self) -> None:
        self._rules: dict[Path, list[tuple[str, bool]] | None] = {}

    def _load(self, folder: Path) -> list[tuple[str, bool]] | None:
        if folder in self._rules:
            return self._rules[folder]
        rules = None
        for cand in (folder / "tdmrep.json", folder / ".well-known" / "tdmrep.json"):
            if cand.is_file():
                try:
                    data = json.loads(cand.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    # A reservation file we cannot read must not silently allow training.
                    log.warning("%s is not valid JSON (%s): every file under it is treated as reserved", cand, e)
                    data = [{"location": "*", "tdm-reservation": 1}]
                if isinstance(data, dict):
                    data = data.get("rules", [data])
                rules = []
                for rule in data if isinstance(data, list) else []:
                    if isinstance(rule, dict) and "location" in rule:
                        rules.append((str(rule["location"]).lstrip("/"), _truthy(rule.get("tdm-reservation", rule.get("tdm_reservation", 0)))))
                break
        self._rules[folder] = rules
        return rules

    def reserved(self, audio: Path, folders: Iterable[Path]) -> str | None:
        """The tdmrep.json that reserves ``audio``, or None (the first folder with a matching rule decides)."""
        for folder in folders:
            rules = self._load(folder)
            if not rules:
                continue
            try:
                rel = audio.resolve().relative_to(folder.resolve()).as_posix()
            except ValueError:
                continue
            for pattern, reserved in rules:
                if fnmatch.fnmatchcase(rel, pattern) or pattern in ("", "*"):
                    if reserved:
                        return str(folder / "tdmrep.json")
                    return None  # an explicit allow
        return None


def sidecar_reservation(audio: Path) -> str | None:
    """The sidecar JSON next to ``audio`` that reserves it, or None."""
    for cand in (
        audio.with_name(audio.name + ".json"),
        audio.with_name(audio.name + ".tdmrep.json"),
        audio.with_suffix(".json"),
        audio.with_suffix(".tdmrep.json"),
    ):
        if cand == audio or not cand.is_file():
            continue
        try:
            data = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("sidecar %s is not valid JSON: %s is treated as reserved", cand, audio.name)
            return cand.name
        if isinstance(data, dict) and reservation_in(data):
            return cand.name
    return None


def dataset_card_reservation(folder: Path) -> bool:
    """True when ``folder/README.md`` (a dataset card) says ``tdm-reservation: 1`` in its YAML front matter."""
    card = folder / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    if end < 0:
        return False
    import yaml

    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        log.warning("%s: front matter is not valid YAML: the dataset is treated as reserved", card)
        return True
    return isinstance(meta, dict) and reservation_in(meta) is not None


# ---------------------------------------------------------------------------
# Audio


def decode_bytes(data: bytes, rate: int = SAMPLE_RATE) -> np.ndarray:
    """An encoded audio file image (WAV, FLAC, MP3, OGG ...) -> mono float32 at ``rate``."""
    from models.audio import Encoding, decode_wire, resample

    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, channels, in_rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
        if width != 2:
            raise wave.Error("not 16-bit")
        return resample(decode_wire(raw, Encoding.PCM_S16LE, channels), in_rate, rate)
    except (wave.Error, EOFError):
        from faster_whisper.audio import decode_audio

        return decode_audio(io.BytesIO(data), sampling_rate=rate).astype(np.float32)


def _read_file(path: Path) -> np.ndarray:
    from models.audio import read_audio

    return read_audio(path, SAMPLE_RATE).samples


# ---------------------------------------------------------------------------
# Loading


def _first(d: dict, keys: Sequence[str]) -> Any:
    for k in keys:
        v = d.get(k)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return v
    return None


def _language(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip().lower().replace("_", "-")
    return s.split("-")[0] or None


class _Checker:
    def __init__(self, languages: Iterable[str] | None, max_seconds: float, keep_audio: bool) -> None:
        self.languages = set(languages) if languages is not None else default_languages()
        self.max_seconds = max_seconds
        self.keep_audio = keep_audio
        self.rows: list[Row] = []
        self.bad: list[BadRow] = []
        self.optouts = OptOuts()
        self._ids: set[str] = set()

    def unique_id(self, rid: str) -> str:
        base, n = rid, 1
        while rid in self._ids:
            n += 1
            rid = f"{base}#{n}"
        self._ids.add(rid)
        return rid

    def text_lang(self, rid: str, text: Any, lang_raw: Any, source: str) -> tuple[str, str] | None:
        lang = _language(lang_raw)
        if lang is None:
            self.bad.append(BadRow(rid, "no_language", "no language/lang field", source))
            return None
        if lang not in self.languages:
            self.bad.append(BadRow(rid, "unknown_language", f"{lang!r} is not one of {', '.join(sorted(self.languages)) if len(self.languages) < 20 else 'the known languages'}", source))
            return None
        text = "" if text is None else str(text).strip()
        if not normalize(text, lang):
            self.bad.append(BadRow(rid, "empty_text", "no words in the transcript", source))
            return None
        return text, lang

    def audio_ok(self, rid: str, samples: np.ndarray, source: str) -> float | None:
        duration = len(samples) / SAMPLE_RATE
        if len(samples) == 0:
            self.bad.append(BadRow(rid, "empty_audio", "no samples", source))
            return None
        if duration > self.max_seconds:
            self.bad.append(BadRow(rid, "too_long", f"{duration:.1f} s > {self.max_seconds:g} s", source))
            return None
        return duration

    def result(self, source: str) -> LoadResult:
        return LoadResult(self.rows, self.optouts, self.bad, source)


def _manifest_records(path: Path) -> Iterable[tuple[int, dict | None, str]]:
    """(line number, record or None if malformed, error) for each row of a manifest."""
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        for i, rec in enumerate(reader, start=2):
            yield i, {k.strip(): v for k, v in rec.items() if k is not None}, ""
        return
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as e:
            yield 1, None, f"not valid JSON: {e}"
            return
        for i, rec in enumerate(data, start=1):
            yield i, rec if isinstance(rec, dict) else None, "" if isinstance(rec, dict) else "not an object"
        return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            yield i, None, f"not valid JSON: {e}"
            continue
        yield i, rec if isinstance(rec, dict) else None, "" if isinstance(rec, dict) else "not an object"


def load_manifest(
    manifest: str | Path,
    *,
    languages: Iterable[str] | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    keep_audio: bool = False,
) -> LoadResult:
    """Rows of a JSONL/JSON/CSV/TSV manifest (see the module docstring)."""
    manifest = Path(manifest)
    base = manifest.parent
    chk = _Checker(languages, max_seconds, keep_audio)
    tdm = TdmRep()
    for lineno, rec, err in _manifest_records(manifest):
        source = f"{manifest.name}:{lineno}"
        if rec is None:
            chk.bad.append(BadRow(chk.unique_id(f"line{lineno}"), "bad_line", err, source))
            continue
        audio_field = _first(rec, AUDIO_KEYS)
        rid = chk.unique_id(str(rec.get("id") or audio_field or f"line{lineno}"))
        via = reservation_in(rec)
        if via:
            chk.optouts.add(rid, f"field:{via}")
            continue
        if audio_field is None:
            chk.bad.append(BadRow(rid, "no_audio_field", f"none of {', '.join(AUDIO_KEYS)}", source))
            continue
        audio = Path(str(audio_field)).expanduser()
        if not audio.is_absolute():
            audio = base / audio
        side = sidecar_reservation(audio)
        if side:
            chk.optouts.add(rid, f"sidecar:{side}")
            continue
        folders = [base] if audio.parent.resolve() == base.resolve() else [audio.parent, base]
        rep = tdm.reserved(audio, folders)
        if rep:
            chk.optouts.add(rid, f"tdmrep:{rep}")
            continue
        tl = chk.text_lang(rid, _first(rec, TEXT_KEYS), _first(rec, LANGUAGE_KEYS), source)
        if tl is None:
            continue
        if not audio.is_file():
            chk.bad.append(BadRow(rid, "missing_file", str(audio), source))
            continue
        try:
            samples = _read_file(audio)
        except Exception as e:  # PyAV and wave raise many types
            chk.bad.append(BadRow(rid, "unreadable_audio", f"{type(e).__name__}: {str(e)[:200]}", source))
            continue
        duration = chk.audio_ok(rid, samples, source)
        if duration is None:
            continue
        speaker = _first(rec, SPEAKER_KEYS)
        chk.rows.append(Row(rid, samples if keep_audio else audio, tl[0], tl[1], None if speaker is None else str(speaker), duration, source))
    return chk.result(str(manifest))


def _dataset_audio_column(ds) -> str | None:
    from datasets import Audio

    for name, feat in ds.features.items():
        if isinstance(feat, Audio):
            return name
    for name in AUDIO_KEYS:
        if name in ds.column_names:
            return name
    return None


def load_dataset_dir(
    folder: str | Path,
    *,
    split: str | None = None,
    languages: Iterable[str] | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    keep_audio: bool = False,
) -> LoadResult:
    """Rows of a ``datasets`` directory written by ``Dataset.save_to_disk`` (or ``DatasetDict``: ``split``, default train)."""
    from datasets import Audio, DatasetDict, load_from_disk

    folder = Path(folder)
    ds = load_from_disk(str(folder))
    if isinstance(ds, DatasetDict):
        name = split or ("train" if "train" in ds else next(iter(ds)))
        ds = ds[name]
    chk = _Checker(languages, max_seconds, keep_audio)
    id_col = "id" if "id" in ds.column_names else None
    audio_col = _dataset_audio_column(ds)
    if audio_col is not None and isinstance(ds.features[audio_col], Audio):
        ds = ds.cast_column(audio_col, Audio(decode=False))  # our decoder, no torchcodec needed
    if dataset_card_reservation(folder):
        ids = list(ds[id_col]) if id_col else [f"{folder.name}#{i}" for i in range(len(ds))]
        for rid in ids:
            chk.optouts.add(chk.unique_id(str(rid)), "dataset-card")
        return chk.result(str(folder))
    tdm = TdmRep()
    for i in range(len(ds)):
        rec = ds[i]
        source = f"{folder.name}#{i}"
        a = rec.get(audio_col) if audio_col else None
        apath = a.get("path") if isinstance(a, dict) else (a if isinstance(a, str) else None)
        rid = chk.unique_id(str(rec.get(id_col) or apath or source) if id_col else str(apath or source))
        via = reservation_in(rec)
        if via:
            chk.optouts.add(rid, f"field:{via}")
            continue
        if apath and tdm.reserved(folder / apath, [folder]):
            chk.optouts.add(rid, f"tdmrep:{folder / 'tdmrep.json'}")
            continue
        if a is None:
            chk.bad.append(BadRow(rid, "no_audio_field", "no Audio column or audio/path/file value", source))
            continue
        tl = chk.text_lang(rid, _first(rec, TEXT_KEYS), _first(rec, LANGUAGE_KEYS), source)
        if tl is None:
            continue
        loader: Callable[[], np.ndarray]
        try:
            if isinstance(a, dict) and a.get("array") is not None:
                arr = np.asarray(a["array"], np.float32)
                if arr.ndim > 1:
                    arr = arr.mean(axis=0 if arr.shape[0] < arr.shape[-1] else -1).astype(np.float32)
                sr = int(a.get("sampling_rate") or SAMPLE_RATE)
                from models.audio import resample

                samples = resample(arr, sr, SAMPLE_RATE)
                keep = True
            elif isinstance(a, dict) and a.get("bytes"):
                samples = decode_bytes(a["bytes"])
                keep = keep_audio
                loader = (lambda ds=ds, i=i, col=audio_col: decode_bytes(ds[i][col]["bytes"]))
            else:
                p = Path(apath) if apath else None
                if p is not None and not p.is_absolute():
                    p = folder / p
                if p is None or not p.is_file():
                    chk.bad.append(BadRow(rid, "missing_file", str(p), source))
                    continue
                samples = _read_file(p)
                keep = keep_audio
                loader = (lambda p=p: _read_file(p))
        except Exception as e:
            chk.bad.append(BadRow(rid, "unreadable_audio", f"{type(e).__name__}: {str(e)[:200]}", source))
            continue
        duration = chk.audio_ok(rid, samples, source)
        if duration is None:
            continue
        speaker = _first(rec, SPEAKER_KEYS)
        speaker = None if speaker is None else str(speaker)
        chk.rows.append(Row(rid, samples if keep else None, tl[0], tl[1], speaker, duration, source, None if keep else loader))
    return chk.result(str(folder))


def load_rows(
    source: str | Path,
    *,
    languages: Iterable[str] | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    keep_audio: bool = False,
    split: str | None = None,
) -> LoadResult:
    """Rows from a manifest file or a ``save_to_disk`` datasets directory (decided by what ``source`` is).

    ``languages``: the accepted language codes (default: every language the
    recogniser can decode); ``max_seconds``: longer recordings are reported
    as ``too_long``; ``keep_audio``: hold decoded samples in memory instead
    of reading them again on :meth:`Row.load_audio`.
    """
    source = Path(source)
    if source.is_dir():
        if not (source / "dataset_info.json").is_file() and not (source / "dataset_dict.json").is_file():
            raise ValueError(f"{source} is a folder but not a datasets directory written by save_to_disk")
        return load_dataset_dir(source, split=split, languages=languages, max_seconds=max_seconds, keep_audio=keep_audio)
    if not source.is_file():
        raise FileNotFoundError(f"no manifest at {source}")
    return load_manifest(source, languages=languages, max_seconds=max_seconds, keep_audio=keep_audio)


# ---------------------------------------------------------------------------
# Splitting


def _group_key(row: Row, by: str) -> str:
    if by == "speaker":
        return f"s:{row.speaker}" if row.speaker else f"r:{row.id}"
    if by == "text":
        return f"t:{row.language}:{normalize(row.text, row.language)}"
    if by == "row":
        return f"r:{row.id}"
    raise ValueError(f"split by {by!r}: use 'speaker', 'text' or 'row'")


def split_rows(
    rows: Sequence[Row],
    holdout_fraction: float = 0.1,
    seed: int = 0,
    by: Literal["speaker", "text", "row"] = "speaker",
) -> tuple[list[Row], list[Row]]:
    """Deterministic (train, holdout) split keeping each group on one side.

    Groups are speakers (rows without a speaker are their own group), the
    normalised text (the same sentence never in both), or single rows.
    Groups are ordered by a hash of (seed, group) -- independent of row order
    -- and taken into the holdout until it holds ``holdout_fraction`` of the
    rows (at least one group when the fraction is > 0 and there are two or
    more groups; never every group).  Both lists keep the input order.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in [0, 1)")
    groups: dict[str, int] = {}
    for r in rows:
        k = _group_key(r, by)
        groups[k] = groups.get(k, 0) + 1
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())
    target = holdout_fraction * len(rows)
    held: set[str] = set()
    count = 0
    if holdout_fraction > 0 and len(groups) > 1:
        for k in order[:-1]:
            if held and count + groups[k] / 2 > target:
                break
            held.add(k)
            count += groups[k]
    train = [r for r in rows if _group_key(r, by) not in held]
    holdout = [r for r in rows if _group_key(r, by) in held]
    return train, holdout
