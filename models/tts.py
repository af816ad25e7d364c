"""Text to speech: Piper voices where configured, espeak-ng everywhere else.

Engines (each a :class:`TtsEngine`) are loaded once per process and shared by
every session.  ``synthesize()`` is a *blocking generator*: it yields one or
more :class:`~models.audio.AudioChunk` per sentence and is meant to be
stepped in a worker thread, never on the event loop.

- :class:`EspeakTts` runs ``espeak-ng --stdout`` as a subprocess per sentence
  (Debian package ``espeak-ng``; speaks kk, ky, uz, tt, tr, az, tk, ba, ug,
  ru, en) at 22050 Hz.  It is the offline fallback.
- :class:`PiperTts` speaks a Piper voice (``VOICE.onnx`` + ``VOICE.onnx.json``)
  through ``python -m piper_worker``, a separate GPL-3.0 program (see
  ``piper_worker/README.md``): Piper is GPL-3.0 and Dauys is Apache-2.0, so
  this module never imports ``piper``; it exchanges JSON lines and PCM bytes
  with a persistent worker process per voice (a small pool), restarts a
  worker that died, and bounds every request with a timeout.
- :class:`TtsRouter` maps languages to engines from a voice catalog
  ``{language: "path/to/voice.onnx" | "espeak-ng[:voice]"}``, falls back to
  espeak-ng for languages without a usable Piper voice, and reports which
  engine served each call (:attr:`Synthesis.model_id`, for provenance).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import queue
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from models.errors import ModelError
from models.audio import AudioChunk, int16_to_float

log = logging.getLogger("dauys.tts")

ESPEAK_RATE = 22050
"""Sample rate (Hz) of espeak-ng's output."""

ESPEAK_VOICES: dict[str, str] = {
    "kk": "kk", "ky": "ky", "uz": "uz", "tt": "tt", "tr": "tr", "az": "az", "tk": "tk",
    "ba": "ba", "ug": "ug", "ru": "ru", "uk": "uk", "en": "en",
}
"""Our language codes -> espeak-ng voices."""

WARMUP_TEXT = {
    "kk": "Сәлеметсіз бе.", "ky": "Саламатсызбы.", "uz": "Assalomu alaykum.", "tt": "Исәнмесез.",
    "tr": "Merhaba.", "az": "Salam.", "tk": "Salam.", "ba": "Һаумыһығыҙ.", "ru": "Здравствуйте.", "en": "Hello.",
}

PIPER_INSTALL_HINT = "pip install piper-tts (the 'tts' extra: pip install 'dauys[tts]')"
ESPEAK_INSTALL_HINT = "install the Debian package espeak-ng (apt-get install espeak-ng)"


class TtsError(ModelError):
    """Speech could not be produced: engine missing, voice unloadable, worker failure or timeout.
    The message is one line and names the fix where there is one."""


# --------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthesisConfig:
    """Per-call synthesis settings (as piper1-gpl's); ``None`` = the voice's default."""

    length_scale: float | None = None
    """Phoneme length scale: > 1 slower, < 1 faster.  espeak-ng: words per minute / length_scale."""
    volume: float | None = None
    """Multiplier for the samples (clipped to [-1, 1]); None = 1.0."""
    noise_scale: float | None = None
    """Piper only: generator noise."""
    noise_w_scale: float | None = None
    """Piper only: phoneme width noise."""
    speaker_id: int | None = None
    """Piper only: speaker of a multi-speaker voice."""

    def merged(self, over: SynthesisConfig | None) -> SynthesisConfig:
        """These settings with every non-None field of ``over`` taking precedence."""
        if over is None:
            return self
        return SynthesisConfig(**{f.name: (getattr(over, f.name) if getattr(over, f.name) is not None else getattr(self, f.name)) for f in fields(self)})


