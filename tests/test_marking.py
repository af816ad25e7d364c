"""Machine-readable marking of the files Dauys writes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from models.audio import AudioChunk, read_audio, write_wav
from pipeline.marking import info_chunk, provenance, read_info, read_provenance
from tests.helpers.paths import ROOT


def test_info_chunk_round_trip_and_file_still_plays(tmp_path):
    prov = provenance({"tts": "espeak-ng:kk"}, reply_id="r1", note="Сәлем")
    path = tmp_path / "x.wav"
    write_wav(path, AudioChunk(np.zeros(8000, np.float32), 16000), info_chunk(prov))
    info = read_info(path)
    assert info["IKEY"] == "ai-generated" and info["ISFT"].startswith("dauys/")
    back = read_provenance(path)
    assert back["ai_generated"] is True and back["models"]["tts"] == "espeak-ng:kk" and back["note"] == "Сәлем"
    assert read_audio(path).seconds == pytest.approx(0.5, abs=0.01)


@pytest.mark.slow
def test_say_writes_a_marked_wav(tmp_path):
    out = tmp_path / "say.wav"
    p = subprocess.run([sys.executable, "-m", "server", "say", "Сәлеметсіз бе! Картаңыз бұғатталған.", "--language", "kk", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)
    prov = read_provenance(out)
    assert prov["ai_generated"] is True and prov["models"]["tts"] and prov["created"] == meta["created"]
    audio = read_audio(out)
    assert audio.seconds > 1.5
    from pipeline import watermark

    assert prov["watermark"] == meta["watermark"] and prov["watermark"].startswith("dauys-")  # always marked
    det = watermark.detect_file(out)
    assert det.found and watermark.format_payload(det.payload) == prov["watermark"]
    assert prov["compliance"] == {"risk_class": "minimum", "autonomy": "low"}


@pytest.mark.slow
def test_say_with_a_watermark_key_is_detected_only_with_that_key(tmp_path):
    """compliance.watermark_key (from the environment) keys the mark: `detect-mark --key-env` / `--key` find it,
    no key or a wrong key does not; the key is printed nowhere."""
    import os

    key = "k3y-only-the-operator-knows"
    out = tmp_path / "keyed.wav"
    env = dict(os.environ, DAUYS_COMPLIANCE__WATERMARK_KEY=key)
    p = subprocess.run([sys.executable, "-m", "server", "say", "Сәлеметсіз бе! Картаңыз бұғатталған, операторға қосыламын.", "--language", "kk",
                        "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert key not in p.stdout + p.stderr and key.encode() not in out.read_bytes()
    mark = read_provenance(out)["watermark"]

    def detect(*args, environ=None):
        r = subprocess.run([sys.executable, "-m", "server", "detect-mark", str(out), "--json", *args], capture_output=True, text=True,
                           cwd=ROOT, timeout=60, env=environ or dict(os.environ))
        return r.returncode, json.loads(r.stdout) if r.stdout else r.stderr

    code, res = detect("--key-env", "DAUYS_COMPLIANCE__WATERMARK_KEY", environ=env)
    assert code == 0 and res["found"] and res["payload"] == mark
    code, res = detect("--key", key)
    assert code == 0 and res["payload"] == mark
    assert detect()[0] == 1 and detect("--key", "not-the-key")[0] == 1
    code, err = detect("--key-env", "DAUYS_NO_SUCH_VARIABLE")
    assert code == 2 and "DAUYS_NO_SUCH_VARIABLE" in err


@pytest.mark.slow
async def test_call_out_saves_marked_reply(live_server, tmp_path):
    from server.client import call

    out = tmp_path / "reply.wav"
    await call(live_server["ws"], None, texts=["Картам бұғатталып қалды"], realtime=False, out=str(out), emit=lambda e: None)
    prov = read_provenance(out)
    assert prov["ai_generated"] is True and prov["system"].startswith("dauys/")
    assert read_audio(out).seconds > 2.0


@pytest.mark.slow
async def test_detect_mark_finds_the_servers_mark_after_a_phone_line(live_server, tmp_path):
    """A reply recorded from the server as 8 kHz mu-law keeps its watermark; `dauys detect-mark` reads it."""
    import asyncio

    from models.audio import Encoding
    from server.client import call

    out = tmp_path / "phone.wav"
    events = await call(live_server["ws"], None, texts=["Картам бұғатталып қалды"], realtime=False,
                        encoding=Encoding.MULAW, rate=8000, out=str(out), emit=lambda e: None)
    marks = {e["reply_id"]: e["watermark"] for e in events if e["type"] == "audio_start"}
    assert all(m and m.startswith("dauys-") for m in marks.values())
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "server", "detect-mark", str(out), "--json",
                                                stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    stdout, _ = await proc.communicate()
    res = json.loads(stdout)
    assert proc.returncode == 0 and res["found"] and res["payload"] in marks.values(), (res, marks)


@pytest.mark.parametrize("name", ["kk_kscd_ex1.wav", "uz_uzbekvoice_1.wav"])
def test_detect_mark_finds_nothing_in_human_speech(name):
    from tests.helpers.audio import clip

    p = subprocess.run([sys.executable, "-m", "server", "detect-mark", str(clip(name))], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 1 and "no mark" in p.stdout
