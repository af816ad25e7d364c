"""The models layer: engines loaded once per process and shared by every session.

Whisper (``whisper``) behind the process-wide ASR queue (``scheduler``), Silero VAD
(``vad``), the TTS voices (``tts/``) and the dialogue engines (``dialogue/``); where
weights come from (``registry``); audio types and conversions (``audio``), the one
sentence splitter and normaliser (``text``); redaction and the is-this-host check
(``privacy``, ``net``); and the operator's offline fine-tuning (``finetune/``).
Per-call state passed in from the pipeline (a ``VadStream`` per stream, the
``DialogueState`` of a reply) is the caller's, not kept here.
Nothing here imports :mod:`pipeline` or :mod:`server` (an import-linter contract
in pyproject.toml, checked by ``make test``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dauys")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