@runtime_checkable
class TtsEngine(Protocol):
    """A speech engine: one Piper voice, or espeak-ng for many languages."""

    name: str
    """Engine kind: 'piper' or 'espeak-ng'."""
    model_id: str
    """What served, for provenance: 'piper:kk_KZ-issai-high', 'espeak-ng'."""
    languages: tuple[str, ...]
    """Language codes this engine speaks."""
    sample_rate: int
    """Rate (Hz) of the chunks it yields."""

    def model_id_for(self, language: str) -> str:
        """The provenance id for speech in ``language`` ('espeak-ng:kk')."""
        ...

    def synthesize(self, text: str, language: str, config: SynthesisConfig | None = None) -> Iterator[AudioChunk]:
        """Blocking generator: one or more chunks per sentence (step it in a worker thread)."""
        ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


def normalize_language(language: str) -> str:
    """'kk-KZ', 'kk_KZ', 'KK' -> 'kk'."""
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]


# --------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------
_CLOSERS = "\"'»”’)]"
_OPENERS = "«\"'“„‘([—–-"
_END_RUN = re.compile(r"(?:[.!?…])+[" + re.escape(_CLOSERS) + r"]*")
_ABBREVIATIONS = frozenset(
    {
        # Kazakh
        "т", "б", "с", "мыс", "ж", "жж", "көш", "қ", "обл", "ш", "сағ", "тг", "бет", "млн", "млрд",
        # Russian
        "г", "гг", "ул", "д", "кв", "пр", "просп", "пер", "им", "тел", "руб", "коп", "тыс", "др", "стр",
        "см", "напр", "е", "п", "проф", "доц", "акад", "ср", "рис", "табл", "мин", "сек", "ч", "р", "пос",
        "корп", "каб", "ок", "прим", "англ", "рус", "каз",
        # English and Latin-script Turkic
        "mr", "mrs", "ms", "dr", "prof", "st", "etc", "vs", "no", "approx", "tel", "nr", "vb", "bkz",
    }
)
_DOTTED_ABBREV = re.compile(r"(?:^|[^\w.])\w{1,3}\.\w{1,3}$")  # "т.б", "т.е", "и.о", "e.g"


def _is_boundary(text: str, start: int, p_start: int, end: int) -> bool:
    """Does the punctuation run text[p_start:end] end a sentence that began at ``start``?"""
    if end >= len(text):
        return True
    if not text[end].isspace():
        return False  # "1.5", "10.00", "kaspi.kz", "т.б."
    nxt = text[end:].lstrip()
    if not nxt:
        return True
    run = text[p_start:end].rstrip(_CLOSERS)
    if run == ".":
        before = text[start:p_start]
        word = re.search(r"(\w+)$", before)
        if word:
            w = word.group(1)
            if w.lower() in _ABBREVIATIONS or _DOTTED_ABBREV.search(before):
                return False  # "т.б.", "ул.", "мыс."
            if len(w) == 1 and w.isupper():
                return False  # an initial: "А. Байтұрсынұлы"
            if w.isdigit() and before.strip() == w:
                return False  # a list marker: "1. Төлем жасаңыз."
    return nxt[0].isupper() or nxt[0].isdigit() or nxt[0] in _OPENERS


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """Split a too-long sentence at a clause boundary (comma, semicolon, dash), else a space."""
    out = []
    s = sentence
    while len(s) > max_chars:
        window = s[: max_chars + 1]
        cut = max((window.rfind(p) for p in (", ", "; ", ": ", " — ", " – ")), default=-1)
        if cut >= max_chars // 3:
            cut += 1  # keep the punctuation with the first part
        else:
            cut = window.rfind(" ")
            if cut < max_chars // 3:
                cut = max_chars
        out.append(s[:cut].strip())
        s = s[cut:].strip()
    if s:
        out.append(s)
    return [p for p in out if p]


def split_sentences(text: str, max_chars: int | None = None) -> list[str]:
    """Split text for speech, sentence by sentence.

    Ends a sentence after ``.`` ``!`` ``?`` ``…`` (runs of them, and the closing
    quotes or brackets after them: ``»`` ``”`` ``"`` ``)``) when whitespace and
    an upper-case letter, a digit or an opening quote/dash follow, or at a
    blank line.  Never inside numbers ("1.5", "10.00"), after abbreviations
    ("т.б.", "т.е.", "мыс.", "ул.", "г."), initials ("А. Байтұрсынұлы") or a
    leading list number ("1.").  Sentences longer than ``max_chars`` are cut
    at a clause boundary.  Pieces without a letter or digit are attached to
    the previous sentence.
    """
    out: list[str] = []

    def add(piece: str) -> None:
        piece = piece.strip()
        if not piece:
            return
        if not any(ch.isalnum() for ch in piece):
            if out:
                out[-1] += piece
            return
        out.append(piece)

    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        start = 0
        for m in _END_RUN.finditer(para):
            if _is_boundary(para, start, m.start(), m.end()):
                add(para[start : m.end()])
                start = m.end()
        add(para[start:])
    if max_chars:
        out = [piece for s in out for piece in _cut_long(s, max_chars)]
    return out


