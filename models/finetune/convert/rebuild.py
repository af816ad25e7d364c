"""CTranslate2 -> transformers: the served Whisper rebuilt as a checkpoint to fine-tune."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from models.finetune.convert.format import Ct2FormatError, hf_state_dict, read_ct2_model
from models.finetune.convert.processor import generation_config_for, load_tokenizer, save_processor, whisper_token_ids
from models.registry import _sha256  # the same file digest the registry records

log = logging.getLogger("dauys.finetune")


REBUILT_JSON = "dauys_rebuilt_from.json"


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def rebuild_hf_from_ct2(ct2_dir: str | Path, out_dir: str | Path, *, source: str = "") -> Path:
    """Write ``out_dir``: a transformers Whisper checkpoint equal to the CTranslate2 model in ``ct2_dir``.

    Weights are float32 (float16 weights widen exactly; int8 ones are
    dequantized, so they carry int8's rounding).  ``out_dir`` is replaced as
    a whole once everything is written.  ``source`` is what provenance
    records (default: the directory).
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    tokenizer_json = ct2_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{ct2_dir} has no tokenizer.json; a served Whisper directory needs one")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8")) if (ct2_dir / "config.json").is_file() else {}
    model_ct2 = read_ct2_model(ct2_dir / "model.bin")
    sd, facts = hf_state_dict(model_ct2)
    stored = sorted({model_ct2.dtypes[n] for n, v in model_ct2.variables.items() if v.ndim >= 2})

    tokenizer = load_tokenizer(tokenizer_json)
    if len(tokenizer) != facts["vocab_size"]:
        raise Ct2FormatError(
            f"tokenizer.json has {len(tokenizer)} tokens but the model's embeddings have {facts['vocab_size']} rows"
        )
    ids = whisper_token_ids(tokenizer)
    gen = generation_config_for(
        tokenizer, ct2_config, vocab_size=facts["vocab_size"], max_target_positions=facts["max_target_positions"],
        decoder_layers=facts["decoder_layers"], decoder_heads=facts["decoder_attention_heads"],
    )
    config = WhisperConfig(
        **facts,
        activation_function="gelu",
        scale_embedding=False,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        decoder_start_token_id=ids["sot"],
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        # Decoding settings live in generation_config.json only: duplicated in
        # config.json, transformers 5 warns on every generate() call.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        use_cache=True,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    result = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (facts["tie_word_embeddings"] and k == "proj_out.weight")]
    if missing or result.unexpected_keys:
        raise Ct2FormatError(f"rebuilt weights do not fit WhisperForConditionalGeneration: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if facts["tie_word_embeddings"]:
        model.tie_weights()
    model.generation_config = gen
    model.eval()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        save_processor(tmp, tokenizer, facts["num_mel_bins"])
        # The served tokenizer.json byte for byte: the export copies it back unchanged.
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
        (tmp / REBUILT_JSON).write_text(json.dumps({
            "source": source or str(ct2_dir),
            "model_bin_sha256": _sha256(ct2_dir / "model.bin"),
            "spec": model_ct2.spec,
            "spec_revision": model_ct2.revision,
            "binary_version": model_ct2.binary_version,
            "stored_dtypes": stored,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("rebuilt %s (%s) as a transformers checkpoint in %s", ct2_dir, "/".join(stored), out_dir)
    return out_dir
