"""Whisper's tokenizer, feature extractor and generation config, from the served model's files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from models.finetune.convert.format import Ct2FormatError

SAMPLE_RATE = 16000
_NON_LANGUAGE = {
    "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nocaptions|>", "<|nospeech|>", "<|notimestamps|>",
}
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw)\|>$")


def _special_tokens(tokenizer_json: Path) -> dict[str, int]:
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    return {t["content"]: int(t["id"]) for t in sorted(data.get("added_tokens", []), key=lambda t: t["id"]) if t.get("special")}


def load_tokenizer(tokenizer_json: str | Path):
    """A ``WhisperTokenizerFast`` over Whisper's ``tokenizer.json``, with its special tokens declared.

    Declaring them (in id order, ``<|notimestamps|>`` last) is what makes
    ``decode(..., decode_with_timestamps=True)`` find the first timestamp id
    and ``skip_special_tokens`` drop language and task tokens.
    """
    from transformers import WhisperTokenizerFast

    specials = list(_special_tokens(Path(tokenizer_json)))
    if "<|endoftext|>" not in specials or "<|startoftranscript|>" not in specials:
        raise Ct2FormatError(f"{tokenizer_json} is not a Whisper tokenizer (no <|endoftext|>/<|startoftranscript|>)")
    return WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        additional_special_tokens=specials,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=1024,
    )


def whisper_token_ids(tokenizer) -> dict[str, int | None]:
    def tid(tok: str) -> int | None:
        i = tokenizer.convert_tokens_to_ids(tok)
        return None if i is None or i == tokenizer.unk_token_id and tok != tokenizer.unk_token else int(i)

    return {
        "eot": tid("<|endoftext|>"),
        "sot": tid("<|startoftranscript|>"),
        "translate": tid("<|translate|>"),
        "transcribe": tid("<|transcribe|>"),
        "sot_lm": tid("<|startoflm|>"),
        "sot_prev": tid("<|startofprev|>"),
        "no_speech": tid("<|nospeech|>") or tid("<|nocaptions|>"),
        "no_timestamps": tid("<|notimestamps|>"),
    }


def language_tokens(tokenizer, lang_ids: list[int] | None = None) -> dict[str, int]:
    """``{"<|kk|>": 50316, ...}``: from the CTranslate2 config's ``lang_ids`` when given, else the tokenizer's."""
    if lang_ids:
        toks = tokenizer.convert_ids_to_tokens(list(lang_ids))
        return {t: int(i) for t, i in zip(toks, lang_ids)}
    out = {}
    for tok, i in sorted(_special_tokens_of(tokenizer).items(), key=lambda kv: kv[1]):
        if tok not in _NON_LANGUAGE and _LANG_TOKEN.match(tok):
            out[tok] = i
    return out


def _special_tokens_of(tokenizer) -> dict[str, int]:
    return {t: int(tokenizer.convert_tokens_to_ids(t)) for t in tokenizer.all_special_tokens}


def generation_config_for(tokenizer, ct2_config: Mapping[str, Any], *, vocab_size: int, max_target_positions: int, decoder_layers: int, decoder_heads: int):
    """The ``GenerationConfig`` that ``model.generate(..., language="kk", task="transcribe")`` needs."""
    from transformers import GenerationConfig

    ids = whisper_token_ids(tokenizer)
    multilingual = vocab_size >= 51865
    lang_to_id = language_tokens(tokenizer, ct2_config.get("lang_ids")) if multilingual else {}
    heads = ct2_config.get("alignment_heads") or [
        [layer, head] for layer in range(decoder_layers // 2, decoder_layers) for head in range(decoder_heads)
    ]
    kwargs: dict[str, Any] = dict(
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        max_length=max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, ids["eot"]]),
        alignment_heads=[list(map(int, h)) for h in heads],
        no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["sot_prev"],
        max_initial_timestamp_index=50,
        median_filter_width=7,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        kwargs["lang_to_id"] = lang_to_id
        kwargs["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
        # Without language/task arguments: detect the language, then transcribe (not translate).
        # transformers ignores these once generate() gets language= or task=.
        kwargs["forced_decoder_ids"] = [[1, None], [2, ids["transcribe"]]]
    return GenerationConfig(**kwargs)


def feature_extractor_for(n_mels: int):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=int(n_mels), sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=30, n_fft=400,
        padding_value=0.0, return_attention_mask=False,
    )


def save_processor(out_dir: Path, tokenizer, n_mels: int) -> None:
    """``WhisperProcessor`` files plus ``preprocessor_config.json``.

    transformers 5 nests the feature extractor inside ``processor_config.json``;
    faster-whisper (and ``ct2-transformers-converter --copy_files``) look for
    ``preprocessor_config.json``, so it is written on its own as well.
    """
    from transformers import WhisperProcessor

    fe = feature_extractor_for(n_mels)
    WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(str(out_dir))
    fe.save_pretrained(str(out_dir))
