#!/usr/bin/env python3
"""Fine-tune the recogniser you serve on your own recordings, measure it, export it.

One command runs the whole loop (docs/finetuning.md):

1. load the data (a JSONL/CSV manifest or a ``datasets`` directory); rows whose
   rights holder reserved AI training (Law 230-VIII Art. 23, TDMRep-style
   flags) are skipped and counted, bad rows reported;
2. hold out a split (by speaker by default) or take ``--eval MANIFEST``;
3. rebuild a transformers checkpoint from the served CTranslate2 model
   (``--base embedded:whisper-base``, a CTranslate2 directory) or start from a
   transformers checkpoint (``--base HF_DIR``);
4. measure the starting model on the held-out rows (and on ``--also-eval`` sets),
   decoded by the server's own engine after the same CTranslate2 conversion;
5. fine-tune (LoRA merged, or full), resumable, phone-degraded with ``--phone-prob``;
6. export to CTranslate2 (``--quantization int8,float16``) with tokenizer,
   preprocessor files and a model card;
7. measure again, write ``report.json`` and the card's before/after table.

    python scripts/finetune_asr.py data/manifest.jsonl --out runs/kk-phone
    python scripts/finetune_asr.py data/train.jsonl --eval data/test.jsonl --eval-phone --phone-prob 0.8 --out runs/kk-phone

Then serve it: set ``asr.model = "runs/kk-phone/ct2-int8"`` and send the
server SIGHUP (``kill -HUP <pid>``): new calls get the new model, calls in
progress keep theirs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("dauys.finetune")


def _fail(msg: str) -> "SystemExit":
    print(f"finetune_asr: error: {msg}", file=sys.stderr)
    return SystemExit(2)


def resolve_base(base: str, out: Path, settings) -> tuple[Path, str]:
    """(transformers checkpoint dir, description) for ``base``: rebuilt from CTranslate2 when needed."""
    from models.finetune.convert import rebuild_hf_from_ct2
    from models.registry import resolve_asr_model

    p = Path(base)
    if p.is_dir() and (p / "config.json").is_file() and any((p / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        return p, f"transformers checkpoint {p}"
    resolved = resolve_asr_model(base, settings.asr.cache_dir, settings.asr.download)
    target = out / "base-hf"
    stamp = target / "dauys_rebuilt_from.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("source") == str(resolved.path):
        return target, f"{resolved.model_id} (rebuilt from CTranslate2)"
    if target.exists():
        shutil.rmtree(target)
    print(f"rebuilding a transformers checkpoint from {resolved.model_id} ({resolved.path}) ...", flush=True)
    rebuild_hf_from_ct2(resolved.path, target)
    stamp.write_text(json.dumps({"source": str(resolved.path), "model_id": resolved.model_id}))
    return target, f"{resolved.model_id} (rebuilt from CTranslate2)"


def evaluate_all(ct2_dir: Path, eval_sets: dict, settings, *, seed: int, progress: bool, label: str) -> dict[str, dict]:
    """Score ``ct2_dir`` (one engine, loaded once) on every evaluation set; print each table."""
    from models.finetune.evaluate import evaluate_rows, load_engine

    engine = load_engine(str(ct2_dir), settings=settings)
    reports = {}
    for name, (rows, phone, src) in eval_sets.items():
        rep = evaluate_rows(engine, rows, "manifest", progress, settings=settings, degrade_phone=phone, seed=seed, loaded=src)
        reports[name] = rep.to_dict()
        print(f"\n{label}, {name}:\n{rep.table()}", flush=True)
    return reports


def _rel(before: float, after: float) -> str:
    if before <= 0:
        return "n/a"
    return f"{100 * (after - before) / before:+.1f}%"


def comparison_table(before: dict, after: dict) -> str:
    lines = [f"{'set':<22}{'language':<10}{'n':>5}{'CER before':>12}{'CER after':>11}{'rel.':>9}{'WER before':>12}{'WER after':>11}"]
    for name in before:
        b, a = before[name], after[name]
        for lang in list(b["by_language"]) + ["overall"]:
            bb = b["overall"] if lang == "overall" else b["by_language"][lang]
            aa = a["overall"] if lang == "overall" else a["by_language"][lang]
            lines.append(
                f"{name:<22}{lang:<10}{bb['n']:>5}{100 * bb['cer']:>11.1f}%{100 * aa['cer']:>10.1f}%{_rel(bb['cer'], aa['cer']):>9}"
                f"{100 * bb['wer']:>11.1f}%{100 * aa['wer']:>10.1f}%"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("data", help="training manifest (JSONL/CSV) or datasets directory")
    p.add_argument("--out", type=Path, required=True, help="run directory (re-running it resumes)")
    p.add_argument("--base", default=None, help="served model to start from (default: the server's asr.model), or a transformers checkpoint dir")
    p.add_argument("--config", help="the server's config file (device, decoding options, languages)")
    p.add_argument("--eval", dest="eval_data", help="held-out manifest/datasets dir (default: hold out --holdout of the data)")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction held out when --eval is not given")
    p.add_argument("--split-by", choices=["speaker", "text", "row"], default="speaker")
    p.add_argument("--also-eval", action="append", default=[], help="another manifest measured before and after (e.g. real calls); repeatable")
    p.add_argument("--eval-phone", action="store_true", help="phone-degrade the held-out audio before decoding")
    p.add_argument("--languages", help="accepted languages, comma-separated (default: all Whisper languages)")
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--method", choices=["lora", "full"], default="lora")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.0, help="learning rate (default 1e-3 LoRA, 1e-5 full)")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--freeze-encoder", action="store_true")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--phone-prob", type=float, default=0.0, help="probability of phone degradation per training example and epoch")
    p.add_argument("--window-s", type=float, default=0.0, help="encoder window in training (default: the server's rule on this device: 30 s on CUDA, max(10 s, duration + 1 s) on CPU); use 30 to train on a CPU for GPU serving")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quantization", default="int8", help="CTranslate2 exports, comma-separated: int8, float16, int8_float16, float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-before", action="store_true", help="do not measure the starting model")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    progress = not a.no_progress

    from models.finetune.data import load_rows, split_rows
    from server.config import settings_for

    try:
        settings = settings_for(a.base if a.base and not Path(a.base).is_dir() else None, config_file=a.config)
    except Exception as e:  # ConfigError: one line
        raise _fail(str(e)) from None
    quants = [q.strip() for q in a.quantization.split(",") if q.strip()]
    languages = [x.strip() for x in a.languages.split(",")] if a.languages else None
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1-2. data
    try:
        loaded = load_rows(a.data, languages=languages, max_seconds=a.max_seconds)
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from None
    print(loaded.summary(), flush=True)
    for bad in loaded.bad[:20]:
        print(f"  bad row {bad.id}: {bad.reason} {bad.detail}", file=sys.stderr)
    if a.eval_data:
        train_rows = loaded.rows
        ev = load_rows(a.eval_data, languages=languages, max_seconds=a.max_seconds)
        print(f"held-out: {ev.summary()}", flush=True)
        eval_rows = ev.rows
    else:
        train_rows, eval_rows = split_rows(loaded.rows, a.holdout, a.seed, by=a.split_by)
        ev = None
    if not train_rows:
        raise _fail("no usable training rows")
    if not eval_rows:
        raise _fail("no held-out rows: give --eval or a larger --holdout")
    extra = {}
    for path in a.also_eval:
        extra[Path(path).stem if Path(path).name != "manifest.jsonl" else Path(path).parent.name] = load_rows(path, languages=languages, max_seconds=a.max_seconds)
    print(f"train {len(train_rows)} rows ({sum(r.duration for r in train_rows) / 3600:.2f} h), held out {len(eval_rows)}", flush=True)

    # 3. base
    from models.finetune.convert import CARD_JSON, export_ct2, write_model_card
    from models.finetune.train import pick_device

    try:
        base_dir, base_desc = resolve_base(a.base or settings.asr.model, out, settings)
    except Exception as e:
        raise _fail(f"cannot prepare the base model: {e}") from None
    eval_sets = {"held-out": (eval_rows, a.eval_phone, ev)} | {name: (res.rows, False, res) for name, res in extra.items()}

    # 4. before
    before: dict[str, dict] = {}
    base_ct2 = out / "base-ct2-int8"
    if not a.skip_before:
        # a resumed run reuses the starting model's scores measured on the same rows
        key = {"base": base_desc, "sets": {n: [r.id for r in rows] for n, (rows, _, _) in eval_sets.items()}, "phone": a.eval_phone, "seed": a.seed}
        cached = out / "before.json"
        if cached.is_file() and json.loads(cached.read_text(encoding="utf-8")).get("key") == key:
            before = json.loads(cached.read_text(encoding="utf-8"))["before"]
            print("starting model's scores: measured earlier in this run directory", flush=True)
        else:
            if not (base_ct2 / "model.bin").is_file():
                export_ct2(base_dir, base_ct2, quantization="int8")
            before = evaluate_all(base_ct2, eval_sets, settings, seed=a.seed, progress=progress, label="before")
            cached.write_text(json.dumps({"key": key, "before": before}, ensure_ascii=False), encoding="utf-8")

    # 5. fine-tune
    from models.finetune.train import TrainConfig, train

    cfg = TrainConfig(
        base=base_dir, output_dir=out / "train", method=a.method, epochs=a.epochs, max_steps=a.max_steps,
        batch_size=a.batch_size, grad_accum=a.grad_accum, learning_rate=a.lr, warmup_steps=a.warmup_steps,
        freeze_encoder=a.freeze_encoder, lora_r=a.lora_r, lora_alpha=a.lora_alpha, phone_prob=a.phone_prob,
        save_every=a.save_every, seed=a.seed, window_s=a.window_s, device=a.device, num_threads=a.threads,
    )
    result = train(cfg, train_rows, progress=progress)
    print(f"trained {result.steps} steps ({result.epochs_done} epochs) in {result.seconds / 60:.1f} min; loss {result.first_loss:.3f} -> {result.final_loss:.3f}", flush=True)

    # 6-7. export, after
    exports = {}
    for q in quants:
        exports[q] = export_ct2(result.model_dir, out / f"ct2-{q.replace('_', '-')}", quantization=q)
    measured = exports.get("int8") or next(iter(exports.values()))
    after = evaluate_all(measured, eval_sets, settings, seed=a.seed, progress=progress, label="after")

    heldout_eval = {}
    if before:
        b, af = before["held-out"], after["held-out"]
        for lang in list(af["by_language"]) + ["overall"]:
            bb = b["overall"] if lang == "overall" else b["by_language"].get(lang)
            aa = af["overall"] if lang == "overall" else af["by_language"][lang]
            if bb:
                heldout_eval[lang] = {"n": aa["n"], "wer_before": bb["wer"], "wer_after": aa["wer"], "cer_before": bb["cer"], "cer_after": aa["cer"]}
    card = {
        "name": out.name,
        "base_model": base_desc,
        "languages": sorted({r.language for r in train_rows}),
        "data": {
            "source": str(a.data),
            "rows": len(train_rows),
            "hours": round(sum(r.duration for r in train_rows) / 3600, 4),
            "opt_outs_skipped": loaded.skipped_optout.count + (ev.skipped_optout.count if ev else 0),
            "bad_rows": len(loaded.bad) + (len(ev.bad) if ev else 0),
            "phone_degraded_training": a.phone_prob,
        },
        "eval_split": (a.eval_data or f"{a.holdout:.0%} of the data held out, split by {a.split_by}") + (", phone-degraded" if a.eval_phone else ""),
        "evaluation": heldout_eval,
        "training": {"method": a.method, "learning_rate": cfg.lr(), "batch_size": a.batch_size, "epochs": a.epochs, "steps": result.steps,
                     "freeze_encoder": a.freeze_encoder, "phone_prob": a.phone_prob, "loss_first": round(result.first_loss, 4),
                     "loss_last": round(result.final_loss, 4), "minutes": round(result.seconds / 60, 1), "device": pick_device(a.device)},
    }
    for q, d in exports.items():
        meta = json.loads((d / CARD_JSON).read_text(encoding="utf-8"))
        write_model_card(d, {**card, "quantization": q, "versions": meta.get("versions", {}), "other_sets": {k: {"before": before.get(k, {}).get("overall"), "after": after[k]["overall"]} for k in after if k != "held-out"}})
    card["full_reports"] = {"before": before, "after": after}
    (out / "report.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    if before:
        print("\n" + comparison_table(before, after))
    print(f"\ndone in {(time.perf_counter() - t_start) / 60:.1f} min: {', '.join(str(d) for d in exports.values())}; report {out / 'report.json'}")
    print(f'serve it: asr.model = "{measured}" in the config, then `kill -HUP <dauys pid>`')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
