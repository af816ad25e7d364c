#!/usr/bin/env python3
"""Export a transformers Whisper checkpoint (a fine-tune) to a CTranslate2 directory the server serves.

    .venv/bin/python scripts/export_ct2.py runs/ft/model runs/ft/ct2
    .venv/bin/python scripts/export_ct2.py runs/ft/model runs/ft/ct2-gpu --quantization float16 --card card.json

OUT_DIR gets model.bin, config.json, vocabulary.json, tokenizer.json and
preprocessor_config.json (faster-whisper reads the tokenizer and the mel
count from the last two), and a model card: README.md and
dauys_model_card.json, from ``--card`` (a JSON object: base_model, data
{rows, hours, opt_outs_skipped, bad_rows}, evaluation {lang: {n, wer_before,
wer_after, cer_before, cer_after}}, training {...}; see docs/finetuning.md).
The result is loaded with faster-whisper and checked like the server checks
``asr.model`` before OUT_DIR is replaced.  Serve it with
``asr.model = "OUT_DIR"`` (a SIGHUP switches a running server).  Exit status 2
with one line on stderr on a bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere: import the project's own modules


def parse_args(argv=None) -> argparse.Namespace:
    from models.finetune.convert import QUANTIZATIONS

    p = argparse.ArgumentParser(description="Export a transformers Whisper checkpoint to CTranslate2 for the Dauys server.")
    p.add_argument("hf_dir", help="the transformers checkpoint (config.json, model.safetensors, tokenizer)")
    p.add_argument("out_dir", help="the CTranslate2 directory to write (replaced if it exists)")
    p.add_argument("--quantization", default="int8", choices=QUANTIZATIONS,
                   help="int8 for CPU serving (default), float16 or int8_float16 for CUDA, float32 to keep full precision")
    p.add_argument("--card", metavar="JSON", help="the model card's facts as a JSON object (file)")
    p.add_argument("--no-verify", action="store_true", help="skip loading the result with faster-whisper")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from models.errors import ModelError
    from models.finetune.convert import export_ct2

    card = None
    if args.card:
        try:
            card = json.loads(Path(args.card).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"export_ct2: --card {args.card}: {e}", file=sys.stderr)
            return 2
        if not isinstance(card, dict):
            print(f"export_ct2: --card {args.card}: not a JSON object", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    try:
        out = export_ct2(args.hf_dir, args.out_dir, args.quantization, card, verify=not args.no_verify)
    except (ModelError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"export_ct2: {first}", file=sys.stderr)
        return 2
    print(f"exported {args.hf_dir} to {out} ({args.quantization}, {time.perf_counter() - t0:.1f} s); serve it with asr.model = \"{out}\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
