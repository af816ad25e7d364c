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
* :func:`make_tiny_whisper` makes a tiny randomly initialised Whisper with the
  real multilingual tokenizer, for tests of the whole loop in seconds.

``model.bin`` layout (written by ``ctranslate2/specs/model_spec.py``,
``ModelSpec._serialize``; little-endian)::

    u32 binary_version (6)     str spec name ("WhisperSpec")     u32 spec revision (3)
    u32 n_variables, then for each, sorted by name:
        str name   u8 rank   u32 dims[rank]   u8 dtype   u32 n_bytes   bytes data
    u32 n_aliases, then for each:  str alias   str target
    str = u16 length (bytes + 1), utf-8 bytes, one NUL byte
    dtype: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

A quantized weight ``W`` is stored as integers with ``W_scale`` beside it:
``int8 = rint(W * scale)`` per output row (``scale = 127 / max|row|``; a
conv kernel is flattened per output channel), int16 with one scalar scale.
Equal tensors are stored once: the later name (alphabetically) becomes an
alias, e.g. ``decoder/projection/weight -> decoder/embeddings/weight`` (the
tied output projection), and in a fresh random model every layer norm.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

log = logging.getLogger("dauys.finetune")

SAMPLE_RATE = 16000
QUANTIZATIONS = ("int8", "float16", "int8_float16", "float32")
"""What :func:`export_ct2` documents (any type CTranslate2 accepts also works)."""
CARD_JSON = "dauys_model_card.json"
REBUILT_JSON = "dauys_rebuilt_from.json"
AI_NOTE = (
    "Transcripts produced with this model are AI-generated output. Under the Law of the Republic of "
    "Kazakhstan No. 230-VIII \"On Artificial Intelligence\" (Art. 21) a service that uses it must tell "
    "its users in advance that an AI system serves them and mark what the system generates in a "
    "machine-readable form; the Dauys server does both (see COMPLIANCE.md)."
)

_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: the upper half of a float32, widened on read
}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU (exact erf GELU, what Whisper uses)
_NON_LANGUAGE = {
    "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nocaptions|>", "<|nospeech|>", "<|notimestamps|>",
}
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw)\|>$")


class Ct2FormatError(ValueError):
    """model.bin is not a CTranslate2 Whisper model this module can read."""


# ---------------------------------------------------------------------------
# Reading model.bin


