"""Codecs and resampling: the conversions done once at the edge."""

import warnings

import numpy as np
import pytest

from models.audio import (
    AudioChunk,
    Encoding,
    InputConverter,
    OutputConverter,
    decode_wire,
    encode_wire,
    mulaw_decode,
    mulaw_encode,
    read_audio,
    resample,
    wav_bytes,
)
from tests.helpers.audio import clip

# G.711 mu-law anchor values (ITU-T G.711 table / Sun reference decoder)
DECODE_ANCHORS = {0x00: -32124, 0x0F: -16764, 0x10: -15996, 0x7E: -8, 0x7F: 0, 0x80: 32124, 0x8F: 16764, 0xF0: 120, 0xFE: 8, 0xFF: 0}


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop

            return audioop
        except ImportError:  # Python >= 3.13
            return None


def test_mulaw_decode_anchor_values():
    got = mulaw_decode(bytes(DECODE_ANCHORS))
    assert list(got) == list(DECODE_ANCHORS.values())


def test_mulaw_tables_match_reference_implementation():
    audioop = _audioop()
    if audioop is None:
        pytest.skip("audioop (the CPython reference G.711 codec) is gone in this Python")
    codes = bytes(range(256))
    assert np.array_equal(mulaw_decode(codes), np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"))
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert mulaw_encode(pcm) == audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)


def test_mulaw_encode_anchor_values():
    assert mulaw_encode(np.array([0, -1, 32767, -32768, 100, -100], np.int16)) == bytes([0xFF, 0x7E, 0x80, 0x00, 0xF2, 0x72])


def test_mulaw_round_trip_error_is_within_segment_step():
    pcm = np.arange(-32768, 32768, 7, dtype=np.int32)
    back = mulaw_decode(mulaw_encode(pcm)).astype(np.int32)
    err = np.abs(back - pcm)
    # step size doubles per segment: error <= half the largest step (1024) plus bias rounding
    assert err.max() <= 1100
    small = np.abs(pcm) < 100
    assert err[small].max() <= 8  # the first segment steps by 8 in 16-bit units


def tone(freq, rate, seconds=1.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)]


def test_8k_mulaw_to_16k_keeps_tone_and_level():
    wire = encode_wire(tone(440, 8000, 1.0), Encoding.MULAW)
    conv = InputConverter(Encoding.MULAW, 8000)
    out = np.concatenate([conv.convert(wire[i : i + 160]).samples for i in range(0, len(wire), 160)] + [conv.flush().samples])
    assert abs(len(out) - 16000) <= 64
    assert abs(dominant_freq(out[1000:-1000], 16000) - 440) < 3
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_downsampling_removes_content_above_new_nyquist():
    # 11 kHz at 48 kHz cannot exist at 16 kHz: a proper resampler filters it, naive decimation aliases it to 5 kHz
    conv = InputConverter(Encoding.PCM_S16LE, 48000)
    wire = encode_wire(tone(11000, 48000, 1.0), Encoding.PCM_S16LE)
    out = np.concatenate([conv.convert(wire[i : i + 1920]).samples for i in range(0, len(wire), 1920)])
    assert np.sqrt(np.mean(out[2000:] ** 2)) < 0.01


def test_split_samples_and_stereo_frames_are_reassembled():
    x = tone(300, 16000, 0.5)
    stereo = np.stack([x, x], axis=1).reshape(-1)
    wire = encode_wire(stereo, Encoding.PCM_S16LE)
    conv = InputConverter(Encoding.PCM_S16LE, 16000, channels=2)
    parts = [wire[i : i + 333] for i in range(0, len(wire), 333)]  # odd sizes split samples and pairs
    out = np.concatenate([conv.convert(p).samples for p in parts])
    assert len(out) == len(x)
    assert np.allclose(out, x, atol=1 / 32768 * 2)


def test_output_converter_resamples_and_encodes():
    oc = OutputConverter(Encoding.MULAW, 8000)
    data = oc.convert(AudioChunk(tone(500, 22050, 0.5), 22050), last=True)
    back = decode_wire(data, Encoding.MULAW)
    assert abs(len(back) - 4000) <= 40
    assert abs(dominant_freq(back, 8000) - 500) < 5


def test_read_audio_reads_shared_clip_and_wav_round_trip(tmp_path):
    a = read_audio(clip("kk_kscd_ex1.wav"))
    assert a.rate == 16000 and 4.9 < a.seconds < 5.2
    p = tmp_path / "x.wav"
    p.write_bytes(wav_bytes(AudioChunk(resample(a.samples, 16000, 8000), 8000)))
    b = read_audio(p)
    assert abs(b.seconds - a.seconds) < 0.01
