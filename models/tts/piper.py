"""Piper voices, out of process: a client of ``python -m piper_worker``.

A :class:`PiperTts` speaks a Piper voice (``VOICE.onnx`` + ``VOICE.onnx.json``)
through ``python -m piper_worker``, a separate GPL-3.0 program (see
``piper_worker/README.md``): Piper is GPL-3.0 and Dauys is Apache-2.0, so this
module never imports ``piper``; it exchanges JSON lines and PCM bytes with a
persistent worker process per voice (a small pool), restarts a worker that
died, and bounds every request with a timeout.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path

import numpy as np

from models.audio import AudioChunk, int16_to_float
from models.text import normalize_language
from models.tts.base import WARMUP_TEXT, SentenceEngine, SynthesisConfig, TtsError

log = logging.getLogger("dauys.tts")

PIPER_INSTALL_HINT = "pip install piper-tts (the 'tts' extra: pip install 'dauys[tts]')"

_PROTOCOL_VERSION = 1
_MAX_HEADER = 64 * 1024
_MAX_FRAME = 64 * 1024 * 1024
_WORKER_ROOT = Path(__file__).resolve().parents[2] / "piper-worker"
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
            raise TtsError(f"the Piper worker for {o.model_id} exited while loading: {self.stderr_tail()}") from None
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
            if self.info:  # it ran before: it died, or was stopped after a timeout
                o.restarts += 1
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

    def stderr_tail(self) -> str:
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


class PiperTts(SentenceEngine):
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
        self.restarts = 0
        """Worker processes restarted after dying or being stopped (a timeout, a protocol error)."""
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

    def synthesize_sentence(self, text: str, language: str | None = None, config: SynthesisConfig | None = None) -> list[AudioChunk]:
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
                raise TtsError(f"the Piper worker for {self.model_id} died twice ({e}): {worker.stderr_tail()}") from None
        finally:
            self._idle.put(worker)

    def warmup(self) -> None:
        self.start()
        self.synthesize_sentence(WARMUP_TEXT.get(self.languages[0], "Test."))

    def close(self) -> None:
        self._closed = True
        self._finalizer()