# --------------------------------------------------------------------------
# espeak-ng
# --------------------------------------------------------------------------
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


class EspeakTts:
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

    def synthesize(self, text: str, language: str, config: SynthesisConfig | None = None) -> Iterator[AudioChunk]:
        voice = self.voice_for(language)
        rate = self.rate_for(config)
        volume = config.volume if config is not None else None
        for sentence in split_sentences(text):
            samples, sr = self._speak(voice, rate, sentence)
            if volume is not None and volume != 1.0:
                samples = np.clip(samples * volume, -1.0, 1.0).astype(np.float32)
            if len(samples):
                yield AudioChunk(samples, sr)

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


# --------------------------------------------------------------------------
# Piper, out of process
# --------------------------------------------------------------------------
_PROTOCOL_VERSION = 1
_MAX_HEADER = 64 * 1024
_MAX_FRAME = 64 * 1024 * 1024
_WORKER_ROOT = Path(__file__).resolve().parent.parent / "piper-worker"
"""Where the piper_worker package lies in a source checkout (its own GPL-3.0 distribution,
dauys-piper-worker); installed, it is found on the interpreter's path instead."""


def piper_available(python: str | None = None) -> bool:
    """Is piper-tts importable by ``python`` (default: this interpreter)?  Never imports it here."""
    if python is None or python == sys.executable:
        return importlib.util.find_spec("piper") is not None
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('piper') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    if (_WORKER_ROOT / "piper_worker" / "__main__.py").is_file():
        env["PYTHONPATH"] = str(_WORKER_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class _WorkerDied(Exception):
    pass


class _PiperWorker:
    """One ``python -m piper_worker`` process; used by one thread at a time (the pool hands it out)."""

    def __init__(self, owner: PiperTts) -> None:
        self.owner = owner
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self._buf = bytearray()
        self._sel: selectors.BaseSelector | None = None
        self._stderr: deque[str] = deque(maxlen=30)
        self._stderr_thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive else None

    def start(self) -> None:
        o = self.owner
        self.stop()
        cmd = [o.python, "-m", "piper_worker", "--model", str(o.model_path), "--config", str(o.config_path)]
        if o.use_cuda:
            cmd.append("--cuda")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=_worker_env())
        except OSError as e:
            raise TtsError(f"cannot start the Piper worker ({o.python}): {e}") from None
        self._buf.clear()
        self._stderr.clear()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, args=(self.proc,), name="piper-stderr", daemon=True)
        self._stderr_thread.start()
        try:
            ready = self._read_header(time.monotonic() + o.start_timeout_s)
        except _WorkerDied:
            raise TtsError(f"the Piper worker for {o.model_id} exited while loading: {self._stderr_tail()}") from None
        except TtsError as e:
            self.stop()
            raise TtsError(f"the Piper worker for {o.model_id} did not start: {e}") from None
        if not ready.get("ready"):
            self.stop()
            raise TtsError(f"the Piper worker could not load {o.model_path}: {ready.get('error', 'unknown error')}")
        if ready.get("protocol") != _PROTOCOL_VERSION:
            self.stop()
            raise TtsError(f"piper_worker speaks protocol {ready.get('protocol')}, this Dauys needs {_PROTOCOL_VERSION}")
        self.info = ready
        log.debug("Piper worker for %s started (pid %s, piper-tts %s)", o.model_id, self.proc.pid, ready.get("piper_version"))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def request(self, text: str, config: SynthesisConfig) -> list[AudioChunk]:
        """Send one request, read its frames until the last; all chunks of it."""
        o = self.owner
        if not self.alive:
            o.check_start_backoff()
            try:
                self.start()
            except TtsError as e:
                o.start_failed(e)
                raise
        rid = f"{os.getpid()}-{next(self._ids)}"
        req: dict = {"id": rid, "text": text}
        for f in ("length_scale", "noise_scale", "noise_w_scale", "volume", "speaker_id"):
            v = getattr(config, f)
            if v is not None:
                req[f] = v
        try:
            self.proc.stdin.write(json.dumps(req, ensure_ascii=False).encode("utf-8") + b"\n")
        except (BrokenPipeError, OSError, ValueError):
            raise _WorkerDied("its input is closed") from None
        deadline = time.monotonic() + o.timeout_s
        chunks: list[AudioChunk] = []
        while True:
            header = self._read_header(deadline)
            n = header.get("bytes", 0)
            if not isinstance(n, int) or not 0 <= n <= _MAX_FRAME:
                self.kill()
                raise TtsError(f"Piper worker protocol error: bad frame size {n!r}")
            payload = self._read_exact(n, deadline)
            if header.get("id") != rid:
                continue  # an answer to an earlier, abandoned request
            if "error" in header:
                raise TtsError(f"Piper ({o.model_id}) could not speak: {header['error']}")
            if n:
                pcm = np.frombuffer(payload, dtype="<i2")
                chunks.append(AudioChunk(int16_to_float(pcm), int(header.get("sample_rate") or o.sample_rate)))
            if header.get("last"):
                return chunks

    # -- framing ---------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        if self.proc is None or self._sel is None:
            raise _WorkerDied("not running")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._sel.select(timeout=remaining):
            self.kill()
            raise TtsError(f"the Piper worker for {self.owner.model_id} did not answer within its timeout; it was stopped")
        data = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not data:
            self.proc.wait(timeout=5)
            raise _WorkerDied(f"exit code {self.proc.returncode}")
        self._buf += data

    def _read_header(self, deadline: float) -> dict:
        while (nl := self._buf.find(b"\n")) < 0:
            if len(self._buf) > _MAX_HEADER:
                self.kill()
                raise TtsError("Piper worker protocol error: header line too long")
            self._fill(deadline)
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        try:
            header = json.loads(line)
            if not isinstance(header, dict):
                raise ValueError("not an object")
        except ValueError:
            self.kill()
            raise TtsError(f"Piper worker protocol error: bad header {line[:80]!r}") from None
        return header

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        try:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._stderr.append(line)
                    log.debug("piper_worker[%s]: %s", proc.pid, line)
        except (OSError, ValueError):
            pass

    def _stderr_tail(self) -> str:
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=2)
        lines = [line for line in self._stderr if line.strip()]
        self.stop()
        return " | ".join(lines[-3:]) if lines else "no message"


def _stop_workers(workers: list[_PiperWorker]) -> None:
    for w in workers:
        try:
            w.stop()
        except Exception:  # pragma: no cover - best effort at exit
            pass


class PiperTts:
    """One Piper voice, spoken by ``python -m piper_worker`` subprocesses (a small pool).

    Each request holds a worker only while one sentence is synthesised and its
    frames are read; the chunks are yielded after the worker is back in the
    pool, so an abandoned generator (barge-in) never holds a worker, and
    generators stepped in a shared bounded thread pool cannot deadlock.
    """

    name = "piper"

    def __init__(
        self,
        model: str | Path,
        config: str | Path | None = None,
        *,
        languages: tuple[str, ...] | list[str] | None = None,
        processes: int = 1,
        timeout_s: float = 30.0,
        start_timeout_s: float = 60.0,
        use_cuda: bool = False,
        python: str | None = None,
    ) -> None:
        self.model_path = Path(model).expanduser()
        if not self.model_path.is_file():
            raise TtsError(f"Piper voice {self.model_path} not found (download voices with: python scripts/fetch_voices.py)")
        self.config_path = Path(config).expanduser() if config else Path(f"{self.model_path}.json")
        if not self.config_path.is_file():
            raise TtsError(f"Piper voice config {self.config_path} not found (a voice is VOICE.onnx + VOICE.onnx.json)")
        try:
            cfg = json.loads(self.config_path.read_text(encoding="utf-8"))
            self.sample_rate = int(cfg["audio"]["sample_rate"])
            self.espeak_voice = str(cfg.get("espeak", {}).get("voice", ""))
            family = cfg.get("language", {}).get("family") or normalize_language(self.espeak_voice or "und")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TtsError(f"Piper voice config {self.config_path} is not valid: {type(e).__name__}: {e}") from None
        self.python = python or sys.executable
        if not piper_available(self.python):
            raise TtsError(f"Piper voices need piper-tts, which is not installed: {PIPER_INSTALL_HINT}")
        self.languages = tuple(normalize_language(x) for x in languages) if languages else (normalize_language(family),)
        stem = self.model_path.name[: -len(".onnx")] if self.model_path.name.endswith(".onnx") else self.model_path.stem
        self.model_id = f"piper:{stem}"
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.use_cuda = use_cuda
        self._workers = [_PiperWorker(self) for _ in range(max(1, processes))]
        self._idle: queue.LifoQueue[_PiperWorker] = queue.LifoQueue()
        for w in self._workers:
            self._idle.put(w)
        self._closed = False
        self._start_failure: tuple[float, str] | None = None
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    def model_id_for(self, language: str) -> str:
        return self.model_id

    START_BACKOFF_S = 10.0
    """After a worker failed to start, requests fail at once for this long (no start storm per sentence)."""

    def start_failed(self, error: TtsError) -> None:
        self._start_failure = (time.monotonic(), str(error))

    def check_start_backoff(self) -> None:
        if self._start_failure is not None and time.monotonic() - self._start_failure[0] < self.START_BACKOFF_S:
            raise TtsError(self._start_failure[1])

    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [p for w in self._workers if (p := w.pid) is not None]

    def start(self) -> None:
        """Start every worker now (load the voice); raises :class:`TtsError` if it cannot."""
        for w in self._take_all():
            try:
                if not w.alive:
                    w.start()
            finally:
                self._idle.put(w)

    def _take_all(self) -> list[_PiperWorker]:
        taken = []
        for _ in self._workers:
            taken.append(self._acquire())
        return taken

    def _acquire(self) -> _PiperWorker:
        if self._closed:
            raise TtsError(f"{self.model_id} is closed")
        try:
            return self._idle.get(timeout=self.timeout_s)
        except queue.Empty:
            raise TtsError(f"all {len(self._workers)} Piper workers for {self.model_id} stayed busy for {self.timeout_s:g} s") from None

    def synthesize_sentence(self, text: str, config: SynthesisConfig | None = None) -> list[AudioChunk]:
        """All chunks for ``text`` (one per sentence Piper finds); restarts a dead worker once."""
        config = config or SynthesisConfig()
        worker = self._acquire()
        try:
            try:
                return worker.request(text, config)
            except _WorkerDied as e:
                log.warning("Piper worker for %s died (%s): restarting it", self.model_id, e)
                worker.stop()
            try:
                return worker.request(text, config)
            except _WorkerDied as e:
                raise TtsError(f"the Piper worker for {self.model_id} died twice ({e}): {worker._stderr_tail()}") from None
        finally:
            self._idle.put(worker)

    def synthesize(self, text: str, language: str | None = None, config: SynthesisConfig | None = None) -> Iterator[AudioChunk]:
        for sentence in split_sentences(text):
            yield from self.synthesize_sentence(sentence, config)

    def warmup(self) -> None:
        self.start()
        self.synthesize_sentence(WARMUP_TEXT.get(self.languages[0], "Test."))

    def close(self) -> None:
        self._closed = True
        self._finalizer()


