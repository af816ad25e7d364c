"""The model catalog: which models Dauys knows, where they come from, under which licence.

The catalog is data (``models/data/catalog.toml``, shipped with the package),
validated here with pydantic.  Operators add their own entries (a private
fine-tune, a mirror) in extra TOML files named by ``models.catalogs``; an
extra entry with an id already in the catalog replaces it.

Every entry says what the model is (``kind``), where it comes from (``source``:
a Hugging Face repository and a pinned revision, or a package Dauys ships),
what ``dauys models pull`` must do with it (``format``: converted to
CTranslate2 or copied as is), which languages it serves, its licence (an SPDX
id, or ``not stated``), whether that licence allows commercial use, and the
figures its model card quotes with their test sets.  ``server_defaults`` are
``asr.*`` settings the server takes from the entry unless the operator set
them (see ``server/config.py``).
"""

from __future__ import annotations

import functools
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import ModelError

CATALOG_PREFIX = "catalog:"
NOT_STATED = "not stated"
"""What the catalog says where a model's card does not state a fact (a licence, a figure, a revision)."""

Kind = Literal["asr", "tts", "llm", "vad"]
Format = Literal["ct2-whisper", "transformers-whisper", "piper", "transformers", "embedded", "package"]
"""How a model is stored at its source:

* ``ct2-whisper``: a CTranslate2 Whisper directory, copied as is;
* ``transformers-whisper``: a transformers Whisper checkpoint, converted to CTranslate2 on pull;
* ``piper``: a Piper voice (``.onnx`` + ``.onnx.json``), copied flat;
* ``transformers``: a transformers checkpoint (an LLM), copied as is;
* ``embedded`` / ``package``: ships inside Dauys or one of its dependencies (nothing to pull).
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    hub: str = ""
    """Hugging Face repository id (org/name); empty for embedded and packaged models."""
    revision: str = ""
    """A commit hash, a tag, or a branch (then ``revision_note`` says why it is not pinned)."""
    revision_note: str = ""
    files: list[str] = Field(default_factory=list)
    """Glob patterns of the repository files to fetch (empty = all)."""
    tokenizer_from: str = ""
    """A repository (org/name@revision) that supplies tokenizer.json/preprocessor_config.json when the model's own lacks them."""
    embedded: str = ""
    """For embedded models: the ``asr.model`` value (e.g. ``embedded:whisper-base``) or the package path."""

    @field_validator("hub")
    @classmethod
    def _repo(cls, v: str) -> str:
        if v and (v.count("/") != 1 or any(not part for part in v.split("/"))):
            raise ValueError(f"{v!r} is not a Hugging Face repository id like org/name")
        return v


class Figure(_Strict):
    metric: Literal["WER", "CER", "other"]
    value: float
    """Percent, as the card states it."""
    test_set: str
    language: str
    quoted_from: str
    """Where the figure was read (the model card's URL)."""


class CatalogEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    kind: Kind
    name: str
    source: Source
    format: Format
    conversion: str = ""
    """What pull does to it, in words (e.g. 'CTranslate2, int8 on CPU / int8_float16 on CUDA')."""
    languages: list[str]
    """Languages the model serves (ISO 639-1); ['multilingual'] for Whisper's ~100."""
    size: str
    """Download size as the hub lists it (e.g. '145 MB', '3.09 GB')."""
    parameters: str = NOT_STATED
    license: str
    """SPDX identifier of the model's licence, or 'not stated'."""
    commercial: bool | None = None
    """Does the licence allow commercial use? None = unknown (not stated)."""
    license_note: str = ""
    figures: list[Figure] = Field(default_factory=list)
    gpu: str = ""
    """What hardware it needs in production (e.g. 'CPU ok', 'GPU with 6 GB')."""
    recommended: bool = False
    """May be suggested as a default (only with a known licence that allows commercial use)."""
    voice_file: str = Field("", pattern=r"^[^/\\]*$")
    """Piper voices: the .onnx file the ``tts.voices`` entry points at."""
    server_defaults: dict[str, Any] = Field(default_factory=dict)
    """``asr.*`` settings this model implies (languages, default_language, language_prior, ...)."""
    note: str = ""

    @field_validator("languages")
    @classmethod
    def _langs(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one language (or 'multilingual') is needed")
        return [x.strip().lower() for x in v]

    @model_validator(mode="after")
    def _check(self) -> "CatalogEntry":
        if self.license.strip().lower() == NOT_STATED and self.commercial is not None:
            raise ValueError("a licence that is not stated cannot say whether commercial use is allowed (commercial must be unset)")
        if self.recommended and not self.commercial_ok:
            raise ValueError("only a model whose licence is known and allows commercial use may be recommended")
        if self.format in ("embedded", "package"):
            if not self.source.embedded:
                raise ValueError("an embedded or packaged model needs source.embedded")
        else:
            if not self.source.hub or not self.source.revision:
                raise ValueError("a downloadable model needs source.hub and source.revision (a commit, a tag, or a branch with revision_note)")
            if not _is_pinned(self.source.revision) and not self.source.revision_note:
                raise ValueError(f"revision {self.source.revision!r} is a branch: pin a commit or tag, or say why not in source.revision_note")
        if self.kind == "tts" and self.format == "piper" and not self.voice_file:
            raise ValueError("a Piper voice needs voice_file (the .onnx the tts.voices entry points at)")
        if self.server_defaults and self.kind != "asr":
            raise ValueError("server_defaults are asr.* settings: only ASR entries have them")
        return self

    @property
    def commercial_ok(self) -> bool:
        return self.commercial is True and self.license.strip().lower() != NOT_STATED

    @property
    def downloadable(self) -> bool:
        return self.format not in ("embedded", "package")

    @property
    def ref(self) -> str:
        return CATALOG_PREFIX + self.id

    def licence_accepted(self, accepted: list[str] | tuple[str, ...]) -> bool:
        """Whether pulling is allowed: commercial use allowed, or the operator named the licence or the id."""
        if self.commercial_ok:
            return True
        names = {a.strip().lower() for a in accepted}
        return self.id in names or self.license.strip().lower() in names

    def licence_line(self) -> str:
        use = {True: "commercial use allowed", False: "NON-COMMERCIAL", None: "commercial use unknown"}[self.commercial]
        return f"{self.license} ({use})"


def _is_pinned(revision: str) -> bool:
    r = revision.strip()
    if len(r) == 40 and all(c in "0123456789abcdef" for c in r):
        return True
    return r not in ("main", "master") and not r.startswith("refs/heads/")


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: dict[str, CatalogEntry]
    sources: dict[str, str] = Field(default_factory=dict)
    """entry id -> the file it came from."""

    def get(self, model_id: str) -> CatalogEntry:
        model_id = model_id.removeprefix(CATALOG_PREFIX)
        try:
            return self.entries[model_id]
        except KeyError:
            raise ModelError(f"{model_id!r} is not in the model catalog: `dauys models list` shows the ids") from None

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


BUILTIN = "models/data/catalog.toml"


def _read(path: Path | None) -> tuple[str, list[dict]]:
    if path is None:
        text, where = files("models").joinpath("data/catalog.toml").read_text(encoding="utf-8"), BUILTIN
    else:
        where = str(path)
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ModelError(f"model catalog {where}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"model catalog {where} is not valid TOML: {e}") from None
    models = data.get("model", [])
    if not isinstance(models, list) or set(data) - {"model"}:
        raise ModelError(f"model catalog {where}: expected only [[model]] tables")
    return where, models


def _parse(where: str, raw: list[dict]) -> list[CatalogEntry]:
    out = []
    for i, item in enumerate(raw, 1):
        try:
            out.append(CatalogEntry.model_validate(item))
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            name = item.get("id", f"entry {i}") if isinstance(item, dict) else f"entry {i}"
            raise ModelError(f"model catalog {where}: {name}: {loc + ': ' if loc else ''}{first['msg'].removeprefix('Value error, ')}") from None
    return out


@functools.lru_cache(maxsize=16)
def _load(extra: tuple[str, ...], _stamps: tuple = ()) -> Catalog:
    entries: dict[str, CatalogEntry] = {}
    sources: dict[str, str] = {}
    for path in (None, *(Path(p) for p in extra)):
        where, raw = _read(path)
        seen: set[str] = set()
        for entry in _parse(where, raw):
            if entry.id in seen:
                raise ModelError(f"model catalog {where}: id {entry.id!r} appears twice")
            seen.add(entry.id)
            entries[entry.id] = entry
            sources[entry.id] = where
    return Catalog(entries=entries, sources=sources)


def load_catalog(extra: list[str | Path] | tuple[str | Path, ...] = ()) -> Catalog:
    """The built-in catalog plus ``extra`` TOML files (later ids replace earlier ones); raises ModelError."""
    paths = tuple(str(Path(p).expanduser().resolve()) for p in extra)
    stamps = tuple(Path(p).stat().st_mtime_ns if Path(p).is_file() else None for p in paths)  # an edited file is read again
    return _load(paths, stamps)


def clear_cache() -> None:
    _load.cache_clear()
