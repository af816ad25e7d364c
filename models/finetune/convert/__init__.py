"""Between the served CTranslate2 Whisper and a transformers checkpoint, both ways.

* :func:`rebuild_hf_from_ct2` reads a CTranslate2 ``model.bin`` (the embedded
  whisper-base, or any faster-whisper model directory) and writes a
  ``WhisperForConditionalGeneration`` checkpoint with its tokenizer, feature
  extractor and generation config, ready for :mod:`models.finetune.train`.
  No hub download: the served model is the base.
* :func:`export_ct2` converts a transformers Whisper checkpoint (a fine-tune)
  back to CTranslate2 with ``tokenizer.json`` and ``preprocessor_config.json``
  beside ``model.bin`` (faster-whisper reads the tokenizer and ``n_mels`` from
  them), writes a model card, and checks that faster-whisper and the server's
  model registry accept the directory.

Modules: :mod:`.format` (reading ``model.bin``, the names mapping),
:mod:`.processor` (tokenizer, feature extractor, generation config),
:mod:`.rebuild`, :mod:`.export`, :mod:`.card` (the model card).
A tiny random Whisper for tests is test tooling: ``tests/tools/make_tiny_whisper.py``.
"""

from __future__ import annotations

from models.finetune.convert.card import (
    AI_NOTE,
    CARD_JSON,
    model_card,
    write_model_card,
)
from models.finetune.convert.export import QUANTIZATIONS, export_ct2, verify_ct2_dir
from models.finetune.convert.format import (
    Ct2FormatError,
    Ct2Model,
    hf_state_dict,
    read_ct2_model,
)
from models.finetune.convert.processor import SAMPLE_RATE, feature_extractor_for, generation_config_for, language_tokens, load_tokenizer, save_processor, whisper_token_ids
from models.finetune.convert.rebuild import REBUILT_JSON, rebuild_hf_from_ct2

__all__ = [
    "AI_NOTE",
    "CARD_JSON",
    "Ct2FormatError",
    "Ct2Model",
    "QUANTIZATIONS",
    "REBUILT_JSON",
    "SAMPLE_RATE",
    "export_ct2",
    "feature_extractor_for",
    "generation_config_for",
    "hf_state_dict",
    "language_tokens",
    "load_tokenizer",
    "model_card",
    "read_ct2_model",
    "rebuild_hf_from_ct2",
    "save_processor",
    "verify_ct2_dir",
    "whisper_token_ids",
    "write_model_card",
]
