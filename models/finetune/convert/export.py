"""transformers -> CTranslate2: a fine-tuned checkpoint exported as a directory the server serves."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

from models.finetune.convert.card import CARD_JSON, write_model_card
from models.finetune.convert.processor import feature_extractor_for
from models.finetune.convert.rebuild import REBUILT_JSON, _replace_dir

log = logging.getLogger("dauys.finetune")


QUANTIZATIONS = ("int8", "float16", "int8_float16", "float32")
"""What :func:`export_ct2` documents (any type CTranslate2 accepts also works)."""


def _base_model_of(hf_dir: Path) -> str:
    rebuilt = hf_dir / REBUILT_JSON
    if rebuilt.is_file():
        try:
            return json.loads(rebuilt.read_text(encoding="utf-8")).get("source", "")
        except ValueError:
            pass
    try:
        return json.loads((hf_dir / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "") or hf_dir.name
    except (OSError, ValueError):
        return hf_dir.name


def export_ct2(
    hf_dir: str | Path,
    out_dir: str | Path,
    quantization: str = "int8",
    card: Mapping[str, Any] | None = None,
    *,
    verify: bool = True,
) -> Path:
    """Convert a transformers Whisper checkpoint to a CTranslate2 directory the server serves.

    ``out_dir`` gets ``model.bin``, ``config.json``, ``vocabulary.json``,
    ``tokenizer.json`` and ``preprocessor_config.json`` (written from the
    model's ``num_mel_bins`` when the checkpoint lacks one), and the model
    card: ``README.md`` + ``dauys_model_card.json`` from ``card``, a dict
    with ``base_model``, ``data`` {rows, hours or audio_s, opt_outs_skipped,
    bad_rows, source}, ``evaluation`` {lang: {n, wer_before, wer_after,
    cer_before, cer_after}}, ``eval_split``, ``training`` {settings},
    ``languages``, ``name``; ``date``, the quantization and the library
    versions are added.  ``out_dir`` is replaced only once the new model is
    complete.  With ``verify``, the result is loaded with faster-whisper (its
    mel count checked against the model's) and passed through the server's
    ``models.registry.check_local_dir``.
    """
    import ctranslate2
    import transformers
    from ctranslate2.converters import TransformersConverter

    from models.registry import check_local_dir

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    accepted = getattr(ctranslate2.specs.model_spec, "ACCEPTED_MODEL_TYPES", QUANTIZATIONS)
    if quantization not in accepted:
        raise ValueError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} is not a transformers checkpoint (no config.json)")
    hf_config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    if hf_config.get("model_type") != "whisper":
        raise ValueError(f"{hf_dir} holds a {hf_config.get('model_type')!r} model, not Whisper")
    n_mels = int(hf_config.get("num_mel_bins", 80))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (hf_dir / f).is_file()]
    try:
        TransformersConverter(str(hf_dir), copy_files=copy).convert(str(tmp), quantization=quantization, force=True)
        if not (tmp / "tokenizer.json").is_file():
            # A checkpoint saved with vocab.json/merges.txt only: let transformers write tokenizer.json.
            from transformers import WhisperTokenizerFast

            WhisperTokenizerFast.from_pretrained(str(hf_dir)).backend_tokenizer.save(str(tmp / "tokenizer.json"))
        pre = tmp / "preprocessor_config.json"
        if pre.is_file():
            got = json.loads(pre.read_text(encoding="utf-8")).get("feature_size")
            if got != n_mels:
                raise ValueError(f"{hf_dir}/preprocessor_config.json has feature_size {got}, the model takes {n_mels} mel bins")
        else:
            feature_extractor_for(n_mels).save_pretrained(str(tmp))
        full = dict(card or {})
        full.setdefault("base_model", _base_model_of(hf_dir))
        full["quantization"] = quantization
        full.setdefault("date", _dt.date.today().isoformat())
        full["versions"] = {"ctranslate2": ctranslate2.__version__, "transformers": transformers.__version__, **dict(full.get("versions") or {})}
        write_model_card(tmp, full)
        if verify:
            verify_ct2_dir(tmp, n_mels)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_local_dir(out_dir)
    log.info("exported %s to %s (%s)", hf_dir, out_dir, quantization)
    return out_dir


def verify_ct2_dir(ct2_dir: str | Path, n_mels: int | None = None) -> None:
    """Load ``ct2_dir`` with faster-whisper on the CPU and the registry's check; raise if it would not serve."""
    from faster_whisper import WhisperModel

    from models.registry import check_local_dir

    ct2_dir = Path(ct2_dir)
    check_local_dir(ct2_dir)
    stored = json.loads((ct2_dir / CARD_JSON).read_text(encoding="utf-8")).get("quantization", "") if (ct2_dir / CARD_JSON).is_file() else ""
    compute = "int8" if "int8" in stored else "float32"  # what a CPU computes either way, without a warning
    wm = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute, cpu_threads=1)
    try:
        got = wm.feature_extractor.mel_filters.shape[0]
        want = n_mels if n_mels is not None else wm.model.n_mels
        if got != want or wm.model.n_mels != want:
            raise ValueError(f"{ct2_dir}: faster-whisper computes {got} mel bins, the model takes {wm.model.n_mels}")
        if wm.hf_tokenizer.get_vocab_size() != len(json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))):
            raise ValueError(f"{ct2_dir}: tokenizer.json and vocabulary.json disagree on the vocabulary size")
    finally:
        del wm
