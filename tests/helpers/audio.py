"""Test speech: the shared clips (with their reference texts) and espeak-ng."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.paths import SHARED_AUDIO


def manifest() -> list[dict]:
    return [json.loads(line) for line in (SHARED_AUDIO / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def clip(name: str) -> Path:
    path = SHARED_AUDIO / name
    if not path.is_file():
        pytest.fail(f"shared clip {path} is missing (set DAUYS_SHARED_AUDIO)")
    return path


def reference(name: str) -> str:
    return next(r["text"] for r in manifest() if r["file"] == name)


def espeak(text: str, voice: str, rate_wpm: int = 150) -> np.ndarray:
    """Speech from espeak-ng (Debian package espeak-ng), 16 kHz float32."""
    from pipeline.audio import read_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng); .ci/run installs it")
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([exe, "-v", voice, "-s", str(rate_wpm), "-w", f.name, text], check=True, capture_output=True)
        return read_audio(f.name).samples
