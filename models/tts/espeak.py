"""espeak-ng: a subprocess per sentence, the offline fallback for every language it speaks.

Runs ``espeak-ng --stdout`` (Debian package ``espeak-ng``; speaks kk, ky, uz,
tt, tr, az, tk, ba, ug, ru, en) at 22050 Hz.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Mapping

import numpy as np

from models.audio import AudioChunk, int16_to_float
from models.text import normalize_language
from models.tts.base import SentenceEngine, SynthesisConfig, TtsError

log = logging.getLogger("dauys.tts")

ESPEAK_RATE = 22050
"""Sample rate (Hz) of espeak-ng's output."""

ESPEAK_VOICES: dict[str, str] = {
    "kk": "kk", "ky": "ky", "uz": "uz", "tt": "tt", "tr": "tr", "az": "az", "tk": "tk",
    "ba": "ba", "ug": "ug", "ru": "ru", "uk": "uk", "en": "en",
}
"""Our language codes -> espeak-ng voices."""

ESPEAK_INSTALL_HINT = "install the Debian package espeak-ng (apt-get install espeak-ng)"


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV image -> (float32 mono samples, rate).

    Tolerates the placeholder sizes a streaming writer (``espeak-ng --stdout``)
    puts in the RIFF and data headers: the data chunk runs to the end.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("not a WAV stream")
    pos = 12
    rate = channels = bits = None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            fmt_tag = int.from_bytes(data[body : body + 2], "little")
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if fmt_tag != 1 or bits != 16:
                raise TtsError(f"unsupported WAV format (tag {fmt_tag}, {bits} bits)")
        elif cid == b"data":
            if rate is None:
                raise TtsError("WAV data before its format")
            raw = data[body : min(len(data), body + size)]
            raw = raw[: len(raw) - len(raw) % (2 * channels)]
            x = int16_to_float(np.frombuffer(raw, dtype="<i2"))
            if channels > 1:
                x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
            return x.astype(np.float32, copy=False), rate
        pos = body + size + (size & 1)
    raise TtsError("WAV stream without data")


def _espeak_installed_voices(exe: str) -> set[str]:
    try:
        listing = subprocess.run([exe, "--voices"], capture_output=True, timeout=10, check=True).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError) as e:
        raise TtsError(f"espeak-ng does not run ({e}): {ESPEAK_INSTALL_HINT}") from None
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1].lower())
            names.add(cols[4].rsplit("/", 1)[-1].lower())
        names.update(m.lower() for m in re.findall(r"\(([\w-]+) \d+\)", line))
    return names


class EspeakTts(SentenceEngine):
    """espeak-ng as a subprocess per sentence (thread-safe, stateless)."""

    name = "espeak-ng"
    model_id = "espeak-ng"
    sample_rate = ESPEAK_RATE

    def __init__(self, rate_wpm: int = 160, voices: Mapping[str, str] | None = None, executable: str | None = None, timeout_s: float = 30.0) -> None:
        exe = executable or shutil.which("espeak-ng")
        if exe is None:
            raise TtsError(f"espeak-ng is not installed: {ESPEAK_INSTALL_HINT}")
        self.executable = exe
        self.rate_wpm = rate_wpm
        self.timeout_s = timeout_s
        installed = _espeak_installed_voices(exe)
        wanted = dict(ESPEAK_VOICES if voices is None else voices)
        self.voices = {lang: v for lang, v in wanted.items() if v.lower() in installed}
        missing = sorted(set(wanted) - set(self.voices))
        if missing:
            log.debug("espeak-ng has no voice for: %s", ", ".join(missing))
        self.languages = tuple(self.voices)

    def add_voice(self, language: str, voice: str) -> None:
        """Speak ``language`` with espeak-ng voice ``voice`` (e.g. a catalog entry 'espeak-ng:ky')."""
        self.voices[normalize_language(language)] = voice
        self.languages = tuple(self.voices)

    def voice_for(self, language: str) -> str:
        voice = self.voices.get(normalize_language(language))
        if voice is None:
            raise TtsError(f"espeak-ng has no voice for language {language!r} (has: {', '.join(self.languages)})")
        return voice

    def model_id_for(self, language: str) -> str:
        return f"espeak-ng:{self.voice_for(language)}"

    def rate_for(self, config: SynthesisConfig | None) -> int:
        ls = config.length_scale if config is not None else None
        rate = self.rate_wpm if not ls else round(self.rate_wpm / ls)
        return max(80, min(450, rate))

    def synthesize_sentence(self, sentence: str, language: str | None = None, config: SynthesisConfig | None = None) -> list[AudioChunk]:
        samples, sr = self._speak(self.voice_for(language or ""), self.rate_for(config), sentence)
        volume = config.volume if config is not None else None
        if volume is not None and volume != 1.0:
            samples = np.clip(samples * volume, -1.0, 1.0).astype(np.float32)
        return [AudioChunk(samples, sr)] if len(samples) else []

    def _speak(self, voice: str, rate: int, sentence: str) -> tuple[np.ndarray, int]:
        # Text on stdin: a sentence starting with '-' is never taken for an option.
        cmd = [self.executable, "-v", voice, "-s", str(rate), "-b", "1", "--stdout"]
        try:
            proc = subprocess.run(cmd, input=sentence.encode("utf-8"), capture_output=True, timeout=self.timeout_s)
        except FileNotFoundError:
            raise TtsError(f"espeak-ng is not installed: {ESPEAK_INSTALL_HINT}") from None
        except subprocess.TimeoutExpired:
            raise TtsError(f"espeak-ng did not finish within {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise TtsError(f"espeak-ng failed (exit {proc.returncode}): {err[-1] if err else 'no message'}")
        return parse_wav(proc.stdout)

    def warmup(self) -> None:
        pass

    def close(self) -> None:
        pass
