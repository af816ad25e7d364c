"""G.711 A-law (models/audio.py): bit-exact against CPython's reference codec where it still exists,
and against anchor values of the ITU-T G.711 tables where it does not (Python >= 3.13)."""

import warnings

import numpy as np
import pytest

from models.audio import alaw_decode, alaw_encode

# code -> linear value (16-bit units) from the G.711 A-law table (Sun reference alaw2linear)
DECODE_ANCHORS = {0x55: -8, 0xD5: 8, 0x54: -24, 0xD4: 24, 0x2A: -32256, 0xAA: 32256, 0x00: -5504, 0x80: 5504, 0x7F: -848, 0xFF: 848}


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop

            return audioop
        except ImportError:  # Python >= 3.13
            return None


def test_alaw_decode_anchor_values():
    assert list(alaw_decode(bytes(DECODE_ANCHORS))) == list(DECODE_ANCHORS.values())


def test_alaw_encode_anchor_values():
    # silence codes are 0xD5 / 0x55 (the even bits inverted), full scale 0xAA / 0x2A
    assert alaw_encode(np.array([0, -1, 32767, -32768, 100, -100], np.int16)) == bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD3, 0x53])


def test_alaw_tables_match_reference_implementation():
    audioop = _audioop()
    if audioop is None:
        pytest.skip("audioop (the CPython reference G.711 codec) is gone in this Python")
    codes = bytes(range(256))
    assert np.array_equal(alaw_decode(codes), np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"))
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert alaw_encode(pcm) == audioop.lin2alaw(pcm.astype("<i2").tobytes(), 2)


def test_alaw_round_trip_error_is_within_segment_step():
    pcm = np.arange(-32768, 32768, 7, dtype=np.int32)
    back = alaw_decode(alaw_encode(pcm)).astype(np.int32)
    err = np.abs(back - pcm)
    assert err.max() <= 1024  # the top segment steps by 1024 (16-bit units); decoding takes the middle
    small = np.abs(pcm) < 256
    assert err[small].max() <= 16  # the first two segments step by 16
    assert alaw_encode(alaw_decode(bytes(range(256)))) == bytes(range(256))  # every code survives
