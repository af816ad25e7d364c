"""TTS: sentence splitting, espeak-ng, the out-of-process Piper path (a tiny generated
voice through the real piper-tts), the router's choices and fallbacks, speech recognised
back by the project's recogniser, and the voice catalog script's offline logic."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models.audio import AudioChunk
from models.text import split_sentences
from models.tts import (
    ESPEAK_RATE,
    EspeakTts,
    PiperTts,
    Synthesis,
    SynthesisConfig,
    TtsEngine,
    TtsError,
    TtsRouter,
    normalize_language,
    parse_wav,
)
from tests.helpers.paths import ROOT
from tests.helpers.server import make_settings

MAKE_VOICE = ROOT / "tests" / "tools" / "make_test_voice.py"
KK_TWO = "Сәлеметсіз бе! Сізге қалай көмектесе аламын?"
RU_TWO = "Здравствуйте. Чем я могу вам помочь?"


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def seconds(chunks: list[AudioChunk]) -> float:
    return sum(c.seconds for c in chunks)


# --------------------------------------------------------------------------
# split_sentences
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        (KK_TWO, ["Сәлеметсіз бе!", "Сізге қалай көмектесе аламын?"]),
        (RU_TWO, ["Здравствуйте.", "Чем я могу вам помочь?"]),
        # numbers, times, amounts never split
        ("Ставка 1.5 процента. Срок 12 месяцев.", ["Ставка 1.5 процента.", "Срок 12 месяцев."]),
        ("Біз 09.00-ден 18.00-ге дейін жұмыс істейміз. Рахмет!", ["Біз 09.00-ден 18.00-ге дейін жұмыс істейміз.", "Рахмет!"]),
        ("Комиссия 0,95%. Лимит 1 000 000 тг. в месяц.", ["Комиссия 0,95%.", "Лимит 1 000 000 тг. в месяц."]),
        # abbreviations
        ("Төлем, аударым т.б. қызметтер бар. Сұрағыңыз болса, айтыңыз.", ["Төлем, аударым т.б. қызметтер бар.", "Сұрағыңыз болса, айтыңыз."]),
        ("Адрес: г. Алматы, ул. Абая, д. 10. Ждём вас!", ["Адрес: г. Алматы, ул. Абая, д. 10.", "Ждём вас!"]),
        ("Карты, кредиты и т.д. Всё в приложении.", ["Карты, кредиты и т.д. Всё в приложении."]),
        ("Құжаттар, мыс. Төлқұжат керек.", ["Құжаттар, мыс. Төлқұжат керек."]),
        ("Мекенжай: А. Байтұрсынұлы көшесі, 5. Келіңіз!", ["Мекенжай: А. Байтұрсынұлы көшесі, 5.", "Келіңіз!"]),
        # ellipsis, as three dots and as one character
        ("Күте тұрыңыз... Қазір қосамын.", ["Күте тұрыңыз...", "Қазір қосамын."]),
        ("Подождите… Соединяю.", ["Подождите…", "Соединяю."]),
        ("Ну… может быть, завтра.", ["Ну… может быть, завтра."]),
        # Kazakh/Russian quotes
        ("Ол «Рахмет!» деді. Сосын кетті.", ["Ол «Рахмет!» деді.", "Сосын кетті."]),
        ("«Рахмет!» Ол кетті.", ["«Рахмет!»", "Ол кетті."]),
        ("Карта называется «Kaspi Gold». «Да», — ответил он.", ["Карта называется «Kaspi Gold».", "«Да», — ответил он."]),
        ("Он сказал: „Спасибо“. Потом ушёл?! Да.", ["Он сказал: „Спасибо“.", "Потом ушёл?!", "Да."]),
        # lists, domains, paragraphs
        ("1. Қосымшаны ашыңыз. 2. Төлемді таңдаңыз.", ["1. Қосымшаны ашыңыз.", "2. Төлемді таңдаңыз."]),
        ("Сайт: kaspi.kz. Қош келдіңіз!", ["Сайт: kaspi.kz.", "Қош келдіңіз!"]),
        ("Бірінші абзац\n\nЕкінші абзац", ["Бірінші абзац", "Екінші абзац"]),
        ("Бір жол\nжалғасы.", ["Бір жол жалғасы."]),
        ("", []),
        ("   \n ", []),
        ("Рахмет!!! ...", ["Рахмет!!! ..."]),
        ("Рахмет! —", ["Рахмет!—"]),  # a piece with nothing to say joins the previous one
    ],
)
def test_split_sentences(text, expected):
    pieces = split_sentences(text)
    assert pieces == expected
    assert "".join("".join(pieces).split()) == "".join(text.split())  # nothing lost or reordered


def test_split_sentences_cuts_long_sentences_at_clauses():
    long = ", ".join(f"бөлім {i} туралы ақпарат" for i in range(40)) + "."
    pieces = split_sentences(long, max_chars=120)
    assert len(pieces) > 3
    assert all(len(p) <= 120 for p in pieces)
    assert all(p.endswith((",", ".")) for p in pieces)
    assert " ".join(pieces) == long
    assert split_sentences("а" * 500, max_chars=100) == ["а" * 100] * 5


def test_normalize_language():
    assert [normalize_language(x) for x in ("kk", "kk-KZ", "kk_KZ", "RU")] == ["kk", "kk", "kk", "ru"]


# --------------------------------------------------------------------------
# espeak-ng
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def espeak():
    return EspeakTts(rate_wpm=160)


@pytest.mark.parametrize("language, text", [("kk", KK_TWO), ("ru", RU_TWO)])
def test_espeak_speaks_sentence_by_sentence(espeak, language, text):
    assert isinstance(espeak, TtsEngine)
    gen = espeak.synthesize(text, language)
    first = next(gen)  # a generator: the first sentence comes before the rest is made
    chunks = [first, *gen]
    assert len(chunks) == 2
    for c, sentence in zip(chunks, split_sentences(text)):
        assert c.rate == ESPEAK_RATE and c.samples.dtype == np.float32
        assert np.abs(c.samples).max() <= 1.0
        assert rms(c.samples) > 0.02, "silent audio"
        # plausible speech: 30..200 ms per character at 160 words per minute
        assert 0.03 * len(sentence) < c.seconds < 0.2 * len(sentence) + 0.5
        voiced = np.mean(np.abs(c.samples) > 0.01)
        assert voiced > 0.3
    assert espeak.model_id_for(language) == f"espeak-ng:{language}"


def test_espeak_speed_and_volume(espeak):
    base = list(espeak.synthesize("Сізге қалай көмектесе аламын?", "kk"))
    slow = list(espeak.synthesize("Сізге қалай көмектесе аламын?", "kk", SynthesisConfig(length_scale=2.0)))
    quiet = list(espeak.synthesize("Сізге қалай көмектесе аламын?", "kk", SynthesisConfig(volume=0.5)))
    assert seconds(slow) > 1.5 * seconds(base)
    assert rms(quiet[0].samples) == pytest.approx(0.5 * rms(base[0].samples), rel=0.02)
    assert espeak.rate_for(SynthesisConfig(length_scale=0.01)) == 450  # clamped


def test_espeak_covers_the_turkic_languages(espeak):
    for lang in ("kk", "ky", "uz", "tt", "tr", "az", "tk", "ba", "ru", "en"):
        assert lang in espeak.languages
    chunks = list(espeak.synthesize("-5 градусов. Salam!", "az"))  # a leading '-' is text, not an option
    assert chunks and all(rms(c.samples) > 0.01 for c in chunks)
    with pytest.raises(TtsError, match="no voice for language 'xx'"):
        list(espeak.synthesize("test", "xx"))


def test_espeak_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("models.tts.espeak.shutil.which", lambda name: None)
    with pytest.raises(TtsError, match=r"espeak-ng is not installed: install the Debian package espeak-ng"):
        EspeakTts()


def test_parse_wav_rejects_garbage():
    with pytest.raises(TtsError):
        parse_wav(b"not a wav at all")


# --------------------------------------------------------------------------
# The tiny Piper voice (generated by a GPL tool in its own process)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_voice(tmp_path_factory) -> Path:
    missing = [m for m in ("piper", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: pip install -e '.[test,tts]' (the Piper tests run the real piper-tts)")
    out = tmp_path_factory.mktemp("voices")
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(MAKE_VOICE), str(out), "--language", "kk", "--sample-rate", "16000"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and Path(f"{path}.json").is_file()
    assert path.stat().st_size < 4096, "the test voice should be tiny"
    assert time.perf_counter() - t < 30
    return path


@pytest.fixture(scope="module")
def piper(tiny_voice):
    engine = PiperTts(tiny_voice)
    yield engine
    engine.close()


def test_test_voice_is_a_piper_voice(tiny_voice):
    config = json.loads(Path(f"{tiny_voice}.json").read_text(encoding="utf-8"))
    assert config["espeak"]["voice"] == "kk" and config["phoneme_type"] == "espeak"
    assert config["audio"]["sample_rate"] == 16000 and config["num_speakers"] == 1


def test_this_process_never_imports_piper(piper):
    list(piper.synthesize("Сәлем.", "kk"))
    assert "piper" not in sys.modules  # GPL code runs only in piper_worker's process
    assert "piper_worker" not in sys.modules


def test_piper_streams_sentence_by_sentence(piper):
    assert isinstance(piper, TtsEngine)
    assert piper.model_id == "piper:kk_KZ-dauys_test-x_low"
    assert piper.languages == ("kk",)
    assert piper.sample_rate == 16000  # from the voice's config, not espeak's 22050
    text = "Сәлеметсіз бе! Сізге қалай көмектесе аламын? Картаңыз бұғатталды."
    gen = piper.synthesize(text, "kk")
    first = next(gen)
    rest = list(gen)
    chunks = [first, *rest]
    assert len(chunks) == 3  # one per sentence
    for c in chunks:
        assert c.rate == 16000 and c.samples.dtype == np.float32
        assert len(c) % 256 == 0  # hop_length samples per phoneme id: the real phonemize -> ids -> ONNX path
        assert rms(c.samples) > 0.3
    assert first.seconds < seconds(chunks) / 2
    assert chunks[1].seconds > first.seconds  # the longer sentence has more phonemes


def test_piper_synthesis_config(piper):
    base = list(piper.synthesize("Сәлеметсіз бе!", "kk"))
    slow = list(piper.synthesize("Сәлеметсіз бе!", "kk", SynthesisConfig(length_scale=2.0)))
    quiet = list(piper.synthesize("Сәлеметсіз бе!", "kk", SynthesisConfig(volume=0.5)))
    assert len(slow[0]) == 2 * len(base[0])
    assert rms(quiet[0].samples) == pytest.approx(0.5 * rms(base[0].samples), rel=0.02)
    with pytest.raises(TtsError, match="length_scale"):
        list(piper.synthesize("Сәлем.", "kk", SynthesisConfig(length_scale=-1.0)))
    assert list(piper.synthesize("Сәлем.", "kk"))  # the worker goes on after a bad request


def test_piper_worker_restarts_after_kill(piper):
    list(piper.synthesize("Сәлем.", "kk"))
    (pid,) = piper.pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    chunks = list(piper.synthesize("Сәлеметсіз бе! Қалайсыз?", "kk"))
    assert len(chunks) == 2 and all(rms(c.samples) > 0.3 for c in chunks)
    (new_pid,) = piper.pids()
    assert new_pid != pid


def test_piper_worker_killed_mid_reply(piper):
    gen = piper.synthesize("Сәлеметсіз бе! Сізге қалай көмектесе аламын?", "kk")
    next(gen)
    os.kill(piper.pids()[0], signal.SIGKILL)
    assert len(list(gen)) == 1  # the second sentence still comes, from a new worker


@pytest.mark.slow
def test_piper_hung_worker_times_out_and_is_replaced(tiny_voice):
    engine = PiperTts(tiny_voice, timeout_s=2.0)
    try:
        engine.start()
        (pid,) = engine.pids()
        os.kill(pid, signal.SIGSTOP)
        t = time.monotonic()
        with pytest.raises(TtsError, match="did not answer"):
            list(engine.synthesize("Сәлем.", "kk"))
        assert time.monotonic() - t < 8
        assert list(engine.synthesize("Сәлем.", "kk"))
        assert engine.pids() and engine.pids()[0] != pid
    finally:
        engine.close()


def test_piper_abandoned_generator_holds_no_worker(tiny_voice):
    engine = PiperTts(tiny_voice, timeout_s=5.0)
    try:
        gen = engine.synthesize("Бір. Екі. Үш.", "kk")
        next(gen)  # the caller barged in: the generator is dropped half way
        t = time.monotonic()
        assert list(engine.synthesize("Сәлем.", "kk"))
        assert time.monotonic() - t < 2
        del gen
    finally:
        engine.close()


def test_piper_pool_serves_threads_without_mixing(tiny_voice):
    engine = PiperTts(tiny_voice, processes=2)
    texts = ["Бір.", "Сәлеметсіз бе!", "Сізге қалай көмектесе аламын?", "Рахмет, сау болыңыз."]
    try:
        # both workers up first: workers start on demand, and the tiny voice answers in under a
        # millisecond, so on a loaded machine four threads may never overlap enough to need the second
        engine.start()
        expected = {t: np.concatenate([c.samples for c in engine.synthesize(t, "kk")]) for t in texts}
        results: dict[tuple[int, str], np.ndarray] = {}
        errors: list[BaseException] = []

        def speak(i: int) -> None:
            try:
                for t in texts:
                    results[(i, t)] = np.concatenate([c.samples for c in engine.synthesize(t, "kk")])
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=speak, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors
        assert len(engine.pids()) == 2  # none died or was replaced
        for (_, t), audio in results.items():
            np.testing.assert_array_equal(audio, expected[t])
    finally:
        engine.close()
    assert engine.pids() == []


def test_piper_missing_files_are_clear_errors(tmp_path, tiny_voice):
    with pytest.raises(TtsError, match=r"Piper voice .*nope\.onnx not found .*fetch_voices\.py"):
        PiperTts(tmp_path / "nope.onnx")
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(tiny_voice.read_bytes())
    with pytest.raises(TtsError, match=r"lone\.onnx\.json not found"):
        PiperTts(lone)


def test_piper_broken_model_fails_at_start(tmp_path, tiny_voice):
    bad = tmp_path / "kk_KZ-broken-x_low.onnx"
    bad.write_bytes(b"this is not an onnx model")
    Path(f"{bad}.json").write_text(Path(f"{tiny_voice}.json").read_text(encoding="utf-8"), encoding="utf-8")
    engine = PiperTts(bad)
    with pytest.raises(TtsError, match="could not load"):
        engine.start()
    with pytest.raises(TtsError, match="could not load"):  # backoff: fails at once, no restart storm
        list(engine.synthesize("Сәлем.", "kk"))
    engine.close()


def test_piper_without_piper_tts_names_the_install(tiny_voice):
    other = "/usr/bin/python3"
    if not Path(other).exists() or subprocess.run([other, "-c", "import piper"], capture_output=True).returncode == 0:
        pytest.skip("needs a Python without piper-tts")
    with pytest.raises(TtsError, match=r"pip install piper-tts"):
        PiperTts(tiny_voice, python=other)


def test_piper_worker_protocol(tiny_voice):
    """The GPL worker on its own: ready line, framed PCM, errors that do not end it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "piper-worker"))
    requests = [
        {"id": "p", "op": "ping"},
        {"id": "a", "text": "Сәлеметсіз бе! Қалайсыз?", "length_scale": 1.0},
        "not json",
        {"id": "b", "text": 5},
        {"id": "c", "text": "Сәлем."},
    ]
    data = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in requests).encode()
    proc = subprocess.run(
        [sys.executable, "-m", "piper_worker", "--model", str(tiny_voice)], input=data, capture_output=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout
    frames = []
    while out:
        line, _, out = out.partition(b"\n")
        header = json.loads(line)
        n = header.get("bytes", 0)
        frames.append((header, out[:n]))
        out = out[n:]
    ready = frames[0][0]
    assert ready["ready"] is True and ready["protocol"] == 1 and ready["sample_rate"] == 16000
    by_id: dict = {}
    for header, payload in frames[1:]:
        by_id.setdefault(header.get("id"), []).append((header, payload))
    assert [h["last"] for h, _ in by_id["p"]] == [True]
    audio = by_id["a"]
    assert [h["last"] for h, _ in audio] == [False, False, True]
    assert all(len(p) == h["bytes"] and len(p) % 2 == 0 for h, p in audio)
    assert "error" in by_id[None][0][0] and "error" in by_id["b"][0][0]
    assert by_id["c"][-1][0]["last"] and by_id["c"][0][0]["bytes"] > 0


# --------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------
def test_router_falls_back_to_espeak_without_piper_voices():
    router = TtsRouter.from_catalog({})
    try:
        assert {"kk", "ru", "uz", "ky", "tt", "tr", "az"} <= set(router.languages)
        assert router.model_id_for("kk") == "espeak-ng:kk"
        assert router.model_id_for("uz-UZ") == "espeak-ng:uz"
        assert router.model_id_for("xx") is None
        syn = router.synthesize(KK_TWO, "kk")
        assert isinstance(syn, Synthesis)
        chunks = list(syn)
        assert len(chunks) == 2 and syn.model_id == "espeak-ng:kk"
        with pytest.raises(TtsError, match="no voice for language 'xx'"):
            list(router.synthesize("test", "xx"))
    finally:
        router.close()


def test_router_uses_piper_where_configured(tiny_voice, caplog):
    caplog.set_level(logging.WARNING, logger="dauys.tts")
    settings = make_settings(tts={"voices": {"kk": str(tiny_voice), "ru": "/nonexistent/ru_RU-irina-medium.onnx", "kaa": "espeak-ng:kk"}})
    router = TtsRouter.from_settings(settings.tts)
    try:
        assert router.model_id_for("kk") == "piper:kk_KZ-dauys_test-x_low"
        assert router.model_id_for("ru") == "espeak-ng:ru"  # configured but missing: espeak-ng
        assert router.model_id_for("kaa") == "espeak-ng:kk"  # a catalog entry may pick an espeak voice
        assert any("ru" in r.getMessage() and "espeak-ng" in r.getMessage() for r in caplog.records)
        kk = router.synthesize(KK_TWO, "kk")
        kk_chunks = list(kk)
        assert kk.model_id == "piper:kk_KZ-dauys_test-x_low" and {c.rate for c in kk_chunks} == {16000}
        ru = router.synthesize(RU_TWO, "ru")
        assert {c.rate for c in ru} == {ESPEAK_RATE} and ru.model_id == "espeak-ng:ru"
        caps = {d["language"]: d for d in router.describe()}
        assert caps["kk"] == {"language": "kk", "engine": "piper", "model_id": "piper:kk_KZ-dauys_test-x_low", "sample_rate": 16000}
        assert caps["ru"]["engine"] == "espeak-ng"
        assert router.warmup("kk") < 30
    finally:
        router.close()


def test_router_length_scale_setting_applies(tiny_voice):
    base = TtsRouter.from_catalog({"kk": tiny_voice})
    slow = TtsRouter.from_catalog({"kk": tiny_voice}, length_scale=2.0)
    try:
        a = list(base.synthesize("Сәлем.", "kk"))
        b = list(slow.synthesize("Сәлем.", "kk"))
        c = list(slow.synthesize("Сәлем.", "kk", SynthesisConfig(length_scale=1.0)))  # per call wins
        assert len(b[0]) == 2 * len(a[0]) and len(c[0]) == len(a[0])
    finally:
        base.close()
        slow.close()


def test_router_broken_voice_falls_back(tmp_path, tiny_voice, caplog):
    bad = tmp_path / "kk_KZ-broken-x_low.onnx"
    bad.write_bytes(b"not onnx")
    Path(f"{bad}.json").write_text(Path(f"{tiny_voice}.json").read_text(encoding="utf-8"), encoding="utf-8")
    # checked at start-up: the language is served by espeak-ng from the start
    router = TtsRouter.from_catalog({"kk": bad})
    assert router.model_id_for("kk") == "espeak-ng:kk"
    router.close()
    # failing mid-call (not started): each sentence falls back, and provenance says so
    caplog.set_level(logging.WARNING, logger="dauys.tts")
    router = TtsRouter.from_catalog({"kk": bad}, start=False)
    try:
        assert router.model_id_for("kk") == "piper:kk_KZ-broken-x_low"
        syn = router.synthesize(KK_TWO, "kk")
        chunks = list(syn)
        assert len(chunks) == 2 and {c.rate for c in chunks} == {ESPEAK_RATE}
        assert syn.model_id == "espeak-ng:kk"
        assert any("speaking this sentence with espeak-ng:kk" in r.getMessage() for r in caplog.records)
    finally:
        router.close()
    # no fallback: the error reaches the caller
    router = TtsRouter.from_catalog({"kk": bad}, start=False, fallback="none")
    try:
        with pytest.raises(TtsError):
            list(router.synthesize("Сәлем.", "kk"))
    finally:
        router.close()


def test_router_without_any_engine_is_none(monkeypatch):
    monkeypatch.setattr("models.tts.espeak.shutil.which", lambda name: None)
    assert TtsRouter.from_settings(make_settings().tts) is None


# --------------------------------------------------------------------------
# Recognised back
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_espeak_kazakh_is_recognised_back(settings):
    import jiwer

    from models.audio import resample
    from models.whisper import load_whisper

    router = TtsRouter.from_settings(settings.tts)
    text = "Сәлеметсіз бе. Сізге қалай көмектесе аламын?"
    syn = router.synthesize(text, "kk")
    chunks = list(syn)
    router.close()
    assert syn.model_id == "espeak-ng:kk"
    audio16k = resample(np.concatenate([c.samples for c in chunks]), chunks[0].rate, 16000)
    asr = load_whisper(settings.asr)
    rec = asr.recognize(audio16k, "kk", ["kk"])

    def norm(s: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())

    assert rec.language == "kk" and rec.rejected is None, rec
    cer = jiwer.cer(norm(text), norm(rec.text))
    assert cer < 0.6, f"CER {cer:.2f}: {rec.text!r}"  # whisper-base is weak on Kazakh: a loose bound


# --------------------------------------------------------------------------
# scripts/fetch_voices.py (no hub here: catalog, paths, offline failure)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fetch_voices():
    spec = importlib.util.spec_from_file_location("fetch_voices", ROOT / "scripts" / "fetch_voices.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fetch_voices"] = mod  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("fetch_voices", None)


def test_voice_catalog_and_paths(fetch_voices, tmp_path):
    cat = fetch_voices.CATALOG
    assert {"kk_KZ-issai-high", "kk_KZ-iseke-x_low", "kk_KZ-raya-x_low"} <= set(cat)
    assert {v.language for v in cat.values()} >= {"kk", "ru", "tr"}
    assert cat["kk_KZ-issai-high"].license == "CC-BY-4.0"
    assert all(v.license for v in cat.values())
    assert fetch_voices.hub_paths("kk_KZ-issai-high") == {
        "model": "kk/kk_KZ/issai/high/kk_KZ-issai-high.onnx",
        "config": "kk/kk_KZ/issai/high/kk_KZ-issai-high.onnx.json",
        "card": "kk/kk_KZ/issai/high/MODEL_CARD",
    }
    assert fetch_voices.hub_paths("ru_RU-irina-medium")["model"] == "ru/ru_RU/irina/medium/ru_RU-irina-medium.onnx"
    assert fetch_voices.local_paths("kk_KZ-raya-x_low", tmp_path)["config"] == tmp_path / "kk_KZ-raya-x_low.onnx.json"
    assert fetch_voices.default_voices_dir({"XDG_CACHE_HOME": "/srv/cache"}) == Path("/srv/cache/dauys/voices")
    assert fetch_voices.default_voices_dir({}) == Path.home() / ".cache" / "dauys" / "voices"
    assert fetch_voices.select([], ["kk"], False) == ["kk_KZ-issai-high", "kk_KZ-iseke-x_low", "kk_KZ-raya-x_low"]
    with pytest.raises(ValueError, match="espeak-ng speaks it"):
        fetch_voices.select([], ["uz"], False)
    with pytest.raises(ValueError, match="not a Piper voice name"):
        fetch_voices.select(["kk-issai"], [], False)
    assert fetch_voices.card_license("# Model card\n\n* License: CC BY 4.0\n") == "CC BY 4.0"


def test_fetch_voice_places_files_and_prints_settings(fetch_voices, tmp_path, tiny_voice):
    """A local stand-in for hf_hub_download (same signature, writes where it would)."""
    calls = []

    def download(repo_id, filename, revision, local_dir):
        calls.append((repo_id, filename, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        src = {".onnx": tiny_voice, ".json": Path(f"{tiny_voice}.json")}.get(Path(filename).suffix)
        target.write_bytes(src.read_bytes() if src else b"# kk_KZ-issai-high\n\nLicense: CC BY 4.0\n")
        return str(target)

    local = fetch_voices.fetch_voice("kk_KZ-issai-high", tmp_path / "voices", download=download)
    assert {c[0] for c in calls} == {"rhasspy/piper-voices"} and {c[2] for c in calls} == {"v1.0.0"}
    assert local["model"].read_bytes() == tiny_voice.read_bytes()
    assert sorted(p.name for p in (tmp_path / "voices").iterdir()) == [
        "kk_KZ-issai-high.MODEL_CARD", "kk_KZ-issai-high.onnx", "kk_KZ-issai-high.onnx.json",
    ]
    snippet = fetch_voices.toml_snippet({"kk_KZ-issai-high": local["model"]})
    import tomllib

    voices = tomllib.loads(snippet)["tts"]["voices"]
    assert make_settings(tts={"voices": voices}).tts.voices == {"kk": local["model"]}
    # the fetched voice really speaks through the router
    router = TtsRouter.from_catalog(voices)
    try:
        assert router.model_id_for("kk") == "piper:kk_KZ-issai-high"
    finally:
        router.close()


def test_fetch_voices_offline_is_a_clear_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_voices.py"), "kk_KZ-iseke-x_low", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 1
    assert "cannot download kk/kk_KZ/iseke/x_low/kk_KZ-iseke-x_low.onnx" in proc.stderr
    assert "needs network access" in proc.stderr and "copy kk_KZ-iseke-x_low.onnx" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    listing = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_voices.py")], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "kk_KZ-issai-high" in listing.stdout and "CC-BY-4.0" in listing.stdout
