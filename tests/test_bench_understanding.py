"""scripts/bench_understanding.py as a user runs it: real calls with clarifying turns, and calibration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_understanding as bu  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_question_set_is_held_out_and_split():
    from models.dialogue.kb import KnowledgeBase, normalise

    kb = KnowledgeBase.load(None)
    items = bu.load_items(bu.DEFAULT_DATA, None)
    langs = {lang: [it for it in items if it.language == lang] for lang in ("kk", "ru")}
    assert len(langs["kk"]) >= 60 and len(langs["ru"]) >= 40
    known = {normalise(q) for e in kb.entries for qs in e.questions.values() for q in qs}
    heldout = {normalise(json.loads(x)["text"]) for x in (ROOT / "tests/data/kb_heldout.jsonl").read_text(encoding="utf-8").splitlines()}
    assert not [it.text for it in items if normalise(it.text) in known | heldout]
    assert all(it.expected is None or it.expected in kb.by_id for it in items)
    for lang, its in langs.items():
        tune = [it for it in its if it.split == "tune"]
        assert 0.25 <= len(tune) / len(its) <= 0.4 and any(it.expected is None for it in its)
    # tuning and test voices never meet
    assert not {v for vs in bu.TUNE_VOICES.values() for v in vs} & {v for vs in bu.TEST_VOICES.values() for v in vs}


def test_calls_play_the_clarifying_turns_and_count_outcomes(live_server, tmp_path):
    out = tmp_path / "report.json"
    assert bu.main(["--url", live_server["ws"], "--channels", "typed,human", "--limit", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    calls = report["calls"]
    assert len([c for c in calls if c["channel"] == "typed"]) == 8 and [c for c in calls if c["channel"] == "human"]
    assert all(c["outcome"] in bu.OUTCOMES for c in calls)
    typed = report["summary"]["all/typed"]
    assert typed["wrong"] == 0 and typed["right_pct"] >= 50  # floor: measured 81 % on the whole test split
    clarified = [c for c in calls if c["outcome"] == "right_clarified"]
    assert all(c["acts"][0] in ("confirm", "choose") and c["acts"][-1] in ("confirmed", "chosen") and c["turns"] >= 2 for c in clarified)
    human = report["summary"]["all/human"]
    assert human["wrong"] == 0  # the shared clips are not bank questions: never answered as one


def test_calibration_searches_the_decision_settings(tmp_path, capsys):
    # recognitions cached as the typed text itself: the search runs without the recogniser
    items = bu.load_items(bu.DEFAULT_DATA, "tune")
    cache = {json.dumps([it.index, ch, 1]): [[it.text, -0.3]] for it in items for ch in ("clean", "phone")}
    path = tmp_path / "cache.json"
    path.write_text(json.dumps(cache, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "calib.json"
    assert bu.main(["--calibrate", "--cache", str(path), "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    best = report["best"]
    assert best["wrong"]["typed"] == 0 and best["right"]["typed"] >= 0.8
    assert best["threshold"] <= best["answer_threshold"] and report["feasible"] >= 1
    assert [r["threshold"] for r in report["by_threshold"]] == sorted(r["threshold"] for r in report["by_threshold"])
