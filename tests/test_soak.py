"""The soak, short: 4 real-time callers for 2 minutes against `dauys serve` with a Piper worker
(scripts/bench_soak.py --minutes 2). The hard figures only: nothing lost, newcomers refused with
1013 while full and no caller refused, descriptors and memory bounded. Never timing figures (the
machine is shared)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import CACHE_DIR, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_voice(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("voices")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tools" / "make_test_voice.py"), str(out), "--language", "kk", "--sample-rate", "16000"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_two_minutes_of_four_callers_lose_nothing_and_leak_nothing(tiny_voice, tmp_path):
    log = tmp_path / "server.log"
    env = dict(os.environ, DAUYS_ASR__CACHE_DIR=str(CACHE_DIR))
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_soak.py"), "--minutes", "2", "--callers", "4", "--probe-every", "15",
         "--tts-voice", f"kk={tiny_voice}", "--server-log", str(log), "--json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)
    ws, t = report["windows"], report["targets"]
    lost = [d for w in ws for d in w["lost"]]
    assert t["lost_finals"]["measured"] == 0 and t["lost_replies"]["measured"] == 0, lost
    assert all(w["turns"] > 0 for w in ws)
    calls = report["calls"]
    assert calls["made"] >= 8 and calls["refused"] == 0 and calls["no_session_end"] == 0, calls
    probes = report["probes"]
    assert probes["refused_1013"] >= 1 and probes["admitted"] == 0 and probes["other"] == 0, probes
    first, last = ws[0], ws[-1]
    assert last["workers"] >= 1  # the Piper worker process is measured too
    assert last["fds_server"] <= first["fds_server"] + 24 and last["fds_workers"] <= first["fds_workers"] + 8
    rss = lambda w: w["rss_server_mb"] + w["rss_workers_mb"]  # noqa: E731
    assert rss(last) <= 1.5 * rss(first)
    assert "Traceback" not in log.read_text(encoding="utf-8")
