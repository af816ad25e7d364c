"""Test speech: the shared clips (with their reference texts) and espeak-ng."""

from __future__ import annotations

import json
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
    """Speech from espeak-ng (Debian package espeak-ng), 16 kHz float32: the benches' helper, scripts/benchlib/espeak.py."""
    from scripts.benchlib.espeak import EspeakMissing
    from scripts.benchlib.espeak import espeak as speak

    try:
        return speak(text, voice, rate_wpm)
    except EspeakMissing:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng); .ci/run installs it")
