"""scripts/bench_asr_settings.py: its core on one short real clip with a tiny grid (real embedded whisper-base, real Silero VAD)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys

import pytest

from tests.helpers.audio import clip, reference
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow

CLIP = "kk_kscd_ex2.wav"  # 1.9 s of read Kazakh


def _script():
    spec = importlib.util.spec_from_file_location("bench_asr_settings", ROOT / "scripts" / "bench_asr_settings.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _script()


@pytest.fixture(scope="module")
def report(bench, settings, tmp_path_factory):
    manifest = tmp_path_factory.mktemp("bench_settings") / "manifest.jsonl"
    row = {"file": str(clip(CLIP)), "lang": "kk", "text": reference(CLIP)}
    manifest.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    args = bench.parse_args([
        "--manifest", str(manifest), "--beams", "1,2", "--fallback", "off,on", "--vad", "none,0.5/400",
        "--conditions", "clean,phone", "--auto-beams", "1", "--no-progress",
    ])
    out = io.StringIO()
    rep = bench.run(args, settings=settings, out=out)
    rep["_markdown"] = out.getvalue()
    return rep


def test_every_grid_row_is_there(report, bench):
    expected = {
        s.label
        for s in bench.build_grid(["clean", "phone"], [1, 2], [False, True], [None, (0.5, 400)], [1])
    }
    assert len(expected) == 2 * (2 * 2 * 2 + 1)
    assert [r["label"] for r in report["rows"]] == [s.label for s in bench.build_grid(["clean", "phone"], [1, 2], [False, True], [None, (0.5, 400)], [1])]
    assert {r["label"] for r in report["rows"]} == expected
    assert (report["device"], report["compute_type"], report["model"]) == ("cpu", "int8", "embedded:whisper-base")
    table = [ln for ln in report["_markdown"].splitlines() if ln.startswith("| clean") or ln.startswith("| phone")]
    assert len(table) == len(expected)


def test_rows_make_sense(report):
    for r in report["rows"]:
        assert r["n"] == 1 and r["by_language"].keys() == {"kk"}
        assert 0.0 <= r["cer"] < 5 and math.isfinite(r["cer"]), r["label"]
        assert 0.0 <= r["wer"] < 5
        assert r["rejected"] <= r["utterances"] and r["empty"] in (0, 1)
        assert r["rtf"] > 0 and r["decode_median_s"] > 0 and r["decode_p95_s"] >= r["decode_median_s"]
        c = r["clips"][0]
        if r["setting"]["vad"] is None:
            assert r["utterances"] == 1
        else:
            assert r["utterances"] >= 1  # the VAD found the speech
        for u in c["utterances"]:
            assert 1 <= u["attempts"] <= (6 if r["setting"]["fallback"] else 1)
        assert r["fallbacks"] == sum(u["attempts"] > 1 for u in c["utterances"])
        if not r["setting"]["fallback"]:
            assert r["fallbacks"] == 0
    auto = [r for r in report["rows"] if r["setting"]["lang"] == "auto"]
    assert len(auto) == 2 and all(0.0 <= r["lid_accuracy"] <= 1.0 for r in auto)
    json.dumps(report, ensure_ascii=False)  # --json can write it


def test_plain_setting_is_the_servers_decode(report, settings):
    """Beam 1, no fallback, clip whole, language forced: exactly what evaluate_asr / the server's engine give."""
    from models.audio import read_audio
    from models.finetune.evaluate import load_engine, score

    engine = load_engine(settings=settings)
    rec = engine.recognize(read_audio(clip(CLIP)).samples, "kk", settings.asr.language_weights())
    hyp = "" if rec.rejected else rec.text
    ref_n, hyp_n, *_ , nc, ce = score(reference(CLIP), hyp, "kk")
    row = next(r for r in report["rows"] if r["label"] == "clean beam=1 fallback=off vad=none lang=manifest")
    assert row["clips"][0]["hypothesis"] == hyp_n
    assert row["cer"] == pytest.approx(ce / nc)


def test_grid_arguments(bench):
    a = bench.parse_args(["--vad", "none,0.35/600", "--fallback", "on", "--beams", "5", "--auto-beams", ""])
    assert a.vad == [None, (0.35, 600)] and a.fallback == [True] and a.beams == [5] and a.auto_beams == []
    assert bench.build_grid(["clean"], [5], [True], [None], []) == [bench.Setting("clean", 5, True, None)]
    with pytest.raises(SystemExit):
        bench.parse_args(["--vad", "loud"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--conditions", "radio"])
