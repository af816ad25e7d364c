"""scripts/bench_endpointing.py as a user runs it: a tiny set against a real server, figures that add up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_endpointing as be  # noqa: E402

pytestmark = pytest.mark.slow


def test_question_sets_are_seeded_and_multi_clause():
    multi, pauses = be.multi_set(be.DEFAULT_DATA, 3, 4, 140, None)
    again, _ = be.multi_set(be.DEFAULT_DATA, 3, 4, 140, None)
    assert [q.name for q in multi] == [q.name for q in again] and [q.lang for q in multi] == ["kk", "ru", "kk", "ru"]
    for q in multi:
        assert pauses[q.name] and all(300 <= p <= 700 and kind in ("complete", "conjunction") for p, kind in pauses[q.name])
        assert len(pauses[q.name]) == q.text.count(" | ") and 0 < q.speech_end_s <= q.seconds
    single = be.single_set(3, 12, 4, 140)
    assert [q.lang for q in single] == ["kk", "ru", "kk", "ru"] and all(q.expected not in be.SKIP_ENTRIES for q in single)


def test_bench_reports_cutoffs_and_latency(live_server, capsys):
    argv = ["--url", live_server["ws"], "--configs", "adaptive", "--limit", "2", "--no-real-clips", "--json", "--silence", "1.5"]
    assert be.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    (run,) = report["runs"]
    assert run["config"] == "adaptive" and run["vad"]["adaptive"] is True
    for name in ("single", "multi"):
        s = run[name]
        assert s["n"] == 2 == len(s["per_call"]) == sum(s["outcomes"].values())
        assert 0 <= s["false_cutoffs"] <= s["n"] and 0 <= s["split_questions"] <= s["n"]
        assert s["false_cutoffs"] == sum(1 for p in s["per_call"] if p["false_cutoff"])
        assert s["split_questions"] == sum(1 for p in s["per_call"] if p["finals"] > 1)
        assert s["timed"] <= s["replies"] <= s["n"]
        ends = s["endpoints_total"]
        assert set(be.SILENCE_KINDS) <= set(ends) and all(v >= 0 for v in ends.values())
        assert sum(ends.values()) >= sum(p["finals"] for p in s["per_call"])  # every final had an endpoint
    multi = run["multi"]
    assert sum(k["n"] for k in multi["false_cutoffs_by_pause"].values()) == multi["n"]
    assert sum(k["false_cutoffs"] for k in multi["false_cutoffs_by_pause"].values()) == multi["false_cutoffs"]
    assert be.pause_kind("Я отправил перевод и") == "conjunction" and be.pause_kind("Я потерял карту") == "complete"
    single = run["single"]
    assert single["replies"] >= 1
    v2v = single["voice_to_voice_ms"]
    assert 0 < v2v["p50"] <= v2v["p95"] < 10_000 and single["endpoint_silence_ms"]["p50"] > 0
    assert all(p["stages_ms"]["total"] > 0 for p in single["per_call"] if p["outcome"] == "reply")
