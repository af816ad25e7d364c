#!/usr/bin/env python3
"""WER/CER of the server's recogniser on a manifest or datasets directory, per language.

    .venv/bin/python scripts/evaluate_asr.py ../shared/audio/manifest.jsonl
    .venv/bin/python scripts/evaluate_asr.py data/calls.jsonl --model runs/ft/ct2 --json eval.json --worst 10
    .venv/bin/python scripts/evaluate_asr.py data/hf_dir --language-mode auto --degrade-phone

Every row is decoded with the engine and settings ``dauys serve`` would use
(``--config`` and ``DAUYS_*`` variables are read the same way; ``--model``
replaces ``asr.model``).  ``manifest`` mode forces each row's language (a
session started with that language); ``auto`` detects it among
``asr.languages`` with the configured prior.  Text is normalised with
``models.finetune.textnorm`` before scoring.  Prints a per-language table
(n, audio seconds, WER, CER, real-time factor, rejected decodes), overall,
then the ``--worst`` rows by CER; ``--json`` writes all of it, with every
utterance, the opted-out rows and the bad rows.  The progress bar goes to
stderr.  Exit status 2 with one line on stderr for a bad setting, a missing
model or manifest, or no usable rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere: import the project's own modules


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate the server's ASR on a manifest (JSONL/CSV) or a datasets directory.")
    p.add_argument("manifest", help="JSONL/JSON/CSV/TSV manifest, or a datasets save_to_disk directory")
    p.add_argument("--model", help="replaces asr.model (a CTranslate2 directory, embedded:whisper-base, a size or hub id)")
    p.add_argument("--config", help="the server's TOML configuration")
    p.add_argument("--language-mode", choices=["manifest", "auto"], default="manifest",
                   help="manifest: force each row's language; auto: detect among asr.languages (default manifest)")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON to OUT ('-' for stdout)")
    p.add_argument("--worst", type=int, default=5, metavar="N", help="show the N worst rows by CER (default 5)")
    p.add_argument("--degrade-phone", action="store_true", help="run each clip through 8 kHz mu-law phone degradation first")
    p.add_argument("--seed", type=int, default=0, help="seed of --degrade-phone (default 0)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N usable rows")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longer rows are reported as bad (default 30)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from models.errors import ModelError
    from models.finetune.data import load_rows
    from models.finetune.evaluate import evaluate_rows, load_engine
    from server.config import ConfigError, settings_for

    try:
        settings = settings_for(args.model, config_file=args.config)
    except ConfigError as e:
        print(str(e).splitlines()[0] if str(e) else "config error", file=sys.stderr)
        return 2
    try:
        loaded = load_rows(args.manifest, languages=settings.asr.languages, max_seconds=args.max_seconds)
    except (OSError, ValueError) as e:
        print(f"evaluate_asr: {e}", file=sys.stderr)
        return 2
    print(f"{args.manifest}: {loaded.summary()}", file=sys.stderr)
    for b in loaded.bad:
        print(f"  bad row {b.id} ({b.source}): {b.reason} {b.detail}", file=sys.stderr)
    rows = loaded.rows[: args.limit] if args.limit else loaded.rows
    if not rows:
        print(f"evaluate_asr: no usable rows in {args.manifest}", file=sys.stderr)
        return 2
    try:
        engine = load_engine(settings=settings)
    except ModelError as e:
        print(f"evaluate_asr: {e}", file=sys.stderr)
        return 2
    report = evaluate_rows(
        engine, rows, args.language_mode, progress=not args.no_progress,
        settings=settings, degrade_phone=args.degrade_phone, seed=args.seed, loaded=loaded,
    )
    text = report.table(worst=args.worst)
    if args.json == "-":
        print(text, file=sys.stderr)
        json.dump(report.to_dict(worst=args.worst), sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_dict(worst=args.worst), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
