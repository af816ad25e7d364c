"""What every bench shares: where the project is, the shared clips, the error that ends a run, progress lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere: import the project's own modules

DEFAULT_AUDIO = Path(os.environ.get("DAUYS_SHARED_AUDIO", ROOT.parent / "shared" / "audio"))
"""The shared clips (``manifest.jsonl`` + audio files); ``DAUYS_SHARED_AUDIO`` moves them."""


class BenchError(Exception):
    """A failure that ends the benchmark with a message and a non-zero exit."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def say(msg: str) -> None:
    """Progress goes to stderr, so --json output stays clean."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)
