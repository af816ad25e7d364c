"""The operator's whole loop, as they run it, on a real `dauys serve` subprocess:

25 calls over the native protocol with real speech (20 consented, 5 refused) -> only the 20 are
captured, encrypted -> a reviewer corrects 5 transcripts over the review page's WebSocket ->
`dauys finetune --from-capture` exports them, holds out a call, measures the served model (a tiny
random Whisper, tests/tools/make_tiny_whisper.py) and the fine-tune on it, and switches the server
(capture.model_link + SIGHUP) because the new model is better by the margin -> a new call is
recognised by the new model -> `dauys capture delete --call ID` leaves nothing of that call on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import read_audio
from pipeline.capture import CaptureStore, fernet_from_env, make_key
from server.auth import hash_key
from tests.helpers.audio import clip, reference
from tests.helpers.paths import CACHE_DIR, ROOT
from tests.helpers.sealed import assert_sealed
from tests.helpers.server import ServeProcess, collect, send_audio

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

CLIP = "kk_kscd_ex2.wav"
OPERATOR_KEY = "operator-key-loop-0123456789"
CONSENTED, REFUSED, CORRECTED = 20, 5, 5


async def _call(ws_url: str, consent: str, audio: np.ndarray) -> list[dict]:
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "start", "language": "kk", "output": {"pacing": "none"}, "consent": {"recording": consent}}))
        await send_audio(ws, audio, realtime=False)
        await ws.send(json.dumps({"type": "end"}))
        events, _ = await collect(ws, lambda e: e["type"] == "session_end", 120)
    return events


async def _review(url: str, text: str, n: int) -> list[tuple[str, str]]:
    """What the page does: list, then save `n` corrections (one per call)."""
    done: list[tuple[str, str]] = []
    async with connect(f"{url}?token={OPERATOR_KEY}", max_size=None) as ws:
        await ws.send(json.dumps({"type": "list"}))
        items = json.loads(await ws.recv())["items"]
        assert [i["confidence"] for i in items] == sorted(i["confidence"] for i in items)  # lowest first (all pending)
        for item in items:
            if len(done) == n:
                break
            if any(c == item["call"] for c, _ in done):
                continue
            await ws.send(json.dumps({"type": "audio", "call": item["call"], "utterance": item["id"]}))
            assert json.loads(await ws.recv())["type"] == "audio"
            assert (await ws.recv())[:4] == b"RIFF"  # the reviewer listens
            await ws.send(json.dumps({"type": "save", "call": item["call"], "utterance": item["id"], "status": "corrected", "text": text}))
            saved = json.loads(await ws.recv())
            assert saved["type"] == "saved" and saved["item"]["reviewed_text"] == text
            done.append((item["call"], item["id"]))
    return done


def _everything(root) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_capture_review_finetune_guarded_switch_and_delete(services, tmp_path):  # services: the embedded model's tokenizer is assembled
    from models.finetune.convert import export_ct2
    from tests.tools.make_tiny_whisper import make_tiny_whisper

    t0 = time.monotonic()
    base_hf = make_tiny_whisper(tmp_path / "tiny-hf", CACHE_DIR / "models" / "whisper-base-ct2")
    served = export_ct2(base_hf, tmp_path / "tiny-ct2", quantization="int8")
    link = tmp_path / "models" / "current"
    link.parent.mkdir()
    link.symlink_to(served)
    capture_dir = tmp_path / "capture"
    cfg = tmp_path / "dauys.toml"
    cfg.write_text(
        f'[asr]\nmodel = "{link}"\nlanguages = ["kk", "ru"]\n'
        f'[capture]\nenabled = true\ndir = "{capture_dir}"\noperator_key_hashes = ["{hash_key(OPERATOR_KEY)}"]\n'
        f'model_link = "{link}"\nholdout = 0.2\nswitch_margin = 0.1\n', encoding="utf-8")
    key = make_key()
    env = {"DAUYS_CAPTURE_KEY": key}
    store = CaptureStore(capture_dir, fernet_from_env("K", {"K": key}))
    speech = read_audio(clip(CLIP)).samples
    audio = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)])
    text = reference(CLIP)

    server = ServeProcess("--config", str(cfg), env=env)
    try:
        consents = ["granted"] * CONSENTED + ["refused"] * REFUSED
        sessions: dict[str, list[str]] = {"granted": [], "refused": []}

        async def calls():
            for consent in consents:
                events = await _call(server.ws, consent, audio)
                ready = next(e for e in events if e["type"] == "ready")
                decided = next(e for e in events if e["type"] == "consent")
                assert (decided["recording"], decided["source"], decided["captured"]) == (consent, "upstream", consent == "granted")
                assert any(e["type"] in ("transcript", "speech_discarded") for e in events)  # the call went on the same
                sessions[consent].append(ready["session_id"])

        asyncio.run(calls())
        deadline = time.monotonic() + 20
        while len(store.calls()) < CONSENTED and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        assert set(store.calls()) == set(sessions["granted"])  # only the consented 20
        assert not set(store.calls()) & set(sessions["refused"])
        for call in store.calls():
            assert store.utterance_ids(call), call
        for path, data in _everything(capture_dir):  # encrypted at rest: every file one token of the operator's key
            if path.endswith(".enc"):
                assert_sealed(data, store.fernet, path)
            else:  # the writers' lock, erasure marks: empty
                assert data == b"" and (os.path.basename(path) == ".lock" or "/.erased/" in path), path

        corrected = asyncio.run(_review(server.ws.replace("/v1/voice", "/v1/review"), text, CORRECTED))
        assert len(corrected) == CORRECTED

        run = tmp_path / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "server", "finetune", "--from-capture", "--config", str(cfg), "--out", str(run), "--base", str(base_hf),
             "--method", "full", "--lr", "3e-3", "--max-steps", "100", "--batch-size", "4", "--pid", str(server.proc.pid), "--no-progress"],
            cwd=ROOT, env=dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false", **env),
            capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        decision = json.loads((run / "decision.json").read_text(encoding="utf-8"))
        assert decision["n"] == 1  # one held-out call (of the 5 reviewed), never trained on
        train = (run / "data" / "train.jsonl").read_text(encoding="utf-8")
        held = json.loads((run / "data" / "holdout.jsonl").read_text(encoding="utf-8"))
        assert held["speaker"] not in train and len(train.splitlines()) == CORRECTED - 1
        assert decision["wer_served"] >= 0.9  # a random model knows nothing
        assert decision["switch"] is True and decision["wer_new"] <= decision["wer_served"] - 0.1, decision
        assert os.readlink(link) == decision["model"] and decision["reloaded_pid"] == server.proc.pid
        assert "switched" in proc.stdout and "[4/4]" in proc.stdout

        deadline = time.monotonic() + 60
        while not any("ASR model switched" in line for line in server.out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("ASR model switched" in line for line in server.out), "".join(server.out[-20:]) + "".join(server.err[-20:])
        after = asyncio.run(_call(server.ws, "refused", audio))
        finals = [e["text"] for e in after if e["type"] == "transcript" and e["final"]]
        assert text in finals, finals  # the new model serves new calls

        # again, now that the fine-tune is the served model: nothing better comes out, so it is kept, and said why
        again = subprocess.run(
            [sys.executable, "-m", "server", "finetune", "--from-capture", "--config", str(cfg), "--out", str(run), "--base", str(base_hf),
             "--method", "full", "--lr", "3e-3", "--max-steps", "100", "--batch-size", "4", "--no-progress"],
            cwd=ROOT, env=dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR), DAUYS_ASR__DOWNLOAD="false", **env),
            capture_output=True, text=True, timeout=900,
        )
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        kept = json.loads((run / "decision.json").read_text(encoding="utf-8"))
        assert kept["switch"] is False and "not better by the margin" in kept["reason"] and "linked" not in kept
        assert "kept the served model" in again.stdout and os.readlink(link) == decision["model"]

        # an erasure request: every trace of one reviewed (so exported) call goes
        victim = corrected[0][0]
        alias = store.pseudonym(victim)
        assert any(alias in p for p, _ in _everything(run / "data"))
        gone = subprocess.run([sys.executable, "-m", "server", "capture", "delete", "--call", victim], cwd=ROOT,
                              env=dict(os.environ, DAUYS_CAPTURE__DIR=str(capture_dir), **env), capture_output=True, text=True, timeout=60)
        assert gone.returncode == 0, gone.stderr
        assert victim not in store.calls() and len(store.calls()) == CONSENTED - 1
        for path, data in _everything(tmp_path):
            assert victim not in path and victim.encode() not in data, path
            if path.startswith(str(run / "data")):
                assert alias not in path and alias.encode() not in data, path
    finally:
        server.stop()
    assert time.monotonic() - t0 < 600
