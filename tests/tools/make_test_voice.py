# SPDX-License-Identifier: GPL-3.0-or-later
#
# Part of Dauys's test tooling.  This program imports piper (piper-tts,
# GPL-3.0-or-later) to take its phoneme id map and to check the voice it
# writes, so it is licensed GPL-3.0-or-later like piper_worker/ (see
# piper_worker/README.md).  The tests run it as a separate process and never
# import it.
"""Write a tiny random-weight Piper voice: ``<name>.onnx`` + ``<name>.onnx.json``.

The model has the interface of every Piper voice::

    input          int64 [1, n]   phoneme ids (BOS, PAD, ids..., EOS)
    input_lengths  int64 [1]
    scales         float [3]      noise_scale, length_scale, noise_w_scale
    ->  output     float [1, 1, samples]

and a "decoder" of one random weight table: each phoneme id gets a pitch
(100..400 Hz, seeded) and lasts ``hop_length * length_scale`` samples, so the
audio is a sequence of tones whose length follows the phoneme count and the
length scale, like a real voice's.  The config is a real espeak-phoneme Piper
config (Piper's default phoneme id map, an espeak voice such as ``kk``), so the
whole PiperVoice.load -> phonemize -> phonemes_to_ids -> ONNX path runs.  No
torch needed: the graph is built with the ``onnx`` package's helper API; the
model file is about 1.5 kB and is written in milliseconds.

    python tests/tools/make_test_voice.py OUT_DIR [--language kk] [--sample-rate 16000]

prints the path of the .onnx file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

OPSET = 15
IR_VERSION = 8  # loadable by onnxruntime >= 1.10
HOP_LENGTH = 256
NUM_SYMBOLS = 256

# Piper voice metadata per language (as in rhasspy/piper-voices' configs).
LANGUAGES = {
    "kk": ("kk_KZ", "Kazakh", "қазақша", "Kazakhstan"),
    "ru": ("ru_RU", "Russian", "Русский", "Russia"),
    "tr": ("tr_TR", "Turkish", "Türkçe", "Turkey"),
    "en": ("en_US", "English", "English", "United States"),
}


def build_model(num_symbols: int, sample_rate: int, seed: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    pitch = rng.uniform(100.0, 400.0, size=num_symbols).astype(np.float32)
    inits = [
        numpy_helper.from_array(pitch, "pitch_hz"),
        numpy_helper.from_array(np.array(HOP_LENGTH, np.float32), "hop"),
        numpy_helper.from_array(np.array(1, np.int64), "length_idx"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one_f"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.array([1], np.int64), "one_1d"),
        numpy_helper.from_array(np.array([1, 1, -1], np.int64), "out_shape"),
        numpy_helper.from_array(np.array(0, np.int64), "axis0"),
        numpy_helper.from_array(np.array(2.0 * math.pi / sample_rate, np.float32), "rad_per_hz"),
        numpy_helper.from_array(np.array(0.5, np.float32), "gain"),
    ]
    n = helper.make_node
    nodes = [
        # samples per phoneme id = max(1, floor(hop * length_scale))
        n("Gather", ["scales", "length_idx"], ["length_scale"], axis=0),
        n("Mul", ["hop", "length_scale"], ["hop_scaled"]),
        n("Floor", ["hop_scaled"], ["hop_floor"]),
        n("Max", ["hop_floor", "one_f"], ["hop_pos"]),
        n("Cast", ["hop_pos"], ["k"], to=TensorProto.INT64),
        n("Reshape", ["k", "one_1d"], ["k_1d"]),
        n("Concat", ["one_1d", "k_1d"], ["expand_shape"], axis=0),
        # per-id pitch, held for k samples: [n] -> [n, 1] -> [n, k] -> [n * k]
        n("Reshape", ["input", "flat"], ["ids"]),
        n("Gather", ["pitch_hz", "ids"], ["f_id"], axis=0),
        n("Unsqueeze", ["f_id", "one_1d"], ["f_col"]),
        n("Expand", ["f_col", "expand_shape"], ["f_grid"]),
        n("Reshape", ["f_grid", "flat"], ["f_t"]),
        # phase = cumulative sum of 2*pi*f/sr; audio = 0.5 * sin(phase)
        n("Mul", ["f_t", "rad_per_hz"], ["dphase"]),
        n("CumSum", ["dphase", "axis0"], ["phase"]),
        n("Sin", ["phase"], ["wave"]),
        n("Mul", ["wave", "gain"], ["audio"]),
        n("Reshape", ["audio", "out_shape"], ["output"]),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "time"])]
    graph = helper.make_graph(nodes, "dauys_test_voice", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dauys-make-test-voice")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build_config(language: str, sample_rate: int, name: str) -> dict:
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    code, english, native, country = LANGUAGES.get(language, (language, language, language, ""))
    return {
        "dataset": name,
        "audio": {"sample_rate": sample_rate, "quality": "x_low"},
        "espeak": {"voice": language},
        "language": {
            "code": code,
            "family": language,
            "region": code.split("_")[-1] if "_" in code else "",
            "name_native": native,
            "name_english": english,
            "country_english": country,
        },
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": NUM_SYMBOLS,
        "num_speakers": 1,
        "speaker_id_map": {},
        "hop_length": HOP_LENGTH,
        "piper_version": "1.0.0",
    }


def make_voice(out_dir: Path, language: str = "kk", sample_rate: int = 16000, seed: int = 0, name: str | None = None) -> Path:
    code = LANGUAGES.get(language, (language,))[0]
    name = name or f"{code}-dauys_test-x_low"
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.onnx"
    config = build_config(language, sample_rate, name)
    if max(i for ids in config["phoneme_id_map"].values() for i in ids) >= NUM_SYMBOLS:
        raise SystemExit("phoneme id map does not fit NUM_SYMBOLS")
    model_path.write_bytes(build_model(NUM_SYMBOLS, sample_rate, seed).SerializeToString())
    Path(f"{model_path}.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return model_path


def check_voice(model_path: Path, text: str) -> None:
    """Speak through the real Piper path; fail loudly if it does not work."""
    from piper import PiperVoice

    voice = PiperVoice.load(model_path)
    chunks = list(voice.synthesize(text))
    if not chunks or not all(len(c.audio_float_array) > 0 for c in chunks):
        raise SystemExit(f"test voice {model_path} produced no audio")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--language", default="kk", help="espeak-ng voice / language family (default kk)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="file name stem (default <code>-dauys_test-x_low)")
    p.add_argument("--check", action="store_true", help="also load and run it with piper")
    args = p.parse_args(argv)
    path = make_voice(args.out_dir, args.language, args.sample_rate, args.seed, args.name)
    if args.check:
        check_voice(path, "Сәлеметсіз бе. Test." if args.language == "kk" else "Test.")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
