"""Where things are: the repository, the shared audio clips, the test model cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_AUDIO = Path(os.environ.get("DAUYS_SHARED_AUDIO", ROOT.parent / "shared" / "audio"))
CACHE_DIR = Path(os.environ.get("DAUYS_TEST_CACHE", Path(tempfile.gettempdir()) / "dauys-test-cache"))
