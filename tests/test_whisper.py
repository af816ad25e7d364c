"""The recogniser on real weights (embedded whisper-base, CPU int8) and real clips."""

import jiwer
import numpy as np
import pytest

from models.audio import read_audio
from models.whisper import choose_language, collapse_loops, compression_ratio
from pipeline.offline import transcribe_audio
from tests.helpers.audio import clip, reference
from tests.helpers.transcripts import norm

pytestmark = pytest.mark.slow


def test_engine_runs_int8_on_cpu_here(services):
    assert services.asr.device == "cpu" and services.asr.compute_type == "int8"
    assert services.asr.model_id == "embedded:whisper-base"


def test_kazakh_sentence_fixed_language(services):
    rec = services.asr.recognize(read_audio(clip("kk_kscd_ex1.wav")).samples, "kk", ["kk"])
    assert rec.language == "kk" and rec.rejected is None
    assert 0 < rec.confidence <= 1
    # measured 0.35 (CER after normalisation) for the whole clip in one decode
    assert jiwer.cer(norm(reference("kk_kscd_ex1.wav")), norm(rec.text)) < 0.5, rec.text


def test_detection_is_restricted_to_allowed_languages(services):
    audio = read_audio(clip("uz_uzbekvoice_1.wav")).samples[: 16000 * 8]
    for allowed in (["kk", "ru"], ["uz", "tr"], ["en"]):
        rec = services.asr.recognize(audio, None, allowed)
        assert rec.language in allowed
        assert set(rec.language_probs) == set(allowed)


def test_kyrgyz_is_decoded_with_the_kazakh_token_and_labelled_ky(services):
    audio = read_audio(clip("kk_kscd_ex2.wav")).samples
    rec = services.asr.recognize(audio, "ky", ["ky"])
    assert rec.language == "ky"
    assert services.asr.whisper_language("ky") == "kk"
    assert rec.text == services.asr.recognize(audio, "kk", ["kk"]).text


def test_prior_and_alias_in_language_choice():
    raw = {"kk": 0.08, "tr": 0.9, "ru": 0.01}
    assert choose_language(raw, {"kk": 1, "tr": 1, "ru": 1})[0] == "tr"
    assert choose_language(raw, {"kk": 3, "tr": 0.1, "ru": 1})[0] == "kk"
    # an alias shares its target's probability; the real language wins the tie
    lang, share, _ = choose_language({"kk": 0.5, "ky": 0.5}, {"kk": 1, "ky": 1}, alias=lambda x: "kk" if x == "ky" else x)
    assert lang == "kk" and share == pytest.approx(1.0)


def test_non_speech_audio_given_to_whisper_is_rejected(services):
    """Even when audio reaches the decoder (VAD bypassed), noise yields no text."""
    rng = np.random.default_rng(0)
    for audio in (np.zeros(16000 * 3, np.float32), (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32)):
        rec = services.asr.recognize(audio, None, ["kk", "ru", "en"])
        assert rec.rejected is not None, rec.text


def test_hallucination_guards():
    assert collapse_loops("apriyələlələlələlələlələlə") == "apriyələ"
    assert collapse_loops("алға қарай бес метр") == "алға қарай бес метр"
    assert compression_ratio("ha " * 50) > 2.4 > compression_ratio("Алға қарай бес метр жүр, тоқта")


def test_offline_transcription_uses_the_segmenter(services, settings):
    audio = read_audio(clip("kk_kscd_ex1.wav")).samples
    audio = np.concatenate([np.zeros(16000 * 3, np.float32), audio, np.zeros(16000 * 3, np.float32)])
    out = list(transcribe_audio(services.asr, services.vad, settings, audio, "kk"))
    assert out and out[0]["start"] > 3.0 and out[-1]["end"] < 8.6
    assert all(u["language"] == "kk" and u["text"] for u in out)


@pytest.fixture(scope="module")
def prompted(settings):
    """The engine with a domain prompt far longer than Whisper's 223-token previous-text budget."""
    import logging

    from models.whisper import load_whisper

    prompt = " ".join(["Демо Банк: карта, пин-код, депозит, несие, аударым, кэшбэк, банкомат."] * 40)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("dauys.asr").addHandler(handler)
    try:
        engine = load_whisper(settings.asr.model_copy(update={"prompt": prompt}))
    finally:
        logging.getLogger("dauys.asr").removeHandler(handler)
    return engine, prompt, [r.getMessage() for r in records]


def test_a_prompt_longer_than_the_model_takes_is_cut_and_logged_once(prompted):
    from models.whisper import MAX_PROMPT_TOKENS

    engine, prompt, messages = prompted
    cut = [m for m in messages if m.startswith("asr.prompt:")]
    assert len(cut) == 1 and f"the last {MAX_PROMPT_TOKENS} are used" in cut[0]
    assert len(engine._previous) == MAX_PROMPT_TOKENS + 1 and engine._prompt("kk")[-4:] == engine._start("kk")
    rec = engine.recognize(read_audio(clip("kk_kscd_ex1.wav")).samples, "kk", ["kk"])
    assert rec.rejected is None and rec.text  # it still decodes


def test_a_prompt_is_not_repeated_back_on_silence_or_noise(prompted):
    from models.whisper import _echoes, _norm_words

    engine, prompt, _ = prompted
    rng = np.random.default_rng(1)
    for audio in (np.zeros(16000 * 3, np.float32), (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32)):
        rec = engine.recognize(audio, "kk", ["kk"])
        assert rec.rejected is not None, rec.text
    assert _echoes("Карта, пин-код, депозит", _norm_words(prompt)) and not _echoes("Картам жоғалды", _norm_words(prompt))


def test_the_token_budget_is_what_max_tokens_per_second_says(services, monkeypatch):
    """CTranslate2's Whisper decodes at most max_length / 2 steps; the engine asks for twice the
    budget so that ``asr.max_tokens_per_second`` means what it says (it used to give half)."""
    from dataclasses import replace

    from models.whisper import WhisperEngine

    for prompt_len in (4, 227):  # the start tokens alone; with a full previous-text prompt
        for max_new in (1, 23, 95, 150, 222, 224, 400):  # bounded only by Whisper's 448-position context
            assert WhisperEngine._length_cap(prompt_len, max_new) == min(max_new, 224, 448 - (prompt_len - 1))
    engine = services.asr
    audio = read_audio(clip("kk_kscd_ex1.wav")).samples  # 5.04 s; its reference is 38 tokens
    monkeypatch.setattr(engine, "options", replace(engine.options, max_tokens_per_second=2.0))
    budget = engine._max_new(len(audio) / 16000)
    assert budget == 30
    res = engine._generate(engine._encode_features([engine._features(audio, engine.batch_key(audio))]), [engine._prompt("kk")], budget)[0]
    assert len(res.sequences_ids[0]) == budget  # all 30, not 15
    assert engine.recognize(audio, "kk", ["kk"]).rejected == "repetition"  # a decode that hits its budget is dropped