# --------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------
class Synthesis(Iterator[AudioChunk]):
    """One call's audio, sentence by sentence, and which engine(s) served it.

    A blocking iterator (step it in a worker thread).  If the language's Piper
    voice fails on a sentence, that sentence is spoken by espeak-ng and
    :attr:`model_id` says so ('piper:kk_KZ-issai-high+espeak-ng:kk').
    """

    def __init__(self, router: TtsRouter, text: str, language: str, config: SynthesisConfig) -> None:
        self.language = normalize_language(language)
        self.served: list[str] = []
        """Provenance ids of the engines that spoke, in order of first use."""
        self._router = router
        self._planned = router.model_id_for(self.language)
        self._gen = self._run(text, config)

    @property
    def model_id(self) -> str | None:
        return "+".join(self.served) if self.served else self._planned

    def __iter__(self) -> Synthesis:
        return self

    def __next__(self) -> AudioChunk:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _mark(self, engine: TtsEngine) -> None:
        mid = engine.model_id_for(self.language)
        if mid not in self.served:
            self.served.append(mid)

    def _run(self, text: str, config: SynthesisConfig) -> Iterator[AudioChunk]:
        router, lang = self._router, self.language
        primary = router.engine_for(lang)
        for sentence in split_sentences(text, router.max_sentence_chars):
            engine = primary
            try:
                chunks = list(engine.synthesize(sentence, lang, config))
            except TtsError as e:
                fallback = router.fallback if router.fallback is not None and router.fallback is not engine and lang in router.fallback.languages else None
                if fallback is None:
                    raise
                log.warning("tts: %s failed (%s); speaking this sentence with %s", engine.model_id, e, fallback.model_id_for(lang))
                engine = fallback
                chunks = list(engine.synthesize(sentence, lang, config))
            self._mark(engine)
            yield from chunks


