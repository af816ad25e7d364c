"""Reading a CTranslate2 Whisper ``model.bin``, and its variables under transformers names.

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

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

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


class Ct2FormatError(ValueError):
    """model.bin is not a CTranslate2 Whisper model this module can read."""


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
