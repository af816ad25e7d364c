"""Fine-tuning data: text normalisation, manifests and datasets dirs with opt-outs and bad rows, splits, phone degradation."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.audio import AudioChunk, read_audio, write_wav
from models.finetune.data import Row, load_rows, split_rows
from models.finetune.degrade import add_noise, band_limit, mulaw_roundtrip, phone_degrade
from models.finetune.textnorm import normalize
from tests.helpers.audio import clip, manifest

# ---------------------------------------------------------------------------
# textnorm


@pytest.mark.parametrize(
    "text, lang, expected",
    [
        # Kazakh: case, punctuation, quotes, dashes
        ("Алға қарай, бес метр жүр!", "kk", "алға қарай бес метр жүр"),
        ("«Жарықты» қос — жазбаны оқы...", "kk", "жарықты қос жазбаны оқы"),
        # Latin look-alikes typed inside Kazakh words: i -> і (U+0456), h -> һ, p -> р, a -> а, capital H -> Н
        ("ЕКi жүp hәм Hет", "kk", "екі жүр һәм нет"),
        ("Aлмaты", "kk", "алматы"),
        # Russian: ё -> е, punctuation, look-alikes (Latin o, c, e inside a Cyrillic word)
        ("Ещё раз: позвоните, пожалуйста, в банк!", "ru", "еще раз позвоните пожалуйста в банк"),
        ("Тeлефoн cломан?", "ru", "телефон сломан"),
        ("Ёлка", "ru", "елка"),
        # Uzbek Latin: every apostrophe form of oʻ gʻ and the tutuq belgisi become one
        ("Oʻzbekiston gʻalaba maʼno", "uz", "o'zbekiston g'alaba ma'no"),
        ("O‘zbekiston g’alaba ma'no", "uz", "o'zbekiston g'alaba ma'no"),
        ("O`zbekiston", "uz", "o'zbekiston"),
        # a Cyrillic look-alike inside an Uzbek Latin word becomes Latin
        ("оʻzbek", "uz", "o'zbek"),
        # hyphens split words; digits are kept as written
        ("qancha-qancha 2018-yil", "uz", "qancha qancha 2018 yil"),
        # quotes are not apostrophes
        ("'salom' dedi", "uz", "salom dedi"),
        # Turkish dotted/dotless i
        ("IŞIK İstanbul", "tr", "ışık istanbul"),
        ("İstanbul", "kk", "istanbul"),
        # zero-width characters and NFC (й as и + combining breve)
        ("жа\u200bзба", "kk", "жазба"),
        ("и\u0306", "ru", "й"),
    ],
)
def test_normalize(text, lang, expected):
    assert normalize(text, lang) == expected


def test_normalize_leaves_single_script_words_alone_and_is_idempotent():
    # A word wholly in Latin inside a Russian sentence is not transliterated.
    assert normalize("Звоните в WhatsApp", "ru") == "звоните в whatsapp"
    # Kazakh-specific letters are not folded into Russian ones: that is a real error.
    assert normalize("қазақ", "kk") != normalize("казак", "kk")
    for text, lang in [("Ещё «раз»!", "ru"), ("Oʻzbek-tili", "uz"), ("ЕКi hәм", "kk"), ("  a  ", "en")]:
        once = normalize(text, lang)
        assert normalize(once, lang) == once
    assert normalize("?!…", "kk") == ""


# ---------------------------------------------------------------------------
# manifests, opt-outs, bad rows


def _copy(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip(name), dest)
    return dest


@pytest.fixture
def opt_out_tree(tmp_path):
    """A manifest over copies of shared clips exercising every opt-out mechanism and bad-row reason."""
    d = tmp_path / "data"
    _copy("kk_kscd_ex2.wav", d / "ok1.wav")
    _copy("kk_kscd_word_bes.wav", d / "ok2.wav")
    _copy("kk_kscd_word_eki.wav", d / "ok_field0.wav")
    _copy("kk_kscd_word_eki.wav", d / "ok_sidecar0.wav")
    (d / "ok_sidecar0.json").write_text(json.dumps({"tdm-reservation": 0}))
    # field opt-outs; their audio is unreadable or missing, so reading it would have made them bad rows
    (d / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    # sidecars
    _copy("kk_kscd_word_zhur.wav", d / "side1.wav")
    (d / "side1.wav.json").write_text(json.dumps({"tdm-reservation": 1, "tdm-policy": "https://example.org/policy"}))
    _copy("kk_kscd_word_oqy.wav", d / "side2.wav")
    (d / "side2.wav.tdmrep.json").write_text(json.dumps({"tdm-reservation": "1"}))
    _copy("kk_kscd_word_solga.wav", d / "side3.wav")
    (d / "side3.json").write_text(json.dumps({"ai_training": "opt-out"}))
    # a folder-level tdmrep.json (W3C list of rules, first match wins)
    (d / "tdmrep.json").write_text(json.dumps([
        {"location": "reserved/*", "tdm-reservation": 1, "tdm-policy": "https://example.org/p"},
        {"location": "*", "tdm-reservation": 0},
    ]))
    _copy("kk_kscd_word_toqta.wav", d / "reserved" / "a.wav")
    # a tdmrep.json in the audio file's own folder
    _copy("kk_kscd_word_toqta.wav", d / "label" / "b.wav")
    _copy("kk_kscd_word_toqta.wav", d / "label" / "free.wav")
    (d / "label" / "tdmrep.json").write_text(json.dumps([{"location": "b.wav", "tdm-reservation": 1}]))
    # bad rows
    long = np.tile(read_audio(clip("kk_kscd_ex2.wav")).samples, 17)  # > 30 s
    write_wav(d / "long.wav", AudioChunk(long, 16000))
    rows = [
        {"id": "ok1", "audio": "ok1.wav", "text": "Жарықты қос жазбаны оқы", "language": "kk", "speaker": "s1"},
        {"id": "ok2", "path": "ok2.wav", "text": "бес", "lang": "kk-KZ"},
        {"id": "ok_field0", "file": "ok_field0.wav", "text": "екі", "lang": "kk", "tdm_reservation": 0, "ai_training": "allowed"},
        {"id": "ok_sidecar0", "file": "ok_sidecar0.wav", "text": "екі", "lang": "kk"},
        {"id": "ok_free", "file": "label/free.wav", "text": "тоқта", "lang": "kk"},
        {"id": "opt_field1", "file": "garbage.wav", "text": "x", "lang": "kk", "tdm_reservation": 1},
        {"id": "opt_field2", "file": "missing.wav", "text": "x", "lang": "kk", "tdm-reservation": "1"},
        {"id": "opt_field3", "file": "garbage.wav", "text": "x", "lang": "kk", "ai_training": "opt-out"},
        {"id": "opt_field4", "file": "garbage.wav", "text": "x", "lang": "kk", "tdm_reservation": True},
        {"id": "opt_side1", "file": "side1.wav", "text": "жүр", "lang": "kk"},
        {"id": "opt_side2", "file": "side2.wav", "text": "оқы", "lang": "kk"},
        {"id": "opt_side3", "file": "side3.wav", "text": "солға", "lang": "kk"},
        {"id": "opt_tdmrep", "file": "reserved/a.wav", "text": "тоқта", "lang": "kk"},
        {"id": "opt_tdmrep_local", "file": "label/b.wav", "text": "тоқта", "lang": "kk"},
        {"id": "bad_missing", "file": "nowhere.wav", "text": "бес", "lang": "kk"},
        {"id": "bad_unreadable", "file": "garbage.wav", "text": "бес", "lang": "kk"},
        {"id": "bad_empty", "file": "ok1.wav", "text": "  ", "lang": "kk"},
        {"id": "bad_punct", "file": "ok1.wav", "text": "…?!", "lang": "kk"},
        {"id": "bad_long", "file": "long.wav", "text": "ұзақ", "lang": "kk"},
        {"id": "bad_lang", "file": "ok1.wav", "text": "бес", "lang": "xx"},
        {"id": "bad_nolang", "file": "ok1.wav", "text": "бес"},
        {"id": "bad_noaudio", "text": "бес", "lang": "kk"},
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines.insert(3, "{not json")
    (d / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def test_manifest_opt_outs_of_every_kind_are_skipped_and_counted(opt_out_tree):
    res = load_rows(opt_out_tree / "manifest.jsonl")
    ids = {r.id for r in res.rows}
    assert ids == {"ok1", "ok2", "ok_field0", "ok_sidecar0", "ok_free"}
    opted = {"opt_field1", "opt_field2", "opt_field3", "opt_field4", "opt_side1", "opt_side2", "opt_side3", "opt_tdmrep", "opt_tdmrep_local"}
    assert set(res.skipped_optout.ids) == opted
    assert res.skipped_optout.count == len(opted) == 9
    via = res.skipped_optout.via
    assert via["opt_field1"] == "field:tdm_reservation" and via["opt_field2"] == "field:tdm-reservation"
    assert via["opt_field3"] == "field:ai_training"
    assert via["opt_side1"] == "sidecar:side1.wav.json" and via["opt_side2"] == "sidecar:side2.wav.tdmrep.json"
    assert via["opt_side3"] == "sidecar:side3.json"
    assert via["opt_tdmrep"].startswith("tdmrep:") and via["opt_tdmrep_local"].startswith("tdmrep:") and "label" in via["opt_tdmrep_local"]
    # opted-out rows are never opened: their garbage/missing audio did not make them bad rows
    assert not opted & {b.id for b in res.bad}
    assert res.to_dict()["skipped_optout"]["count"] == 9


def test_manifest_bad_rows_are_reported_not_fatal(opt_out_tree):
    res = load_rows(opt_out_tree / "manifest.jsonl")
    reasons = {b.id: b.reason for b in res.bad}
    assert reasons == {
        "line4": "bad_line",
        "bad_missing": "missing_file",
        "bad_unreadable": "unreadable_audio",
        "bad_empty": "empty_text",
        "bad_punct": "empty_text",
        "bad_long": "too_long",
        "bad_lang": "unknown_language",
        "bad_nolang": "no_language",
        "bad_noaudio": "no_audio_field",
    }
    long = next(b for b in res.bad if b.id == "bad_long")
    assert "> 30 s" in long.detail and long.source == "manifest.jsonl:20"
    assert "9 skipped (opt-out), 9 bad" in res.summary()
    # the same long clip is fine when the limit allows it
    assert "bad_long" in {r.id for r in load_rows(opt_out_tree / "manifest.jsonl", max_seconds=40).rows}
    # and a language outside the accepted set is reported
    res_ru = load_rows(opt_out_tree / "manifest.jsonl", languages=["ru"])
    assert not res_ru.rows and {b.reason for b in res_ru.bad} >= {"unknown_language"}


def test_manifest_rows_carry_audio_text_language_speaker_duration(opt_out_tree):
    res = load_rows(opt_out_tree / "manifest.jsonl")
    row = next(r for r in res.rows if r.id == "ok1")
    assert row.path == opt_out_tree / "ok1.wav" and row.speaker == "s1" and row.language == "kk"
    assert row.text == "Жарықты қос жазбаны оқы"
    ref = read_audio(clip("kk_kscd_ex2.wav")).samples
    assert row.duration == pytest.approx(len(ref) / 16000)
    np.testing.assert_array_equal(row.load_audio(), ref)
    assert next(r for r in res.rows if r.id == "ok2").language == "kk"  # kk-KZ -> kk
    kept = load_rows(opt_out_tree / "manifest.jsonl", keep_audio=True)
    np.testing.assert_array_equal(next(r for r in kept.rows if r.id == "ok1").audio, ref)


def test_unreadable_reservation_files_count_as_reservations(tmp_path):
    for name in ("a.wav", "b.wav"):
        _copy("kk_kscd_word_bes.wav", tmp_path / "x" / name)
    _copy("kk_kscd_word_bes.wav", tmp_path / "c.wav")
    (tmp_path / "c.wav.json").write_text("{broken")
    (tmp_path / "x" / "tdmrep.json").write_text("[{not json")
    rows = [{"file": f, "text": "бес", "lang": "kk"} for f in ("x/a.wav", "x/b.wav", "c.wav")]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    res = load_rows(tmp_path / "m.jsonl")
    assert res.rows == [] and res.skipped_optout.count == 3
    assert res.skipped_optout.via["c.wav"] == "sidecar:c.wav.json"
    (tmp_path / "x" / "tdmrep.json").write_text(json.dumps([{"location": "a.wav", "tdm-reservation": 1}]))
    (tmp_path / "c.wav.json").write_text(json.dumps({"note": "no reservation here"}))
    assert [r.id for r in load_rows(tmp_path / "m.jsonl").rows] == ["x/b.wav", "c.wav"]


def test_csv_manifest_and_the_shared_manifest(tmp_path):
    _copy("kk_kscd_word_bes.wav", tmp_path / "a.wav")
    _copy("kk_kscd_word_eki.wav", tmp_path / "b.wav")
    (tmp_path / "m.csv").write_text(
        "path,text,lang,speaker,tdm_reservation\n"
        "a.wav,бес,kk,spk1,\n"
        "b.wav,екі,kk,spk2,true\n",
        encoding="utf-8",
    )
    res = load_rows(tmp_path / "m.csv")
    assert [r.id for r in res.rows] == ["a.wav"] and res.rows[0].speaker == "spk1"
    assert res.skipped_optout.ids == ["b.wav"]
    shared = load_rows(clip("manifest.jsonl"))
    assert len(shared.rows) == len(manifest()) and not shared.bad
    for row, rec in zip(shared.rows, manifest()):
        assert row.language == rec["lang"] and row.text == rec["text"]
        assert row.duration == pytest.approx(rec["duration_s"], abs=0.01)


# ---------------------------------------------------------------------------
# datasets directories


def _save_dataset(folder: Path, paths, texts, langs, **extra):
    from datasets import Audio, Dataset

    ds = Dataset.from_dict({"audio": [str(p) for p in paths], "text": texts, "language": langs, **extra})
    ds = ds.cast_column("audio", Audio(sampling_rate=16000))
    ds.save_to_disk(str(folder))


def test_datasets_dir_with_audio_column_decodes_without_torchcodec(tmp_path):
    names = ["kk_kscd_ex2.wav", "kk_kscd_word_bes.wav", "kk_kscd_word_eki.wav", "kk_kscd_word_toqta.wav"]
    _save_dataset(
        tmp_path / "ds", [clip(n) for n in names], ["Жарықты қос жазбаны оқы", "бес", "екі", ""], ["kk", "kk", "kk", "kk"],
        speaker=["a", "b", "c", "d"], tdm_reservation=[0, 0, 1, 0],
    )
    res = load_rows(tmp_path / "ds")
    assert [r.id for r in res.rows] == names[:2]
    assert res.skipped_optout.ids == [names[2]] and res.skipped_optout.via[names[2]] == "field:tdm_reservation"
    assert [(b.id, b.reason) for b in res.bad] == [(names[3], "empty_text")]
    for row, name in zip(res.rows, names):
        ref = read_audio(clip(name)).samples
        np.testing.assert_allclose(row.load_audio(), ref, atol=1e-6)
        assert row.duration == pytest.approx(len(ref) / 16000) and row.audio is None
    assert res.rows[1].speaker == "b"


def test_datasets_dir_card_reserves_the_whole_dataset(tmp_path):
    _save_dataset(tmp_path / "ds", [clip("kk_kscd_word_bes.wav"), clip("kk_kscd_word_eki.wav")], ["бес", "екі"], ["kk", "kk"], id=["u1", "u2"])
    assert len(load_rows(tmp_path / "ds").rows) == 2
    (tmp_path / "ds" / "README.md").write_text("---\nlicense: cc-by-4.0\ntdm-reservation: 1\n---\n# Calls\n", encoding="utf-8")
    res = load_rows(tmp_path / "ds")
    assert res.rows == [] and res.skipped_optout.ids == ["u1", "u2"]
    assert set(res.skipped_optout.via.values()) == {"dataset-card"}


def test_datasets_dir_with_array_struct_is_resampled(tmp_path):
    from datasets import Dataset

    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(8000 * 2) / 8000)).astype(np.float32)
    Dataset.from_dict({"audio": [{"array": tone, "sampling_rate": 8000}], "sentence": ["сәлем"], "lang": ["kk"]}).save_to_disk(str(tmp_path / "ds"))
    res = load_rows(tmp_path / "ds")
    (row,) = res.rows
    assert row.duration == pytest.approx(2.0, abs=0.01) and isinstance(row.audio, np.ndarray) and row.text == "сәлем"


# ---------------------------------------------------------------------------
# splits


def _rows(n_speakers=40, per=3):
    rows = []
    for s in range(n_speakers):
        for k in range(per):
            rows.append(Row(f"s{s}_{k}", Path(f"s{s}_{k}.wav"), f"сөйлем {k}", "kk", f"spk{s}", 1.0))
    return rows


def test_split_by_speaker_is_deterministic_and_keeps_speakers_apart():
    rows = _rows()
    train, hold = split_rows(rows, 0.2, seed=1, by="speaker")
    assert len(train) + len(hold) == len(rows)
    assert not {r.speaker for r in train} & {r.speaker for r in hold}
    assert abs(len(hold) - 0.2 * len(rows)) <= 3
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    _, hold2 = split_rows(shuffled, 0.2, seed=1, by="speaker")
    assert {r.id for r in hold2} == {r.id for r in hold}  # independent of input order
    _, hold3 = split_rows(rows, 0.2, seed=2, by="speaker")
    assert {r.id for r in hold3} != {r.id for r in hold}
    assert [r.id for r in train] == [r.id for r in rows if r not in hold]  # input order kept


def test_split_by_text_and_by_row():
    rows = _rows()
    train, hold = split_rows(rows, 0.3, seed=0, by="text")
    assert not {r.text for r in train} & {r.text for r in hold} and hold and train
    train, hold = split_rows(rows, 0.25, seed=0, by="row")
    assert len(hold) == 30
    assert split_rows(rows, 0.0, seed=0)[1] == []
    with pytest.raises(ValueError):
        split_rows(rows, 0.2, by="colour")


# ---------------------------------------------------------------------------
# phone degradation


def _power_db(x):
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


def test_phone_degrade_removes_everything_above_4khz_and_below_the_band():
    x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    y = phone_degrade(x, 7, noise_prob=0.0)
    assert y.dtype == np.float32 and len(y) == len(x)
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    total = spec.sum()
    assert spec[f > 4000].sum() / total < 1e-4
    assert spec[f < 200].sum() / total < 1e-3
    assert spec[(f > 500) & (f < 3000)].sum() / total > 0.7
    # the input had a quarter of its power above 4 kHz: band-limiting removed it
    sx = np.abs(np.fft.rfft(x)) ** 2
    assert sx[f > 4000].sum() / sx.sum() > 0.4


@pytest.mark.parametrize("snr", [15.0, 20.0, 25.0])
def test_phone_degrade_noise_at_the_requested_snr(snr):
    t = np.arange(16000 * 3) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    clean = phone_degrade(tone, 3, gain_db=0.0, snr_db=None, codec=False)
    noisy = phone_degrade(tone, 3, gain_db=0.0, snr_db=snr, noise_prob=1.0, codec=False)
    mid = slice(1600, -1600)
    measured = _power_db(clean[mid]) - _power_db((noisy - clean)[mid])
    assert measured == pytest.approx(snr, abs=1.0)
    # add_noise alone is exact
    x = tone[:8000]
    n = add_noise(x, snr, 1, rate=16000) - x
    assert _power_db(x) - _power_db(n) == pytest.approx(snr, abs=0.01)


def test_phone_degrade_is_deterministic_and_applies_mulaw():
    x = read_audio(clip("kk_kscd_ex2.wav")).samples
    a, b = phone_degrade(x, 11), phone_degrade(x, 11)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, phone_degrade(x, 12))
    np.testing.assert_array_equal(phone_degrade(x, np.random.default_rng(11)), a)
    # mu-law on, everything else the same: only codec noise (G.711 gives ~35-40 dB SNR on speech)
    lin = phone_degrade(x, 5, noise_prob=0.0, codec=False)
    ulaw = phone_degrade(x, 5, noise_prob=0.0, codec=True)
    codec_snr = _power_db(lin) - _power_db(ulaw - lin)
    assert 25 < codec_snr < 45
    # the roundtrip output only holds G.711 levels
    from models.audio import int16_to_float, mulaw_decode

    levels = set(int16_to_float(mulaw_decode(bytes(range(256)))).tolist())
    assert set(np.unique(mulaw_roundtrip(x)).tolist()) <= levels
    # gain: a fixed -6 dB lowers the output by ~6 dB
    quiet = phone_degrade(x, 5, noise_prob=0.0, codec=False, gain_db=-6.0)
    unity = phone_degrade(x, 5, noise_prob=0.0, codec=False, gain_db=0.0)
    assert _power_db(unity) - _power_db(quiet) == pytest.approx(6.0, abs=0.1)


def test_band_limit_keeps_in_band_tones():
    t = np.arange(8000) / 8000
    for hz, kept in ((1000, True), (3000, True), (100, False), (3700, False)):
        x = np.sin(2 * np.pi * hz * t).astype(np.float32)
        loss_db = _power_db(x) - _power_db(band_limit(x, 8000))
        assert (loss_db < 0.5) if kept else (loss_db > 40), (hz, loss_db)
