"""One audio type, and the conversions done once at the edge.

Inside the pipeline all audio is :class:`AudioChunk`: float32 mono samples in
[-1, 1] with their sample rate attached.  Wire formats (16-bit little-endian
PCM, G.711 mu-law, any rate from 8 to 48 kHz, mono or stereo) are converted
by one stateful :class:`InputConverter` per stream and direction, using
soxr's streaming resampler (proper anti-aliasing; never ``audioop.ratecv``).
"""

from __future__ import annotations

import enum
import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

ASR_RATE = 16000
"""Sample rate (Hz) of everything the VAD and the recogniser see."""


class Encoding(str, enum.Enum):
    PCM_S16LE = "pcm_s16le"
    MULAW = "mulaw"

    @property
    def sample_width(self) -> int:
        """Bytes per sample on the wire."""
        return 2 if self is Encoding.PCM_S16LE else 1


MIN_RATE = 8000
MAX_RATE = 48000


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 audio with its format attached."""

    samples: np.ndarray
    """float32 samples in [-1, 1], shape (n,)."""
    rate: int
    """Sample rate in Hz."""

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return len(self.samples) / self.rate

    def __len__(self) -> int:
        return len(self.samples)


# --------------------------------------------------------------------------
# G.711 mu-law (ITU-T G.711, the Sun reference implementation's arithmetic)
# --------------------------------------------------------------------------
_BIAS = 0x84
_CLIP = 32635  # 8159 in the 14-bit domain


def _build_ulaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


_ULAW_DECODE = _build_ulaw_decode_table()


def _build_ulaw_encode_table() -> np.ndarray:
    """mu-law code for every 16-bit sample value (index = sample + 32768).

    The 14-bit arithmetic of the Sun/ITU reference encoder (also CPython's
    audioop), so codes match bit for bit, rounding at segment edges included.
    """
    v = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), _CLIP >> 2) + (_BIAS >> 2)
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, v, side="left")
    uval = (seg << 4) | ((v >> (seg + 1)) & 0x0F)
    return (uval ^ mask).astype(np.uint8)


_ULAW_ENCODE = _build_ulaw_encode_table()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> G.711 mu-law bytes."""
    idx = samples.astype(np.int32) + 32768
    return _ULAW_ENCODE[idx].tobytes()


# --------------------------------------------------------------------------
# G.711 A-law (ITU-T G.711, the Sun reference implementation's arithmetic):
# European and Kazakh trunks (E1) carry A-law; carriers hand it over as-is
# (Asterisk chan_websocket ``alaw``, Telnyx ``PCMA``).
# --------------------------------------------------------------------------
def _build_alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ALAW_DECODE = _build_alaw_decode_table()


def _build_alaw_encode_table() -> np.ndarray:
    """A-law code for every 16-bit sample value (index = sample + 32768): the 13-bit arithmetic of
    the Sun/ITU reference encoder (also CPython's audioop.lin2alaw), bit for bit."""
    v = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(v >= 0, 0xD5, 0x55)
    v = np.where(v >= 0, v, -v - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, v, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = np.where(seg >= 8, 0x7F, (seg << 4) | ((v >> shift) & 0x0F))
    return (aval ^ mask).astype(np.uint8)


_ALAW_ENCODE = _build_alaw_encode_table()


def alaw_decode(data: bytes) -> np.ndarray:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> G.711 A-law bytes."""
    idx = samples.astype(np.int32) + 32768
    return _ALAW_ENCODE[idx].tobytes()


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


def decode_wire(data: bytes, encoding: Encoding, channels: int = 1) -> np.ndarray:
    """Wire bytes (whole samples only) -> float32 mono at the wire rate."""
    if encoding is Encoding.MULAW:
        pcm = mulaw_decode(data)
    else:
        pcm = np.frombuffer(data, dtype="<i2")
    x = int16_to_float(pcm)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x


def encode_wire(samples: np.ndarray, encoding: Encoding) -> bytes:
    """float32 mono -> wire bytes."""
    pcm = float_to_int16(samples)
    if encoding is Encoding.MULAW:
        return mulaw_encode(pcm)
    return pcm.astype("<i2").tobytes()


class StreamResampler:
    """A stateful streaming resampler (soxr) for one stream and direction."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._rs = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return samples
        return self._rs.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32), last=last)


class InputConverter:
    """Wire bytes in one declared format -> :class:`AudioChunk` at ``out_rate``.

    Keeps partial samples across frames (a frame may split a sample or a
    stereo pair) and the resampler's filter state across frames.
    """

    def __init__(self, encoding: Encoding, rate: int, channels: int = 1, out_rate: int = ASR_RATE) -> None:
        self.encoding = encoding
        self.rate = rate
        self.channels = channels
        self.out_rate = out_rate
        self._frame_bytes = encoding.sample_width * channels
        self._carry = b""
        self._resampler = StreamResampler(rate, out_rate)

    def convert(self, data: bytes) -> AudioChunk:
        data = self._carry + data
        usable = len(data) - len(data) % self._frame_bytes
        self._carry = data[usable:]
        x = decode_wire(data[:usable], self.encoding, self.channels)
        return AudioChunk(self._resampler.process(x), self.out_rate)

    def flush(self) -> AudioChunk:
        """The resampler's tail, at the end of the stream."""
        self._carry = b""
        return AudioChunk(self._resampler.process(np.zeros(0, np.float32), last=True), self.out_rate)


class OutputConverter:
    """:class:`AudioChunk` (any rate) -> wire bytes in the client's output format."""

    def __init__(self, encoding: Encoding, rate: int) -> None:
        self.encoding = encoding
        self.rate = rate
        self._resamplers: dict[int, StreamResampler] = {}

    def convert(self, chunk: AudioChunk, last: bool = False) -> bytes:
        rs = self._resamplers.get(chunk.rate)
        if rs is None:
            rs = self._resamplers[chunk.rate] = StreamResampler(chunk.rate, self.rate)
        return encode_wire(rs.process(chunk.samples, last=last), self.encoding)


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-signal resampling (files, tests)."""
    if in_rate == out_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples.astype(np.float32, copy=False), in_rate, out_rate, quality="HQ").astype(np.float32)


def read_audio(path: str | Path, rate: int = ASR_RATE) -> AudioChunk:
    """Read any audio file as mono float32 at ``rate``.

    PCM WAV is read with the standard library; anything else (mp3, ogg, m4a,
    mu-law WAV, ...) is decoded with PyAV, which faster-whisper already ships.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, in_rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
        if width != 2:
            raise wave.Error("not 16-bit")
        x = decode_wire(raw, Encoding.PCM_S16LE, channels)
        return AudioChunk(resample(x, in_rate, rate), rate)
    except (wave.Error, EOFError):
        from faster_whisper.audio import decode_audio

        return AudioChunk(decode_audio(str(path), sampling_rate=rate).astype(np.float32), rate)


def wav_bytes(chunk: AudioChunk, extra_chunks: bytes = b"") -> bytes:
    """A 16-bit PCM WAV file image; ``extra_chunks`` (already RIFF-framed) are appended."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(chunk.rate)
        w.writeframes(float_to_int16(chunk.samples).astype("<i2").tobytes())
    data = buf.getvalue()
    if extra_chunks:
        riff_size = len(data) - 8 + len(extra_chunks)
        data = data[:4] + riff_size.to_bytes(4, "little") + data[8:] + extra_chunks
    return data


def write_wav(path: str | Path, chunk: AudioChunk, extra_chunks: bytes = b"") -> None:
    Path(path).write_bytes(wav_bytes(chunk, extra_chunks))
