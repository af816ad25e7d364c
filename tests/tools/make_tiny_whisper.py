"""Test tooling: a tiny randomly initialised Whisper with the real multilingual tokenizer.

It exports, loads in faster-whisper and in the server's ``WhisperEngine`` in
about a second, so the fine-tuning loop is tested end to end in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.finetune.convert import generation_config_for, load_tokenizer, save_processor, whisper_token_ids


def make_tiny_whisper(
    out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int = 0, d_model: int = 64, n_mels: int = 80, dropout: float = 0.0
) -> Path:
    """A randomly initialised 1+1-layer Whisper with the real multilingual tokenizer, saved as a checkpoint.

    ``tokenizer_dir`` holds Whisper's ``tokenizer.json`` (the served model's
    directory will do; a ``config.json`` there supplies suppress ids and
    language ids).  The result has the same files as a rebuilt checkpoint,
    so it trains, exports and serves like one, in seconds on a CPU.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir / "tokenizer.json")
    ids = whisper_token_ids(tokenizer)
    ct2_config = {}
    if (tokenizer_dir / "config.json").is_file():
        ct2_config = json.loads((tokenizer_dir / "config.json").read_text(encoding="utf-8"))
        ct2_config.pop("alignment_heads", None)  # the base model's heads do not exist in one layer
    cfg = WhisperConfig(
        d_model=d_model, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=4,
        encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, vocab_size=len(tokenizer), num_mel_bins=n_mels,
        max_source_positions=1500, max_target_positions=448, dropout=dropout,
        decoder_start_token_id=ids["sot"], pad_token_id=ids["eot"], eos_token_id=ids["eot"], bos_token_id=ids["eot"],
        suppress_tokens=None, begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = generation_config_for(
        tokenizer, ct2_config, vocab_size=cfg.vocab_size, max_target_positions=cfg.max_target_positions,
        decoder_layers=cfg.decoder_layers, decoder_heads=cfg.decoder_attention_heads,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_processor(out_dir, tokenizer, cfg.num_mel_bins)
    shutil.copyfile(tokenizer_dir / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir
