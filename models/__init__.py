"""Engines and the formats they read, below the pipeline and the server.

Recognition (Whisper on CTranslate2, the batching scheduler, the model registry),
voice activity detection, synthesis (espeak-ng, Piper), the dialogue backends and
their knowledge base, audio types and conversions, fine-tuning and conversion.
Engines are loaded once per process and shared by all sessions; what a call
remembers (its dialogue state, its buffers) lives in :mod:`pipeline`.
Nothing here imports :mod:`pipeline` or :mod:`server` (an import-linter contract
in pyproject.toml, checked by ``make test``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dauys")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