@dataclass
class Ct2Model:
    """The variables of a CTranslate2 ``model.bin`` as stored (quantized ones as integers)."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    """Stored tensors by name; scalars are 0-d arrays."""
    dtypes: dict[str, str]
    """CTranslate2's dtype name of each stored tensor (bfloat16 is read as float32)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """alias name -> the stored variable it stands for."""

    def target(self, name: str) -> str:
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise Ct2FormatError(f"alias loop at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return name

    def __contains__(self, name: str) -> bool:
        return self.target(name) in self.variables

    def raw(self, name: str) -> np.ndarray:
        t = self.target(name)
        if t not in self.variables:
            raise KeyError(name)
        return self.variables[t]

    def weight(self, name: str) -> np.ndarray:
        """``name`` as float32, dequantized with its ``_scale`` when stored as integers."""
        t = self.target(name)
        value = self.raw(t)
        scale_name = t + "_scale"
        if value.dtype.kind == "i" and scale_name in self.variables:
            scale = self.variables[scale_name].astype(np.float32)
            q = value.astype(np.float32)
            if scale.ndim == 0:
                return q / scale
            return q / scale.reshape((-1,) + (1,) * (q.ndim - 1))
        return value.astype(np.float32)

    def scalar(self, name: str, default=None):
        if name not in self:
            return default
        return self.raw(name).item()


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise Ct2FormatError(f"model.bin is truncated (wanted {n} bytes at offset {f.tell() - len(data)})")
    return data


def _u(f: BinaryIO, fmt: str):
    return struct.unpack("<" + fmt, _read_exact(f, struct.calcsize(fmt)))[0]


def _str(f: BinaryIO) -> str:
    n = _u(f, "H")
    data = _read_exact(f, n)
    if not n or data[-1] != 0:
        raise Ct2FormatError("model.bin: malformed string")
    return data[:-1].decode("utf-8")


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (a file, or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with open(path, "rb") as f:
        version = _u(f, "I")
        if not 4 <= version <= 6:
            raise Ct2FormatError(
                f"{path}: CTranslate2 binary version {version} is not supported (4 to 6 are); "
                "re-convert the model with a current ctranslate2"
            )
        spec = _str(f)
        revision = _u(f, "I")
        variables: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for _ in range(_u(f, "I")):
            name = _str(f)
            rank = _u(f, "B")
            shape = tuple(_u(f, "I") for _ in range(rank))
            type_id = _u(f, "B")
            n_bytes = _u(f, "I")
            if type_id not in _DTYPES:
                raise Ct2FormatError(f"{path}: variable {name} has unknown dtype id {type_id}")
            dtype = _DTYPES[type_id]
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if count * dtype.itemsize != n_bytes:
                raise Ct2FormatError(f"{path}: variable {name} {shape} {_DTYPE_NAMES[type_id]} has {n_bytes} bytes")
            arr = np.frombuffer(_read_exact(f, n_bytes), dtype=dtype).reshape(shape)
            if type_id == 5:
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            variables[name] = arr
            dtypes[name] = _DTYPE_NAMES[type_id]
        aliases = {}
        for _ in range(_u(f, "I")):
            alias = _str(f)
            aliases[alias] = _str(f)
        if f.read(1):
            raise Ct2FormatError(f"{path}: unexpected bytes after the alias table")
    model = Ct2Model(spec, revision, version, variables, dtypes, aliases)
    for alias in aliases:
        if model.target(alias) not in variables:
            raise Ct2FormatError(f"{path}: alias {alias} points to missing {aliases[alias]}")
    return model


# ---------------------------------------------------------------------------
# CTranslate2 names -> transformers names


def _layer_count(model: Ct2Model, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    found = {int(m.group(1)) for name in [*model.variables, *model.aliases] if (m := pat.match(name))}
    n = len(found)
    if found != set(range(n)):
        raise Ct2FormatError(f"{prefix} layers are not numbered 0..{n - 1}: {sorted(found)}")
    return n


def hf_state_dict(model: Ct2Model) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """float32 tensors under ``WhisperForConditionalGeneration`` names, and the shapes' facts.

    The inverse of ctranslate2's ``WhisperLoader``: self-attention q/k/v are
    one fused ``linear_0`` (k's bias is zeros: Whisper's ``k_proj`` has none,
    and a constant added to every key cannot change a softmax, so dropping it
    is exact); cross-attention has ``linear_0`` = q and ``linear_1`` = fused
    k/v; layer norms are gamma/beta; ``decoder/projection`` is ``proj_out``.
    """
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"model.bin holds a {model.spec}, not a Whisper model (WhisperSpec)")
    used: set[str] = set()
    sd: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        if name not in model:
            raise Ct2FormatError(f"model.bin has no {name}")
        used.add(name)
        used.add(model.target(name) + "_scale")
        return model.weight(name)

    def linear(ct2: str, hf: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = take(f"{ct2}/weight")
        if bias:
            sd[f"{hf}.bias"] = take(f"{ct2}/bias")

    def norm(ct2: str, hf: str) -> None:
        sd[f"{hf}.weight"] = take(f"{ct2}/gamma")
        sd[f"{hf}.bias"] = take(f"{ct2}/beta")

    def split(ct2: str, hf: str, parts: list[str]) -> None:
        w, b = take(f"{ct2}/weight"), take(f"{ct2}/bias")
        d = w.shape[0] // len(parts)
        if d * len(parts) != w.shape[0]:
            raise Ct2FormatError(f"{ct2}/weight {w.shape} does not split into {parts}")
        for i, part in enumerate(parts):
            sd[f"{hf}.{part}.weight"] = w[i * d:(i + 1) * d]
            if part != "k_proj":
                sd[f"{hf}.{part}.bias"] = b[i * d:(i + 1) * d]

    def block(ct2: str, hf: str, cross: bool) -> None:
        split(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"])
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        if cross:
            linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
            split(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ["k_proj", "v_proj"])
            linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    sd["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    n_enc = _layer_count(model, "encoder")
    for i in range(n_enc):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)

    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    n_dec = _layer_count(model, "decoder")
    for i in range(n_dec):
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)

    proj = take("decoder/projection/weight")
    tied = model.target("decoder/projection/weight") == model.target("decoder/embeddings/weight") or np.array_equal(
        proj, sd["model.decoder.embed_tokens.weight"]
    )
    if not tied:
        sd["proj_out.weight"] = proj
    if "decoder/projection/bias" in model:
        if np.any(take("decoder/projection/bias") != 0):
            raise Ct2FormatError("decoder/projection has a bias, which a transformers Whisper cannot hold")

    activation = model.scalar("decoder/activation", _GELU)
    if activation != _GELU:
        raise Ct2FormatError(f"decoder activation {activation} is not GELU ({_GELU}); not a Whisper model")
    if "decoder/scale_embeddings" in model:
        se = model.raw("decoder/scale_embeddings")  # a bool (int8: True means sqrt(d_model)) or a float factor
        if (se.dtype.kind == "i" and se.item() != 0) or (se.dtype.kind == "f" and se.item() != 1.0):
            raise Ct2FormatError("decoder/scale_embeddings is set; Whisper does not scale its embeddings")
    if not model.scalar("decoder/pre_norm", True):
        raise Ct2FormatError("decoder/pre_norm is off; Whisper is a pre-norm transformer")
    scalars = {n for n, v in model.variables.items() if v.ndim == 0}
    left = sorted(set(model.variables) - used - scalars - set(model.aliases))
    if left:
        raise Ct2FormatError(f"model.bin has variables a Whisper checkpoint has no place for: {', '.join(left[:8])}")

    emb = sd["model.decoder.embed_tokens.weight"]
    facts = {
        "vocab_size": emb.shape[0],
        "d_model": emb.shape[1],
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": int(model.scalar("encoder/num_heads")),
        "decoder_attention_heads": int(model.scalar("decoder/num_heads")),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0] if n_enc else 4 * emb.shape[1],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0] if n_dec else 4 * emb.shape[1],
        "num_mel_bins": sd["model.encoder.conv1.weight"].shape[1],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
        "tie_word_embeddings": bool(tied),
    }
    return sd, facts


# ---------------------------------------------------------------------------
# Tokenizer, feature extractor, generation config


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


# ---------------------------------------------------------------------------
# CTranslate2 -> transformers


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


# ---------------------------------------------------------------------------
# transformers -> CTranslate2


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f} %" if pct else f"{v:g}"
    return str(v)


