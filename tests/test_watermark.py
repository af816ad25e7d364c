"""The in-band watermark (pipeline/watermark.py): round trips, the phone channel, integrity, no false marks."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest
import soxr

from models.audio import AudioChunk, Encoding, decode_wire, encode_wire, read_audio, write_wav
from pipeline import watermark as wm
from tests.helpers.paths import SHARED_AUDIO

SENTENCES = [
    ("kk", "Сәлеметсіз бе, сізге қалай көмектесе аламын?"),
    ("kk", "Біздің кеңсе дүйсенбіден жұмаға дейін сағат тоғыздан алтыға дейін жұмыс істейді."),
    ("ru", "Ваша заявка принята, мы свяжемся с вами в ближайшее время."),
    ("ru", "К сожалению, я не могу ответить на этот вопрос."),
]


def espeak(text: str, voice: str, rate: int = 22050, wpm: int = 160) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng); .ci/run installs it")
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([exe, "-v", voice, "-s", str(wpm), "-w", f.name, text], check=True, capture_output=True)
        return read_audio(f.name, rate).samples


@pytest.fixture(scope="module")
def speech22() -> list[np.ndarray]:
    """The four sentences at 22050 Hz (espeak-ng's and Piper's usual rate)."""
    return [espeak(text, lang) for lang, text in SENTENCES]


def phone_channel(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """8 kHz, +-6 dB, G.711 mu-law, white noise at 20 dB SNR (of the active speech level): 8 kHz float32 out."""
    y = soxr.resample(x.astype(np.float32), rate, 8000, quality="HQ")
    y = y * 10 ** (rng.uniform(-6, 6) / 20)
    y = decode_wire(encode_wire(y, Encoding.MULAW), Encoding.MULAW)
    frames = (y[: len(y) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1)
    level = frames[frames >= frames.max() * 1e-4].mean() if len(frames) else 0.0
    return (y + rng.normal(0, np.sqrt(level / 100), len(y))).astype(np.float32)


def excerpt(x: np.ndarray, rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * rate)
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start : start + n]


# ---------------------------------------------------------------- payload
def test_payload_layout_and_label():
    p = wm.payload_for(3, "session-42/reply-7")
    assert 0 <= p < 1 << wm.PAYLOAD_BITS and wm.PAYLOAD_BITS >= 16
    assert p >> 12 == 3 and p == wm.payload_for(3, "session-42/reply-7")
    assert wm.payload_for(3, "session-42/reply-8") != p or wm.payload_for(3, "session-42/reply-9") != p
    assert wm.format_payload(0x1A2B) == "dauys-1a2b"
    assert wm.parse_payload(wm.format_payload(p)) == p
    with pytest.raises(ValueError):
        wm.payload_for(16, "x")
    with pytest.raises(ValueError):
        wm.embed(np.zeros(8000, np.float32), 8000, 1 << 16)


def test_crc_rejects_every_single_group_error_and_most_random_words():
    rng = np.random.default_rng(1)
    k = wm.RM_M + 1
    for payload in rng.integers(0, 1 << 16, 200):
        h = wm._encode(int(payload)).reshape(wm.N_GROUPS, -1) @ wm._hadamard()  # codeword correlations
        word, _, _ = wm._decode(h)
        assert wm._word_payload(word) == payload
        # a decoding error replaces one group's 8 bits: always caught (CRC-8 catches every burst of <= 8 bits)
        for g in range(wm.N_GROUPS):
            shift = wm.CODE_BITS - (g + 1) * k
            for other in rng.integers(1, 1 << k, 20):
                assert wm._word_payload(word ^ (int(other) << shift)) is None
    passed = sum(wm._word_payload(int(w)) is not None for w in rng.integers(0, 1 << wm.CODE_BITS, 20000))
    assert passed < 20000 / 256 * 1.5


def test_a_mark_with_a_bad_crc_is_not_reported(speech22):
    """A strong, well-synchronised carrier whose check bits are wrong: rejected, not misreported."""
    x = speech22[1]
    good = wm._encode(0x1234)
    bad = good.copy()
    bad[-wm.GROUP_CHIPS :] = wm._encode(0x4321)[-wm.GROUP_CHIPS :]  # the last group (the CRC byte) of another payload
    assert wm._word_payload(wm._decode(bad.reshape(wm.N_GROUPS, -1) @ wm._hadamard())[0]) is None
    m, phasor, chip = wm._lines()
    spec = np.zeros(22050 // 2 + 1, complex)
    spec[np.round(m / wm.PERIOD_S).astype(int)] = bad[chip] * phasor
    carrier = np.fft.irfft(spec, n=22050, norm="forward")
    carrier = np.tile(carrier / np.sqrt(np.mean(carrier**2)), len(x) // 22050 + 1)[: len(x)]
    marked = x + 0.02 * carrier.astype(np.float32)
    d = wm.detect(marked, 22050)
    assert d.score > 3 * wm.THRESHOLD  # clearly a carrier...
    assert not d.found and d.payload is None and d.confidence == 0.0  # ...but its payload does not check out


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("rate", [22050, 16000, 8000, 48000])
def test_round_trip_any_rate_any_offset(speech22, rate):
    rng = np.random.default_rng(rate)
    x = soxr.resample(speech22[2], 22050, rate, quality="HQ").astype(np.float32)
    payload = int(rng.integers(0, 1 << 16))
    y = wm.embed(x, rate, payload)
    assert y.dtype == np.float32 and y.shape == x.shape
    d = wm.detect(y, rate)
    assert d.found and d.payload == payload and d.confidence > 0.9999 and not d.inverted
    for _ in range(3):  # an excerpt starting anywhere, mid-period
        d = wm.detect(excerpt(y, rate, 1.5, rng), rate)
        assert d.found and d.payload == payload


def test_survives_the_phone_channel(speech22):
    rng = np.random.default_rng(7)
    for i, x in enumerate(speech22):
        payload = wm.payload_for(i, f"call-{i}")
        y = wm.embed(x, 22050, payload)
        for _ in range(3):
            d = wm.detect(phone_channel(excerpt(y, 22050, 1.5 + rng.uniform(0, 0.5), rng), 22050, rng), 8000)
            assert d.found and d.payload == payload, (i, d)


def test_polarity_inverted_line(speech22):
    y = wm.embed(speech22[0], 22050, 0xBEEF)
    d = wm.detect(-y, 22050)
    assert d.found and d.payload == 0xBEEF and d.inverted


@pytest.mark.slow
def test_reply_inside_a_long_recording(speech22):
    """A 3 s marked reply in the middle of 30 s of other (unmarked) speech: found by the windowed search."""
    rng = np.random.default_rng(3)
    other = np.concatenate([speech22[0], speech22[3], speech22[1], speech22[2]] * 3)[: 30 * 22050]
    reply = wm.embed(speech22[1][: 3 * 22050], 22050, 0x0ACE)
    mix = other.copy()
    mix[12 * 22050 : 15 * 22050] = reply
    d = wm.detect(phone_channel(mix, 22050, rng), 8000)
    assert d.found and d.payload == 0x0ACE and 8.0 <= d.start_s <= 15.0


# ---------------------------------------------------------------- streaming
def test_streaming_embedder_equals_whole_signal(speech22):
    rng = np.random.default_rng(11)
    x = np.concatenate([speech22[0], np.zeros(3000, np.float32), speech22[2]])  # two sentences of one reply
    whole = wm.embed(x, 22050, 0x5A5A)
    e = wm.Embedder(22050, 0x5A5A)
    out, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, 6000))
        out.append(e.process(x[pos : pos + n]))
        assert e.position - e.emitted <= e.latency  # the output lags the input by < 24 ms
        pos += n
    out.append(e.flush())
    streamed = np.concatenate(out)
    assert e.position == e.emitted == len(x)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    assert wm.detect(streamed[len(speech22[0]) - 11025 :], 22050).payload == 0x5A5A  # across the sentence boundary


def test_rate_change_mid_reply_keeps_the_phase(speech22):
    a, b = speech22[0], soxr.resample(speech22[3], 22050, 16000, quality="HQ").astype(np.float32)
    e1 = wm.Embedder(22050, 0x7777)
    ya = np.concatenate([e1.process(a), e1.flush()])
    e2 = wm.Embedder(16000, 0x7777, start_s=e1.position / e1.rate)
    yb = np.concatenate([e2.process(b), e2.flush()])
    joined = np.concatenate([soxr.resample(ya, 22050, 16000, quality="HQ"), yb])
    cut = len(joined) - len(yb)
    d = wm.detect(joined[cut - 16000 : cut + 16000], 16000)  # 1 s of each side
    assert d.found and d.payload == 0x7777


# ---------------------------------------------------------------- quality
def test_mark_is_at_least_20_db_below_the_speech(speech22):
    for i, x in enumerate(speech22):
        y = wm.embed(x, 22050, 1000 + i)
        assert wm.mark_snr_db(x, y) >= 20.0
        m = np.fft.rfft(y.astype(np.float64) - x)
        s = np.fft.rfft(x.astype(np.float64))
        f = np.fft.rfftfreq(len(x), 1 / 22050)
        band = (f >= 300) & (f <= 3400)
        assert 10 * np.log10(np.sum(np.abs(s[band]) ** 2) / np.sum(np.abs(m[band]) ** 2)) >= 20.0  # in band too
        assert np.sum(np.abs(m[~band]) ** 2) < 0.01 * np.sum(np.abs(m) ** 2)  # and the mark stays in the phone band


def test_silence_stays_silent(speech22):
    x = np.concatenate([np.zeros(11025, np.float32), speech22[0], np.zeros(22050, np.float32)])
    y = wm.embed(x, 22050, 0x1111)
    assert not np.any(y[:11025])  # before the speech
    tail = len(x) - 22050 + int(0.03 * 22050)  # from 30 ms after the speech ends
    assert not np.any(y[tail:])
    assert np.array_equal(wm.embed(np.zeros(22050, np.float32), 22050, 5), np.zeros(22050, np.float32))


# ---------------------------------------------------------------- no false marks
def _shared_clips() -> list[tuple[str, np.ndarray]]:
    clips = sorted(SHARED_AUDIO.glob("*.wav"))
    assert len(clips) >= 10, f"shared clips missing in {SHARED_AUDIO}"
    return [(p.name, read_audio(p, 16000).samples) for p in clips]


@pytest.mark.slow
def test_no_mark_in_the_shared_human_clips():
    rng = np.random.default_rng(5)
    checked = 0
    for name, x in _shared_clips():
        windows = [x]  # whole
        for length in (1.5, 3.0, 6.0):
            n = int(length * 16000)
            windows += [x[s : s + n] for s in range(0, len(x) - n + 1, 16000)]
        for w in windows:
            for audio, rate in ((w, 16000), (phone_channel(w, 16000, rng), 8000)):
                d = wm.detect(audio, rate)
                assert not d.found and d.payload is None, (name, len(w), d)
                assert d.score < wm.THRESHOLD
                checked += 1
    assert checked > 100


def test_no_mark_in_noise_tones_music_silence():
    rng = np.random.default_rng(9)
    t = np.arange(5 * 16000) / 16000
    white = rng.normal(0, 0.1, len(t))
    pink = np.fft.irfft(np.fft.rfft(rng.normal(size=len(t))) / np.sqrt(np.arange(len(t) // 2 + 1) + 1.0), n=len(t))
    beat = ((t % 0.5) < 0.1) * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 660 * t)  # 120 bpm, the carrier's period
    signals = {
        "white": white, "pink": pink / pink.std() * 0.05, "tone": 0.3 * np.sin(2 * np.pi * 1000 * t),
        "dial": 0.2 * (np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t)), "beat": 0.3 * beat,
        "silence": np.zeros(len(t)), "dither": rng.normal(0, 3e-5, len(t)),
        "espeak": espeak("Бүгін кешке досыммен кинотеатрға барамын.", "kk", 16000),
    }
    for name, x in signals.items():
        x = x.astype(np.float32)
        for audio, rate in ((x, 16000), (x[: int(1.7 * 16000)], 16000), (phone_channel(x, 16000, rng) if np.any(x) else x, 8000)):
            d = wm.detect(audio, rate)
            assert not d.found and d.payload is None, (name, d)
    assert not wm.detect(np.zeros(100, np.float32), 16000).found  # too short to say


# ---------------------------------------------------------------- file + speed
def test_detect_file(tmp_path, speech22):
    y = wm.embed(speech22[3], 22050, 0x2B2B)
    path = tmp_path / "reply.wav"
    write_wav(path, AudioChunk(phone_channel(y, 22050, np.random.default_rng(2)), 8000))
    d = wm.detect_file(path)
    assert d.found and d.payload == 0x2B2B and d.label == "dauys-2b2b"
    clean = tmp_path / "clean.wav"
    write_wav(clean, AudioChunk(speech22[3], 22050))
    assert not wm.detect_file(clean).found


def test_embedding_and_detection_are_cheap(speech22):
    x = np.concatenate(speech22 * 2)
    secs = len(x) / 22050
    t = time.perf_counter()
    e = wm.Embedder(22050, 1)
    for i in range(0, len(x), 441):  # 20 ms chunks, as streamed
        e.process(x[i : i + 441])
    e.flush()
    assert (time.perf_counter() - t) / secs < 0.05
    y = wm.embed(x, 22050, 1)[: 10 * 22050]
    t = time.perf_counter()
    wm.detect(y, 22050)
    assert time.perf_counter() - t < 1.0


# ---------------------------------------------------------------- keyed mark (compliance.watermark_key)
def test_keyed_mark_is_found_only_with_its_key(speech22):
    key, wrong = wm.key_seed("operator-secret-1"), wm.key_seed("operator-secret-2")
    assert wm.key_seed("") == wm.key_seed(None) == wm.KEY and key not in (wrong, wm.KEY)
    y = wm.embed(speech22[1], 22050, 0x1C0D, key=key)
    d = wm.detect(y, 22050, key=key)
    assert d.found and d.payload == 0x1C0D
    rng = np.random.default_rng(12)
    d = wm.detect(phone_channel(excerpt(y, 22050, 2.0, rng), 22050, rng), 8000, key=key)
    assert d.found and d.payload == 0x1C0D  # the phone line too
    for other in (wrong, wm.KEY):  # a wrong key, or none (the public seed): nothing there
        d = wm.detect(y, 22050, key=other)
        assert not d.found and d.payload is None and d.score < wm.THRESHOLD
    public = wm.embed(speech22[1], 22050, 0x1C0D)  # the unkeyed default is unchanged and not found with a key
    assert wm.detect(public, 22050).payload == 0x1C0D and not wm.detect(public, 22050, key=key).found
    e = wm.Embedder(22050, 0x1C0D, key=key)  # streaming takes the key too
    streamed = np.concatenate([e.process(speech22[1][:5000]), e.process(speech22[1][5000:]), e.flush()])
    np.testing.assert_allclose(streamed, y, atol=1e-6)
