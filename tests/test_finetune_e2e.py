"""The operator's whole loop, as they run it: data with opt-outs -> fine-tune -> export -> serve.

A tiny randomly initialised Whisper (made here) is fine-tuned by
``scripts/finetune_asr.py`` on a handful of real clips until it knows them,
measured before and after by the server's own engine, exported to
CTranslate2 (int8 and float16, with tokenizer, preprocessor and model card),
then hot-switched into a running server: a call opened before the switch keeps
the old model, a new call over ``/v1/voice`` is transcribed by the new one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect

from models.audio import Encoding, encode_wire
from pipeline.events import AudioFormat, End, Start
from server.client import call, prepare_audio
from tests.helpers.audio import clip, reference
from tests.helpers.paths import CACHE_DIR, ROOT
from tests.helpers.server import http_get, make_settings

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

TRAIN = ["kk_kscd_ex2.wav", "kk_kscd_word_bes.wav", "kk_kscd_word_eki.wav"]
OPTED_OUT = {"kk_kscd_word_oqy.wav": "manifest", "kk_kscd_word_solga.wav": "sidecar"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, services):  # services: the embedded model (its tokenizer.json) is assembled
    from tests.tools.make_tiny_whisper import make_tiny_whisper

    root = tmp_path_factory.mktemp("ft")
    data = root / "data"
    data.mkdir()
    rows = []
    for name in TRAIN + list(OPTED_OUT):
        shutil.copy(clip(name), data / name)
        row = {"audio": name, "text": reference(name), "language": "kk", "speaker": "kscd"}
        if OPTED_OUT.get(name) == "manifest":
            row["tdm_reservation"] = 1
        if OPTED_OUT.get(name) == "sidecar":
            (data / (name + ".json")).write_text(json.dumps({"tdm-reservation": 1}))
        rows.append(row)
    rows.append({"audio": "missing.wav", "text": "жоқ", "language": "kk"})  # a bad row: reported, not fatal
    (data / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    base = make_tiny_whisper(root / "tiny-hf", CACHE_DIR / "models" / "whisper-base-ct2")
    out = root / "run"
    env = dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false")
    cmd = [
        sys.executable, "scripts/finetune_asr.py", str(data / "manifest.jsonl"), "--eval", str(data / "manifest.jsonl"),
        "--base", str(base), "--out", str(out), "--method", "full", "--lr", "3e-3", "--max-steps", "100",
        "--batch-size", "3", "--quantization", "int8,float16", "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "data": data, "stdout": proc.stdout, "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}


def test_opt_outs_are_skipped_and_the_model_learns_what_it_was_given(run):
    card = run["report"]
    assert card["data"]["opt_outs_skipped"] == 2 * len(OPTED_OUT)  # from the training data and from the --eval copy
    assert card["data"]["bad_rows"] == 2
    assert card["data"]["rows"] == len(TRAIN)
    trained = json.loads((run["out"] / "train" / "model" / "dauys_training.json").read_text())
    assert trained["config"]["rows"] == len(TRAIN)  # the trainer itself never saw the reserved clips
    before, after = card["evaluation"]["overall"]["cer_before"], card["evaluation"]["overall"]["cer_after"]
    assert before > 0.9  # a random model knows nothing
    assert after < 0.2 and after < before / 4
    assert "held-out" in run["stdout"] and "CER before" in run["stdout"]


@pytest.mark.parametrize("quant", ["int8", "float16"])
def test_exports_carry_what_faster_whisper_needs_and_the_card(run, quant):
    from faster_whisper import WhisperModel

    d = run["out"] / f"ct2-{quant}"
    for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json", "vocabulary.json", "README.md", "dauys_model_card.json"):
        assert (d / name).is_file(), name
    card = json.loads((d / "dauys_model_card.json").read_text(encoding="utf-8"))
    assert card["quantization"] == quant and card["data"]["opt_outs_skipped"] == 4
    assert card["evaluation"]["kk"]["cer_after"] < card["evaluation"]["kk"]["cer_before"]
    readme = (d / "README.md").read_text(encoding="utf-8")
    assert "opt" in readme.lower() and "CER" in readme
    segments, _ = WhisperModel(str(d), device="cpu", compute_type="int8").transcribe(str(clip("kk_kscd_ex2.wav")), language="kk", beam_size=1, vad_filter=False)
    assert isinstance("".join(s.text for s in segments), str)  # plain faster-whisper loads and runs it
    # the server's engine (same encoder window as training on this CPU) gives back what it learned
    from models.audio import read_audio
    from models.whisper import WhisperEngine

    rec = WhisperEngine(str(d), device="cpu").recognize(read_audio(clip("kk_kscd_ex2.wav")).samples, "kk", ["kk"])
    assert rec.text == reference("kk_kscd_ex2.wav")


async def _open(url: str):
    ws = await connect(url, max_size=None)
    fmt = AudioFormat(Encoding.PCM_S16LE, 16000, 1)
    await ws.send(Start(fmt, fmt, "kk", "none").to_json())
    ready = json.loads(await ws.recv())
    assert ready["type"] == "ready"
    return ws


async def _speak_and_collect(ws, name: str) -> list[dict]:
    import numpy as np

    data = prepare_audio(str(clip(name)), Encoding.PCM_S16LE, 16000) + encode_wire(np.zeros(16000, np.float32), Encoding.PCM_S16LE)
    for off in range(0, len(data), 640):
        await ws.send(data[off : off + 640])
    await ws.send(End().to_json())
    events = []
    async with asyncio.timeout(120):
        async for msg in ws:
            if isinstance(msg, str):
                events.append(json.loads(msg))
    return events


def _finals(events):
    return [e["text"] for e in events if e["type"] == "transcript" and e["final"]]


async def test_hot_switch_serves_the_fine_tune_without_dropping_a_call(run):
    from server.app import DauysServer

    settings = make_settings(server={"port": 0}, asr={"model": str(run["out"] / "base-ct2-int8")})
    server = DauysServer(settings)
    await server.start()
    try:
        assert await server.hub.wait(120) is not None, server.hub.error
        url = f"ws://127.0.0.1:{server.port}/v1/voice"
        before_ws = await _open(url)  # a call in progress during the switch
        model_id = await server.switch_asr(settings.asr.model_copy(update={"model": str(run["out"] / "ct2-int8")}))
        assert model_id == "ct2-int8"
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{server.port}/readyz")  # the server runs on this loop
        assert status == 200 and json.loads(body)["asr"]["model"] == model_id

        new_call = await call(url, str(clip("kk_kscd_ex2.wav")), realtime=False, language="kk", emit=lambda e: None)
        assert _finals(new_call) == [reference("kk_kscd_ex2.wav")]
        old_call = await _speak_and_collect(before_ws, "kk_kscd_ex2.wav")
        assert old_call[-1]["type"] == "session_end"
        assert reference("kk_kscd_ex2.wav") not in _finals(old_call)  # still the untrained model
        await before_ws.close()
        for _ in range(100):  # the old generation's queue is closed once no call uses it
            if not server.hub.retired:
                break
            await asyncio.sleep(0.1)
        assert server.hub.retired == []
    finally:
        await server.stop()


def test_sighup_reloads_the_config_and_switches_the_model(run, tmp_path):
    cfg = tmp_path / "dauys.toml"
    cfg.write_text(f'[server]\nport = 0\n[asr]\nmodel = "{run["out"] / "base-ct2-int8"}"\n', encoding="utf-8")
    env = dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--config", str(cfg)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "listening on http://" in line:
                url = line.split("listening on ")[1].split()[0].rstrip("/")
            if "dauys: ready" in line or not line:
                break
        assert url and "base-ct2-int8" in lines[-1], "".join(lines)
        cfg.write_text(cfg.read_text().replace("base-ct2-int8", "ct2-int8"), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "ASR model switched" in line or not line:
                break
        assert "ASR model switched" in lines[-1], "".join(lines)
        status, body = http_get(url + "/readyz")
        assert json.loads(body)["asr"]["model"] == "ct2-int8"
        # a broken edit is refused and the live model stays
        cfg.write_text('[asr]\nmodel = "/nonexistent/model"\n', encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert proc.poll() is None
        status, body = http_get(url + "/readyz")
        assert status == 200 and json.loads(body)["asr"]["model"] == "ct2-int8"
    finally:
        proc.terminate()
        proc.wait(20)