def _count(v: Any) -> int:
    if isinstance(v, Mapping):
        return int(v.get("count", len(v.get("ids", []))))
    if isinstance(v, (list, tuple, set)):
        return len(v)
    return int(v or 0)


def model_card(card: Mapping[str, Any]) -> str:
    """The README.md of an exported model, from the card dict (see :func:`export_ct2`)."""
    data = dict(card.get("data") or {})
    lines = [f"# {card.get('name') or 'Dauys Whisper fine-tune'}", ""]
    lines.append(
        "A Whisper speech recognition model in CTranslate2 form for the Dauys voice server "
        "(`asr.model = \"/path/to/this/directory\"`)."
    )
    lines += ["", "| | |", "| --- | --- |"]
    lines.append(f"| base model | {card.get('base_model') or 'unknown'} |")
    for key in ("quantization", "date"):
        if card.get(key):
            lines.append(f"| {key} | {card[key]} |")
    if card.get("languages"):
        lines.append(f"| languages | {', '.join(card['languages'])} |")
    for key, label in (("ctranslate2", "ctranslate2"), ("transformers", "transformers")):
        if card.get("versions", {}).get(key):
            lines.append(f"| {label} | {card['versions'][key]} |")

    lines += ["", "## Training data", ""]
    if data:
        hours = data.get("hours")
        if hours is None and data.get("audio_s") is not None:
            hours = float(data["audio_s"]) / 3600
        lines.append(f"- rows used: {_fmt(data.get('rows'))}")
        lines.append(f"- audio: {hours:.2f} h" if hours is not None else "- audio: –")
        lines.append(f"- skipped because the rights holder opted out of AI training (Law 230-VIII Art. 23): {_count(data.get('opt_outs_skipped', data.get('skipped_optout')))}")
        lines.append(f"- bad rows left out: {_count(data.get('bad_rows', data.get('bad')))}")
        if data.get("source"):
            lines.append(f"- source: {data['source']}")
    else:
        lines.append("Not fine-tuned by Dauys (no training data recorded).")

    evaluation = card.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    if evaluation:
        split = card.get("eval_split") or "held-out split"
        lines.append(f"On the {split}, decoded as the server decodes (`scripts/evaluate_asr.py`), text normalised by `models/finetune/textnorm.py`:")
        lines += ["", "| language | rows | WER before | WER after | CER before | CER after |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for lang, m in sorted(evaluation.items(), key=lambda kv: (kv[0] == "overall", kv[0])):
            lines.append(
                f"| {lang} | {_fmt(m.get('n'))} | {_fmt(m.get('wer_before'), True)} | {_fmt(m.get('wer_after'), True)} "
                f"| {_fmt(m.get('cer_before'), True)} | {_fmt(m.get('cer_after'), True)} |"
            )
    else:
        lines.append("No evaluation recorded.")
    other = card.get("other_sets") or {}
    if other:
        lines += ["", "Other evaluation sets (all languages together):", "",
                  "| set | WER before | WER after | CER before | CER after |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, m in sorted(other.items()):
            b, a = m.get("before") or {}, m.get("after") or {}
            lines.append(f"| {name} | {_fmt(b.get('wer'), True)} | {_fmt(a.get('wer'), True)} | {_fmt(b.get('cer'), True)} | {_fmt(a.get('cer'), True)} |")

    training = card.get("training") or {}
    lines += ["", "## Training settings", ""]
    if training:
        lines += [f"- {k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v}" for k, v in training.items()]
    else:
        lines.append("None recorded.")

    lines += ["", "## AI-generated output", "", card.get("ai_note") or AI_NOTE, ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, card: Mapping[str, Any]) -> Path:
    """Write ``README.md`` and ``dauys_model_card.json`` into ``out_dir``; return the README."""
    out_dir = Path(out_dir)
    card = dict(card)
    card.setdefault("date", _dt.date.today().isoformat())
    card.setdefault("ai_generated_output", True)
    card.setdefault("ai_note", AI_NOTE)
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    readme = out_dir / "README.md"
    readme.write_text(model_card(card), encoding="utf-8")
    return readme


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


# ---------------------------------------------------------------------------
# A tiny Whisper for tests


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
