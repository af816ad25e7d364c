"""Silero VAD v6 (the ONNX file that ships inside faster-whisper), streamed.

The ONNX session is shared by all streams (onnxruntime's ``run`` is
thread-safe); each stream keeps its own LSTM state and 64-sample context in a
:class:`VadStream`, so feeding audio window by window gives exactly what the
offline ``faster_whisper.vad`` computes over the whole signal.
"""

from __future__ import annotations

import os

import numpy as np

from models.errors import ModelError

WINDOW = 512
"""Samples per VAD decision at 16 kHz (32 ms)."""
CONTEXT = 64
RATE = 16000


def silero_path() -> str:
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class SileroVad:
    """The shared model."""

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        path = path or silero_path()
        if not os.path.isfile(path):
            raise ModelError(f"Silero VAD model not found at {path}: reinstall faster-whisper (`pip install --force-reinstall faster-whisper`)")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)
        except Exception as e:  # a damaged file, an onnxruntime that cannot run it: one line, not a traceback
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelError(
                f"Silero VAD model {path} could not be loaded ({detail}): reinstall faster-whisper (`pip install --force-reinstall faster-whisper`)"
            ) from None

    def stream(self) -> "VadStream":
        return VadStream(self)


class VadStream:
    """Per-stream state: feed any amount of 16 kHz float32 audio, get one probability per 512-sample window."""

    def __init__(self, model: SileroVad) -> None:
        self.model = model
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every complete window now available (carries the remainder)."""
        x = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(x) // WINDOW
        self._pending = x[n * WINDOW:]
        if n == 0:
            return np.zeros(0, np.float32)
        windows = x[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        batch = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1))
        probs, self._h, self._c = self.model.session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -CONTEXT:].copy()
        return probs.reshape(-1).astype(np.float32)
