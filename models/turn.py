"""A learned end-of-turn model: has the caller finished, or only paused? (``vad.turn_model``)

The supported model is Pipecat's Smart Turn v3 (BSD-2-Clause, ``pipecat-ai/smart-turn-v3`` on the
Hugging Face hub: ``smart-turn-v3.2-cpu.onnx``, ~8 MB int8; a Whisper-tiny encoder and a
classifier trained on 23 languages including Russian and Turkish, not Kazakh). It hears how the
turn ends (intonation, a trailing word cut short) where the words of a slow CPU decode come too
late or read wrong. Its input, as its authors prepare it: the last 8 s of 16 kHz audio (zeros in
front when shorter), normalised to zero mean and unit variance, as an 80-bin Whisper log-mel
spectrogram of 800 frames, ``input_features`` [1, 80, 800]; its output is the probability that
the turn is complete. No model hub is reachable on these servers: fetch the file on a connected
machine (README, *Endpointing*) and set ``vad.turn_model`` to its path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.errors import ModelError

RATE = 16000
WINDOW_S = 8
FRAMES = 800
"""Mel frames of the 8 s window (10 ms hop)."""


class TurnModel:
    """One ONNX session shared by every call (onnxruntime's ``run`` is thread-safe)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelError(f"vad.turn_model: {path} does not exist (fetch smart-turn-v3.2-cpu.onnx on a connected machine: README, Endpointing)")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 4
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)
        except Exception as e:
            raise ModelError(f"vad.turn_model: {path} is not a loadable ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape)[1:] != [80, FRAMES]:
            shape = [list(i.shape) for i in inputs]
            raise ModelError(f"vad.turn_model: {path} takes {shape}, not one input [batch, 80, {FRAMES}] (a Smart Turn v3 model)")
        self.input_name = inputs[0].name
        self.model_id = f"turn:{path.stem}"
        self._extractor = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)

    @staticmethod
    def window(audio: np.ndarray) -> np.ndarray:
        """The last 8 s of ``audio`` (16 kHz), zeros in front when shorter, normalised to zero mean
        and unit variance."""
        x = np.zeros(WINDOW_S * RATE, np.float32)
        tail = np.asarray(audio, np.float32)[-WINDOW_S * RATE :]
        if len(tail):
            x[-len(tail) :] = tail
        return (x - x.mean()) / np.sqrt(x.var() + 1e-7)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``input_features`` [1, 80, 800] of ``audio``."""
        mel = self._extractor(self.window(audio), padding=0)[:, :FRAMES]
        return mel[np.newaxis].astype(np.float32)

    def complete(self, audio: np.ndarray) -> float:
        """Probability that the turn ending with ``audio`` (16 kHz float32) is complete."""
        out = self.session.run(None, {self.input_name: self.features(audio)})[0]
        return float(np.asarray(out).reshape(-1)[0])


def load_turn_model(path: str | os.PathLike | None) -> TurnModel | None:
    return None if not path else TurnModel(path)