class TtsRouter:
    """Languages -> engines: a Piper voice where one is configured and usable, else espeak-ng."""

    def __init__(
        self,
        engines: Mapping[str, TtsEngine] | None = None,
        fallback: EspeakTts | None = None,
        default_config: SynthesisConfig | None = None,
        max_sentence_chars: int | None = 400,
    ) -> None:
        self.voices: dict[str, TtsEngine] = {normalize_language(k): v for k, v in (engines or {}).items()}
        self.fallback = fallback
        self.default_config = default_config or SynthesisConfig()
        self.max_sentence_chars = max_sentence_chars

    # -- construction ----------------------------------------------------
    @classmethod
    def from_catalog(
        cls,
        voices: Mapping[str, str | Path],
        *,
        fallback: str | None = "espeak-ng",
        length_scale: float | None = None,
        espeak_rate_wpm: int = 160,
        piper_processes: int = 1,
        timeout_s: float = 30.0,
        use_cuda: bool = False,
        start: bool = True,
        max_sentence_chars: int | None = 400,
    ) -> TtsRouter:
        """Build from a voice catalog ``{language: voice}``.

        A voice is the path of a Piper ``.onnx`` (its ``.onnx.json`` beside it),
        or ``"espeak-ng"`` / ``"espeak-ng:VOICE"`` to speak that language with
        espeak-ng (and a chosen espeak voice).  A Piper voice that is missing,
        cannot be loaded, or whose piper-tts is not installed is logged as a
        warning and its language falls back to espeak-ng.  ``start`` loads the
        Piper voices now (so a broken one is found at start-up, not mid-call).
        """
        espeak: EspeakTts | None = None
        if fallback == "espeak-ng" or any(str(v).startswith("espeak-ng") for v in voices.values()):
            try:
                espeak = EspeakTts(rate_wpm=espeak_rate_wpm, timeout_s=timeout_s)
            except TtsError as e:
                log.warning("tts: %s", e)
        elif fallback not in (None, "none"):
            raise TtsError(f"unknown TTS fallback {fallback!r} (use 'espeak-ng' or 'none')")
        engines: dict[str, TtsEngine] = {}
        by_path: dict[Path, PiperTts] = {}
        for language, spec in voices.items():
            lang = normalize_language(language)
            s = str(spec)
            if s.startswith("espeak-ng"):
                if espeak is None:
                    log.warning("tts: %s is configured for %s but espeak-ng is not available", s, lang)
                    continue
                if ":" in s:
                    espeak.add_voice(lang, s.split(":", 1)[1])
                engines[lang] = espeak
                continue
            path = Path(spec).expanduser()
            try:
                engine = by_path.get(path.resolve())
                if engine is None:
                    engine = PiperTts(path, languages=(lang,), processes=piper_processes, timeout_s=timeout_s, use_cuda=use_cuda)
                    if start:
                        engine.start()
                    by_path[path.resolve()] = engine
                else:
                    engine.languages = (*engine.languages, lang)
                engines[lang] = engine
            except TtsError as e:
                where = "it will be spoken by espeak-ng" if espeak is not None and lang in espeak.languages else "it has no voice"
                log.warning("tts: the Piper voice for %s is not usable: %s; %s", lang, e, where)
        return cls(
            engines,
            espeak if fallback == "espeak-ng" else None,
            SynthesisConfig(length_scale=length_scale),
            max_sentence_chars,
        )

    @classmethod
    def from_settings(cls, settings) -> TtsRouter | None:
        """From the ``[tts]`` settings section; None (replies text only) if no engine at all is usable."""
        device = getattr(settings, "device", "auto")
        use_cuda = device == "cuda" or (device == "auto" and _cuda_available())
        router = cls.from_catalog(
            getattr(settings, "voices", {}) or {},
            fallback=getattr(settings, "fallback", "espeak-ng"),
            length_scale=getattr(settings, "length_scale", None),
            espeak_rate_wpm=getattr(settings, "espeak_rate_wpm", 160),
            piper_processes=getattr(settings, "piper_processes", 1),
            timeout_s=getattr(settings, "timeout_s", 30.0),
            use_cuda=use_cuda,
            max_sentence_chars=getattr(settings, "max_sentence_chars", 400),
        )
        if not router.languages:
            log.warning("tts: no speech engine is available (%s): replies will be text only", ESPEAK_INSTALL_HINT)
            router.close()
            return None
        for lang in router.languages:
            log.info("tts: %s -> %s", lang, router.model_id_for(lang))
        return router

    # -- queries ---------------------------------------------------------
    @property
    def languages(self) -> tuple[str, ...]:
        langs = dict.fromkeys(self.voices)
        if self.fallback is not None:
            langs.update(dict.fromkeys(self.fallback.languages))
        return tuple(langs)

    def engines(self) -> list[TtsEngine]:
        """Distinct engines, configured voices first."""
        out: list[TtsEngine] = []
        for e in [*self.voices.values(), *([self.fallback] if self.fallback is not None else [])]:
            if all(e is not x for x in out):
                out.append(e)
        return out

    def engine_for(self, language: str) -> TtsEngine:
        lang = normalize_language(language)
        engine = self.voices.get(lang)
        if engine is not None:
            return engine
        if self.fallback is not None and lang in self.fallback.languages:
            return self.fallback
        raise TtsError(f"no voice for language {language!r} (spoken: {', '.join(self.languages) or 'none'})")

    def model_id_for(self, language: str) -> str | None:
        """The engine/voice that will speak ``language`` (provenance); None if none can."""
        try:
            return self.engine_for(language).model_id_for(normalize_language(language))
        except TtsError:
            return None

    def describe(self) -> list[dict]:
        """Capabilities as data: one entry per language."""
        out = []
        for lang in self.languages:
            e = self.engine_for(lang)
            out.append({"language": lang, "engine": e.name, "model_id": e.model_id_for(lang), "sample_rate": e.sample_rate})
        return out

    # -- speech ----------------------------------------------------------
    def synthesize(self, text: str, language: str, config: SynthesisConfig | None = None) -> Synthesis:
        """Blocking iterator of chunks, sentence by sentence; its ``model_id`` says who spoke."""
        return Synthesis(self, text, language, self.default_config.merged(config))

    def warmup(self, language: str | None = None) -> float:
        """Load every Piper voice and speak a word in ``language``; seconds taken."""
        t = time.perf_counter()
        for e in self.engines():
            try:
                e.warmup()
            except TtsError as err:
                log.warning("tts: warm-up of %s failed: %s", e.model_id, err)
        if language is not None and self.model_id_for(language) is not None:
            try:
                for _ in self.synthesize(WARMUP_TEXT.get(normalize_language(language), "Test."), language):
                    pass
            except TtsError as err:
                log.warning("tts: warm-up in %s failed: %s", language, err)
        return time.perf_counter() - t

    def close(self) -> None:
        for e in self.engines():
            e.close()


def _cuda_available() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except Exception:  # pragma: no cover
        return False
