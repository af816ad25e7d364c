"""Speech from espeak-ng (Debian package espeak-ng): the one helper of the benches and the tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import numpy as np

from .common import BenchError

RATE = 16000


class EspeakMissing(BenchError):
    """espeak-ng is not on PATH."""

    def __init__(self) -> None:
        super().__init__("espeak-ng is not installed (apt-get install espeak-ng)", 2)


def espeak(text: str, voice: str, rate_wpm: int = 150, rate: int = RATE, pitch: int | None = None) -> np.ndarray:
    """``text`` spoken by espeak-ng ``voice`` at ``rate_wpm`` words per minute (and ``pitch``, 0-99, if
    given): mono float32 at ``rate`` Hz (espeak-ng's own rate is 22050).  Raises :class:`EspeakMissing`
    without espeak-ng."""
    from models.audio import read_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissing()
    pitch_args = [] if pitch is None else ["-p", str(pitch)]
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([exe, "-v", voice, "-s", str(rate_wpm), *pitch_args, "-w", f.name, text], check=True, capture_output=True)
        return read_audio(f.name, rate).samples
