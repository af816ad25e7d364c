# SPDX-License-Identifier: GPL-3.0-or-later
#
# Copyright (C) the Dauys authors.
#
# This program is free software: you can redistribute it and/or modify it
# under the terms of the GNU General Public License as published by the Free
# Software Foundation, either version 3 of the License, or (at your option)
# any later version.  It is distributed WITHOUT ANY WARRANTY; see COPYING in
# this directory for the full license text.
"""Serve one Piper voice over stdin/stdout (protocol version 1).

    python -m piper_worker --model VOICE.onnx [--config VOICE.onnx.json] [--cuda]

Start-up: the worker loads the voice and writes one JSON line, either
``{"ready": true, "protocol": 1, "sample_rate": 22050, "espeak_voice": "kk",
"num_speakers": 1, "piper_version": "1.8.0", "pid": 123}``
or ``{"ready": false, "error": "..."}`` (and exits).

Requests: one JSON object per line on stdin::

    {"id": "r1", "text": "...", "length_scale": 1.0, "noise_scale": null,
     "noise_w_scale": null, "volume": 1.0, "speaker_id": null}
    {"id": "p1", "op": "ping"}

Responses: for each request, frames on stdout, each a JSON header line
``{"id": "r1", "sample_rate": 22050, "bytes": N, "last": false}`` followed by
exactly N bytes of 16-bit little-endian mono PCM: one frame per sentence as
Piper synthesises it, then a frame with ``"bytes": 0, "last": true``.  A
request that fails gets ``{"id": ..., "error": "...", "bytes": 0, "last": true}``
and the worker goes on serving.  Requests are answered in order, one at a time.
The worker exits on end of input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from piper_worker import PROTOCOL_VERSION

MAX_TEXT_CHARS = 20000


def _protocol_stream():
    """The real stdout, for frames only; fd 1 is pointed at stderr so that
    nothing else (a library's print, espeak-ng's C code) can corrupt a frame."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _write(out, header: dict, payload: bytes = b"") -> None:
    out.write(json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n" + payload)


def _number(req: dict, key: str, low: float, high: float):
    v = req.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (low <= v <= high):
        raise ValueError(f"{key} must be a number in [{low}, {high}]")
    return v


def _synthesis_config(req: dict, SynthesisConfig):
    speaker_id = _number(req, "speaker_id", 0, 1_000_000)
    volume = _number(req, "volume", 0.0, 10.0)
    return SynthesisConfig(
        speaker_id=None if speaker_id is None else int(speaker_id),
        length_scale=_number(req, "length_scale", 0.05, 20.0),
        noise_scale=_number(req, "noise_scale", 0.0, 10.0),
        noise_w_scale=_number(req, "noise_w_scale", 0.0, 10.0),
        volume=1.0 if volume is None else float(volume),
    )


def serve(voice, SynthesisConfig, out, inp) -> None:
    sample_rate = voice.config.sample_rate
    for line in inp:
        if not line.strip():
            continue
        rid = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
            rid = req.get("id")
            op = req.get("op", "synthesize")
            if op == "ping":
                _write(out, {"id": rid, "sample_rate": sample_rate, "bytes": 0, "last": True})
                continue
            if op != "synthesize":
                raise ValueError(f"unknown op {op!r}")
            text = req.get("text")
            if not isinstance(text, str):
                raise ValueError("text must be a string")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"text longer than {MAX_TEXT_CHARS} characters")
            syn = _synthesis_config(req, SynthesisConfig)
            for chunk in voice.synthesize(text, syn_config=syn):
                pcm = chunk.audio_int16_array.astype("<i2").tobytes()
                _write(out, {"id": rid, "sample_rate": chunk.sample_rate, "bytes": len(pcm), "last": False}, pcm)
        except Exception as e:  # one bad request must not end the worker
            _write(out, {"id": rid, "error": f"{type(e).__name__}: {e}", "bytes": 0, "last": True})
            continue
        _write(out, {"id": rid, "sample_rate": sample_rate, "bytes": 0, "last": True})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m piper_worker", description="Serve one Piper voice over stdin/stdout.")
    p.add_argument("--model", required=True, help="the voice's .onnx file")
    p.add_argument("--config", default=None, help="its .onnx.json (default: MODEL.json)")
    p.add_argument("--cuda", action="store_true", help="run on CUDA (onnxruntime-gpu)")
    args = p.parse_args(argv)

    out = _protocol_stream()
    try:
        from piper import PiperVoice, SynthesisConfig
    except ImportError as e:
        _write(out, {"ready": False, "error": f"piper-tts is not installed (pip install piper-tts): {e}"})
        return 3
    try:
        voice = PiperVoice.load(args.model, config_path=args.config, use_cuda=args.cuda)
    except Exception as e:
        _write(out, {"ready": False, "error": f"cannot load Piper voice {args.model}: {type(e).__name__}: {e}"})
        return 4
    try:
        from importlib.metadata import version

        piper_version = version("piper-tts")
    except Exception:  # pragma: no cover - metadata missing
        piper_version = None
    _write(
        out,
        {
            "ready": True,
            "protocol": PROTOCOL_VERSION,
            "sample_rate": voice.config.sample_rate,
            "espeak_voice": voice.config.espeak_voice,
            "num_speakers": voice.config.num_speakers,
            "piper_version": piper_version,
            "pid": os.getpid(),
        },
    )
    try:
        serve(voice, SynthesisConfig, out, sys.stdin.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
