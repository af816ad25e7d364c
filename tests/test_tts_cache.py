"""The speech cache of fixed texts (tts.cache_mb, tts.prefill; models/tts/cache.py): what is kept,
what is never kept, that cached speech is the voice's own, and that a cached reply is marked with
its own reply's watermark like any other."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from models.audio import AudioChunk
from models.tts import TtsRouter
from models.tts.base import SynthesisConfig
from models.tts.cache import SpeechCache
from pipeline import watermark
from server.services import fixed_texts
from tests.helpers.server import collect


def _chunk(seconds: float, rate: int = 16000, value: float = 0.25) -> AudioChunk:
    return AudioChunk(np.full(int(seconds * rate), value, np.float32), rate)


def test_only_sentences_of_the_allowed_texts_are_kept():
    cache = SpeechCache(10_000_000)
    assert cache.allow(["Сәлеметсіз бе. Картаңыз бұғатталды.", "Hello there, how are you today?"]) >= 3
    cfg = SynthesisConfig()
    assert cache.put("espeak-ng:kk", "kk", cfg, "Картаңыз бұғатталды.", [_chunk(0.5)])
    assert not cache.put("espeak-ng:kk", "kk", cfg, "Менің ИИН-ім 900101300123.", [_chunk(0.5)])  # a caller's words: never
    got = cache.get("espeak-ng:kk", "kk", cfg, "  Картаңыз   бұғатталды. ")  # spacing does not matter
    assert got is not None and np.allclose(got[0].samples, 0.25, atol=1 / 32767) and got[0].rate == 16000
    # another voice, language or speaking rate did not say it
    assert cache.get("piper:kk_KZ-issai-high", "kk", cfg, "Картаңыз бұғатталды.") is None
    assert cache.get("espeak-ng:kk", "ru", cfg, "Картаңыз бұғатталды.") is None
    assert cache.get("espeak-ng:kk", "kk", SynthesisConfig(length_scale=1.2), "Картаңыз бұғатталды.") is None
    assert (cache.hits, cache.misses) == (1, 3)


def test_new_texts_drop_what_is_no_longer_said_and_the_size_is_bounded():
    cache = SpeechCache(3 * 16000 * 2)  # three seconds of 16-bit audio
    cfg = SynthesisConfig()
    cache.allow(["Бір.", "Екі.", "Үш.", "Төрт."])
    for word in ("Бір.", "Екі.", "Үш."):
        assert cache.put("v", "kk", cfg, word, [_chunk(1.0)])
    cache.get("v", "kk", cfg, "Бір.")  # recently used: kept
    assert cache.put("v", "kk", cfg, "Төрт.", [_chunk(1.0)])
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    assert cache.has("v", "kk", cfg, "Бір.") and not cache.has("v", "kk", cfg, "Екі.")
    cache.allow(["Бір."])  # the knowledge base changed
    assert len(cache) == 1 and cache.bytes == 16000 * 2
    assert not cache.put("v", "kk", cfg, "Үш.", [_chunk(1.0)])
    assert not SpeechCache(100).put("v", "kk", cfg, "Бір.", [_chunk(1.0)])  # larger than the whole cache


def test_cached_speech_is_what_the_voice_says():
    router = TtsRouter.from_catalog({})
    text = "Картаңызды мобильді қосымшада бұғаттаңыз. Жаңа картаны тегін тапсырыс беруге болады."
    fresh = list(router.synthesize(text, "kk"))
    assert router.cache_texts([("kk", text)], 50_000_000) >= 2
    n, _ = router.prefill()
    assert n == 2 and len(router.cache) == 2
    cached = list(router.synthesize(text, "kk"))
    assert router.cache.hits == 2
    a, b = np.concatenate([c.samples for c in fresh]), np.concatenate([c.samples for c in cached])
    assert len(a) == len(b) and np.max(np.abs(a - b)) <= 1 / 32767 + 1e-6
    # a sentence nobody registered is synthesised every time, never kept
    list(router.synthesize("Менің атым Айгүл, телефоным сегіз жеті сегіз.", "kk"))
    assert len(router.cache) == 2


def test_the_fixed_texts_are_the_operators(settings, services):
    texts = fixed_texts(settings, services.dialogue)
    said = {t for _, t in texts}
    assert settings.session.disclosure_for("kk")[1] in said and settings.session.disclosure_for("ru")[1] in said
    assert settings.session.not_heard_text("ru") in said and settings.session.handoff_text("kk") in said
    kb = services.dialogue.kb
    assert all(t in said for e in kb.entries for t in e.answers.values())
    assert kb.clarify("confirm", "ru", topic=kb.topic(kb.entries[1], "ru")) in said


async def _ask(port: int, text: str) -> tuple[dict, np.ndarray]:
    async with connect(f"ws://127.0.0.1:{port}/v1/voice") as ws:
        await ws.send(json.dumps({"type": "start", "language": "ru", "output": {"pacing": "none", "sample_rate": 16000}}))
        await collect(ws, lambda e: e["type"] == "audio_end" and e["reply_id"] == "disclosure")
        await ws.send(json.dumps({"type": "text", "text": text}))
        events, audio = await collect(ws, lambda e: e["type"] == "audio_end" and e["reply_id"] != "disclosure")
        await ws.send(json.dumps({"type": "end"}))
    start = next(e for e in events if e["type"] == "audio_start")
    return start, np.frombuffer(bytes(audio[start["reply_id"]]), np.int16).astype(np.float32) / 32768


@pytest.mark.slow
async def test_a_cached_reply_carries_its_own_watermark(make_server, services):
    """Two calls get the same knowledge-base answer from the cache; each is marked with its own
    reply's payload (session and reply ids), and the detector reads each."""
    assert services.tts.cache is not None
    for _ in range(600):  # the fixed texts are pre-synthesised in the background at start-up
        if services.tts.cache.has(services.tts.model_id_for("ru"), "ru", services.tts.default_config, "Обычно карта блокируется после трёх неверных вводов пин-кода или из-за подозрительной операции."):
            break
        await asyncio.sleep(0.05)
    server = await make_server()
    hits = services.tts.cache.hits
    (s1, a1), (s2, a2) = [await _ask(server.port, "Как разблокировать карту?") for _ in range(2)]
    assert services.tts.cache.hits - hits >= 2 * 3  # disclosure and the answer's sentences, twice
    assert s1["watermark"] != s2["watermark"]
    for start, samples in ((s1, a1), (s2, a2)):
        found = watermark.detect(samples, 16000)
        assert found.found and found.label == start["watermark"], (found, start["watermark"])
