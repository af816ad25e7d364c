#!/usr/bin/env python3
"""Download models on a connected machine into Dauys's cache (then copy the cache to offline servers).

Prefer `dauys models pull <id>` for the models of the catalog (pinned revisions, licence checks,
conversion, sha256 manifests) and `dauys models pack` / `unpack` to carry them (README, "Choosing a model");
this script fetches faster-whisper size names and arbitrary hub ids into the hub cache.

    python scripts/fetch_models.py --asr small --asr large-v3
    python scripts/fetch_models.py --asr Systran/faster-whisper-medium --cache-dir /srv/dauys-cache

The server finds them when ``asr.model`` names the same size or id and
``asr.cache_dir`` points at the same cache (``asr.download = false`` keeps it
offline).  The embedded default (whisper-base) needs no download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from server.config import load_settings

    default_cache = load_settings(environ={}).asr.cache_dir
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr", action="append", default=[], help="faster-whisper size name or Hugging Face id (repeatable)")
    p.add_argument("--cache-dir", type=Path, default=default_cache)
    args = p.parse_args(argv)
    if not args.asr:
        p.error("nothing to fetch: give --asr NAME")
    from models.errors import ModelError
    from models.registry import resolve_asr_model

    status = 0
    for name in args.asr:
        try:
            resolved = resolve_asr_model(name, args.cache_dir, download=True)
            print(f"{name}: {resolved.path}")
        except ModelError as e:
            print(f"{name}: error: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
