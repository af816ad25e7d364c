"""In-band watermark for synthesized speech (the marking the AI law asks for).

Every reply the assistant speaks carries a 16-bit payload hidden in the
telephone band (300-3400 Hz), so that the marking survives where metadata
cannot: a phone line (8 kHz, G.711 mu-law, level changes, line noise).
Classic DSP only, no model weights; see ``docs/watermark.md`` for the
design, the measured figures and the limits.

Scheme in short
---------------
* **Payload**: 16 bits (:func:`payload_for`: 4-bit system id + 12-bit hash
  of the reply key) + CRC-8, XOR-scrambled with a key-derived word: 24 bits.
* **Code**: 3 groups of 8 bits, each sent as one codeword of the first-order
  Reed-Muller code RM(1,7) (bi-orthogonal: 128 +-1 chips), 384 chips in all.
  Soft decoding is a fast Walsh-Hadamard transform per group.
* **Carrier**: a periodic (period :data:`PERIOD_S` = 0.5 s) noise-like
  signal whose Fourier series has one line every 2 Hz between 300 and
  3400 Hz, each line with a fixed random phase (from :data:`KEY`).  The
  lines are dealt out to the 384 chips (4 lines each); a chip's sign
  multiplies its lines.  The mark therefore repeats every 0.5 s: any excerpt
  of 0.5 s or more holds every chip, whatever its start.
* **Embedding** (:class:`Embedder`): short-time Fourier frames (24 ms, 50 %
  overlap); in each frame the carrier is shaped by the spectral envelope of
  the same 24 ms of speech raised to :data:`GAMMA` (partial spectral
  masking), scaled to ``strength`` times that speech's in-band RMS, and
  gated off where the speech is 20 dB under the frame's level at a 2 ms
  scale: the mark follows the speech and silence stays silent.  Streamed
  embedding (24 ms of delay, ``flush()`` at the end) equals whole-signal
  embedding sample for sample, whatever the chunking.
* **Detection** (:func:`detect`): resample to 8 kHz, whiten each
  time-frequency cell by the expected-mark / received-power weight, fold the
  excerpt modulo 0.5 s, correlate with all 3 x 128 codewords at every lag
  (one inverse FFT; 1/16000 s grid, refined to 1/64000 s around the best
  lags), decode each group at the lag where the three groups' best
  codewords are strongest, check the CRC.  No original needed, any
  start offset, any sample rate 8-48 kHz.
* **Key** (:func:`key_seed`): by default every seed comes from the public
  :data:`KEY`, so anyone with this module can detect (and make) the mark.
  With a secret (``compliance.watermark_key``) the seed is
  HMAC-SHA256(secret, "dauys-watermark/v1"): carrier phases, chip map and
  scrambler all change, so without the secret the mark can be neither
  produced nor detected (it looks like any unmarked audio).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr

__all__ = [
    "PAYLOAD_BITS", "Detection", "Embedder", "embed", "detect", "detect_file", "payload_for", "format_payload",
    "parse_payload", "mark_snr_db", "key_seed",
]

# --------------------------------------------------------------------------
# Parameters (changing any of KEY .. RM_M changes the mark: old marks are no
# longer detected)
# --------------------------------------------------------------------------
KEY = 0x4441_5559_5741_524B
"""Public seed of the carrier phases, the chip map and the scrambler ("DAUYWARK"); a secret key
replaces it (:func:`key_seed`)."""
KEY_CONTEXT = b"dauys-watermark/v1"

PAYLOAD_BITS = 16
"""Payload size: 4-bit system id + 12-bit reply hash (:func:`payload_for`)."""
SYSTEM_BITS = 4
CRC_BITS = 8
CRC_POLY = 0x07
"""CRC-8 (x^8 + x^2 + x + 1), initial value :data:`CRC_INIT`."""
CRC_INIT = 0xA5
N_GROUPS = 3
RM_M = 7
"""Each group is one RM(1,7) codeword: 2**7 = 128 chips carrying 8 bits."""
GROUP_CHIPS = 2**RM_M
N_CHIPS = N_GROUPS * GROUP_CHIPS
CODE_BITS = PAYLOAD_BITS + CRC_BITS
assert N_GROUPS * (RM_M + 1) == CODE_BITS

PERIOD_S = 0.5
"""The carrier repeats every 0.5 s (line spacing 2 Hz)."""
BAND_HZ = (300.0, 3400.0)
"""The telephone band, where the mark lives."""

# embedding
DEFAULT_STRENGTH = 0.089
"""Mark RMS / in-band (300-3400 Hz) speech RMS: -21 dB in band, about -22 dB full band."""
GAMMA = 0.5
"""Spectral shaping: mark magnitude ~ (speech spectral envelope) ** GAMMA (1 = fully speech-shaped, 0 = flat)."""
EMBED_FRAME_S = 0.024
"""Embedding frames: 24 ms, 50 % overlap; each frame's mark is shaped by the same 24 ms of speech."""
GATE_S = 0.002
GATE_REL = 0.1
"""Silence gate: the mark is scaled down where the speech's RMS over +-2 ms is below
0.1 x (-20 dB) the frame's RMS (onsets, word ends); no mark at all in digital silence."""
ENVELOPE_SMOOTH_BINS = 4
"""Spectral envelope = speech power averaged over +-4 bins (+-167 Hz, about one critical band at 1 kHz).
Wider is flatter: more robust to low-rate codecs, more audible (docs/watermark.md, "Tuning")."""

# detection
DETECT_RATE = 8000
DET_FRAME = 512
"""Whitening STFT at 8 kHz: 64 ms frames, 50 % overlap."""
DET_SMOOTH_BINS = 2
NOISE_PERCENTILE = 10
COARSE_OVERSAMPLE = 2
"""Lag search on a 1/16000 s grid (carrier correlation loss <= 8 %) ..."""
REFINE_PEAKS = 3
"""... then around the 3 best lags on a 1/64000 s grid (loss < 1 %)."""
THRESHOLD = 90.0
"""Sync score needed (besides a good CRC) to report a mark; see docs/watermark.md for the calibration."""
MIN_SECONDS = 1.0
"""Shorter input is not searched (the mark needs 1.5 s to be reliable)."""
LONG_INPUT_S = 6.0
"""Longer input is also searched in 4 s windows, 2 s apart (a reply inside a long recording;
clock drift between the two ends of a long excerpt)."""
WINDOW_S = 4.0
H0_LOC = 55.3
H0_SCALE = 3.2
"""Gumbel fit (location, scale) of the sync score of unmarked audio: 3000 excerpts of
speech, music, noise, tones and silence, as is or through the phone channel (max seen: 74.2)."""


# --------------------------------------------------------------------------
# Payload
# --------------------------------------------------------------------------
def payload_for(system_id: int, reply_key: str) -> int:
    """The 16-bit payload for one reply: ``system_id`` (0-15) in the top 4 bits,
    a 12-bit BLAKE2s hash of ``reply_key`` (e.g. ``f"{session_id}/{reply_id}"``)
    below.  The hash only narrows a look-up in the provenance log (together
    with the call's time); it is not unique on its own (1 in 4096 chance per pair)."""
    if not 0 <= system_id < (1 << SYSTEM_BITS):
        raise ValueError(f"system_id must be in 0..{(1 << SYSTEM_BITS) - 1}")
    h = int.from_bytes(hashlib.blake2s(reply_key.encode("utf-8"), digest_size=4).digest(), "big")
    hash_bits = PAYLOAD_BITS - SYSTEM_BITS
    return (system_id << hash_bits) | (h & ((1 << hash_bits) - 1))


def format_payload(payload: int) -> str:
    """``"dauys-1a2b"``: the protocol's ``watermark`` field (system id = first hex digit)."""
    _check_payload(payload)
    return f"dauys-{payload:04x}"


def parse_payload(text: str) -> int:
    """Inverse of :func:`format_payload`."""
    if not text.startswith("dauys-") or len(text) != 10:
        raise ValueError(f"not a watermark id: {text!r}")
    return int(text[6:], 16)


def _check_payload(payload: int) -> None:
    if not isinstance(payload, (int, np.integer)) or not 0 <= payload < (1 << PAYLOAD_BITS):
        raise ValueError(f"payload must be an int in 0..{(1 << PAYLOAD_BITS) - 1}")


def key_seed(secret: str | bytes | None = None) -> int:
    """The seed of the mark: :data:`KEY` without a secret, else the first 64 bits of
    HMAC-SHA256(secret, :data:`KEY_CONTEXT`).  Pass the result as ``key=``."""
    if not secret:
        return KEY
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return int.from_bytes(hmac.new(secret, KEY_CONTEXT, hashlib.sha256).digest()[:8], "big")


def _crc(value: int, nbits: int) -> int:
    """CRC-8 of the ``nbits`` low bits of ``value``, most significant first."""
    crc = CRC_INIT
    for i in range(nbits - 1, -1, -1):
        fb = ((crc >> (CRC_BITS - 1)) & 1) ^ ((value >> i) & 1)
        crc = (crc << 1) & ((1 << CRC_BITS) - 1)
        if fb:
            crc ^= CRC_POLY
    return crc


@lru_cache(maxsize=8)
def _scrambler(key: int = KEY) -> int:
    return int(np.random.default_rng([key, 1]).integers(0, 1 << CODE_BITS))


@lru_cache(maxsize=1)
def _hadamard() -> np.ndarray:
    h = np.ones((1, 1))
    for _ in range(RM_M):
        h = np.block([[h, h], [h, -h]])
    return h


def _encode(payload: int, key: int = KEY) -> np.ndarray:
    """Payload -> 384 chip signs (+-1)."""
    word = ((payload << CRC_BITS) | _crc(payload, PAYLOAD_BITS)) ^ _scrambler(key)
    k = RM_M + 1
    chips = []
    for g in range(N_GROUPS):
        v = (word >> (CODE_BITS - (g + 1) * k)) & ((1 << k) - 1)
        chips.append(_hadamard()[v >> 1] * (-1.0 if v & 1 else 1.0))
    return np.concatenate(chips)


def _decode(h: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Codeword correlations (groups x 128 Hadamard rows) -> (code word, best |h| per group, runner-up)."""
    k = RM_M + 1
    mag = np.abs(h)
    best = np.argmax(mag, axis=1)
    word = 0
    for g in range(N_GROUPS):
        v = (int(best[g]) << 1) | (1 if h[g, best[g]] < 0 else 0)
        word |= v << (CODE_BITS - (g + 1) * k)
    srt = np.sort(mag, axis=1)
    return word, srt[:, -1], srt[:, -2]


def _word_payload(word: int, key: int = KEY) -> int | None:
    word ^= _scrambler(key)
    payload, crc = word >> CRC_BITS, word & ((1 << CRC_BITS) - 1)
    return payload if _crc(payload, PAYLOAD_BITS) == crc else None


# --------------------------------------------------------------------------
# Carrier
# --------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _lines(key: int = KEY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carrier lines: harmonic numbers (frequency = m / PERIOD_S), unit phasors, chip of each."""
    lo = math.ceil(BAND_HZ[0] * PERIOD_S)
    hi = math.floor(BAND_HZ[1] * PERIOD_S)
    m = np.arange(lo, hi + 1)
    rng = np.random.default_rng([key, 2])
    phase = rng.uniform(0.0, 2 * np.pi, len(m))
    keep = np.sort(rng.permutation(len(m))[: (len(m) // N_CHIPS) * N_CHIPS])
    m, phase = m[keep], phase[keep]
    chip = rng.permutation(np.arange(len(m)) % N_CHIPS)
    return m, np.exp(1j * phase), chip


@lru_cache(maxsize=32)
def _carrier(rate: int, payload: int, key: int = KEY) -> np.ndarray:
    """One second (two periods) of the unit-RMS carrier for ``payload`` at ``rate``."""
    m, phasor, chip = _lines(key)
    spec = np.zeros(rate // 2 + 1, complex)
    spec[np.round(m / PERIOD_S).astype(int)] = _encode(payload, key)[chip] * phasor
    w = np.fft.irfft(spec, n=rate, norm="forward")
    w /= np.sqrt(np.mean(w**2))
    w.flags.writeable = False
    return w


def _sqrt_hann(n: int) -> np.ndarray:
    return np.sin(np.pi * (np.arange(n) + 0.5) / n)


def _smooth_bins(p: np.ndarray, k: int) -> np.ndarray:
    """Moving average over +-k bins along the last axis (edge-padded)."""
    if k <= 0:
        return p
    w = 2 * k + 1
    c = np.cumsum(np.pad(p, ((0, 0), (k + 1, k)), mode="edge"), axis=1)
    return (c[:, w:] - c[:, :-w]) / w


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """50 %-overlap add of (n, 2*hop) frames -> (n + 1) * hop samples."""
    n = len(frames)
    out = np.zeros((n + 1, hop))
    out[:n] += frames[:, :hop]
    out[1:] += frames[:, hop:]
    return out.ravel()


# --------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------
class Embedder:
    """Streaming embedder for one reply.

    ``process(chunk)`` takes the next input samples (any length) and returns the
    marked samples that are ready: all but the last few ms seen so far (the mark
    of a 24 ms frame is shaped by that very frame, so it needs the frame whole;
    the lag is under :attr:`latency` samples, i.e. < 24 ms).  ``flush()`` at the
    end of the reply returns the rest.  The concatenated outputs have exactly
    the input's length and equal :func:`embed` on the whole signal, sample for
    sample, whatever the chunking; the carrier continues across chunks.

    Use one Embedder for all the sentences of a reply.  Should the sample rate
    change mid-reply (another TTS engine), flush, then start a new one with
    ``start_s=old.position / old.rate`` to keep the carrier's phase.  ``key``: the
    seed from :func:`key_seed` (default: the public one)."""

    def __init__(self, rate: int, payload: int, strength: float = DEFAULT_STRENGTH, *, start_s: float = 0.0, key: int = KEY) -> None:
        if not 8000 <= rate <= 192000:
            raise ValueError(f"rate {rate} Hz is outside 8000..192000")
        _check_payload(payload)
        self.rate = int(rate)
        self.payload = int(payload)
        self.strength = float(strength)
        self._carrier = _carrier(self.rate, self.payload, key)
        self.frame = 2 * max(8, round(EMBED_FRAME_S * rate / 2))
        self.hop = self.frame // 2
        self.latency = self.frame
        """Upper bound (samples) on how far the output lags the input before ``flush``."""
        self._win = _sqrt_hann(self.frame)
        f = np.fft.rfftfreq(self.frame, 1.0 / rate)
        self._band = (f >= BAND_HZ[0]) & (f <= BAND_HZ[1])
        self._phase0 = round(start_s * self.rate) % self.rate
        self._host = np.zeros(0)  # input from self.emitted on (not yet output)
        self._acc = np.zeros(self.frame)  # mark already made for the samples from self.emitted on
        self._closed = False
        self.position = 0
        """Input samples taken so far."""
        self.emitted = 0
        """Output samples returned so far (a multiple of the hop until ``flush``)."""

    def _mark_frames(self, host: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Marks of the frames starting at ``starts`` (absolute), ``host`` beginning at self.emitted."""
        L = self.frame
        seg = host[(starts - self.emitted)[:, None] + np.arange(L)] * self._win
        power = np.abs(np.fft.rfft(seg, axis=1)) ** 2
        e_band = power[:, self._band].sum(axis=1)
        shape = np.where(self._band, _smooth_bins(power, ENVELOPE_SMOOTH_BINS) ** (GAMMA / 2), 0.0)
        carrier = self._carrier[(starts[:, None] + (self._phase0 + np.arange(L))) % self.rate] * self._win
        spec = shape * np.fft.rfft(carrier, axis=1)
        e_mark = (np.abs(spec) ** 2).sum(axis=1)
        gain = self.strength * np.sqrt(e_band / np.maximum(e_mark, 1e-30))
        frames = np.fft.irfft(spec * gain[:, None], n=L, axis=1)
        if GATE_S > 0:
            # silence gate: no mark where the speech, at a 2 ms scale, is 20 dB below the frame's level
            # (so no mark creeps into the silence just before an onset)
            raw = host[(starts - self.emitted)[:, None] + np.arange(L)]
            local = np.sqrt(_smooth_bins(raw**2, max(1, round(GATE_S * self.rate))))
            level = np.sqrt((seg**2).sum(axis=1, keepdims=True) / (self._win**2).sum())
            frames *= np.minimum(1.0, local / np.maximum(GATE_REL * level, 1e-30))
        return frames * self._win

    def _run(self, host: np.ndarray, stop: int) -> np.ndarray:
        """Make every frame starting before ``stop`` (absolute; ``host`` covers its
        whole span); output and drop everything before the first frame not made."""
        L, H = self.frame, self.hop
        starts = np.arange(self.emitted, stop, H)
        if len(starts) == 0:
            self._host = host
            return np.zeros(0, np.float32)
        mark = np.zeros(len(starts) * H + L)
        mark[:L] = self._acc
        mark[: (len(starts) + 1) * H] += _overlap_add(self._mark_frames(host, starts), H)
        n = len(starts) * H
        out = host[:n] + mark[:n]
        self._acc = mark[n : n + L].copy()
        self._host = host[n:]
        self.emitted += n
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("Embedder.process after flush")
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.position += len(x)
        host = np.concatenate([self._host, x.astype(np.float64)])
        # frames are made once their whole span [s, s + L) has arrived
        return self._run(host, self.position - self.frame + 1)

    def flush(self) -> np.ndarray:
        """The rest of the reply (the input after it is taken as silence)."""
        if self._closed:
            return np.zeros(0, np.float32)
        self._closed = True
        n = self.position - self.emitted
        host = np.concatenate([self._host, np.zeros(2 * self.frame)])
        out = self._run(host, self.position)
        self.emitted = self.position
        return out[:n]


def embed(samples: np.ndarray, rate: int, payload: int, *, strength: float = DEFAULT_STRENGTH, key: int = KEY) -> np.ndarray:
    """Mark a whole reply (float32 mono in [-1, 1] at ``rate``); same length and rate."""
    e = Embedder(rate, payload, strength, key=key)
    return np.concatenate([e.process(samples), e.flush()])


def mark_snr_db(clean: np.ndarray, marked: np.ndarray) -> float:
    """Speech-to-mark ratio in dB (how far the mark is below the speech)."""
    clean = np.asarray(clean, dtype=np.float64)
    diff = np.asarray(marked, dtype=np.float64) - clean
    return float(10 * np.log10(np.sum(clean**2) / max(np.sum(diff**2), 1e-30)))


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    found: bool
    """A mark with a valid CRC and a sync score above :data:`THRESHOLD`."""
    payload: int | None
    """The 16-bit payload when found, else None."""
    confidence: float
    """When found: 1 - :attr:`false_alarm` (so at least 0.99999); 0.0 when not found."""
    score: float = 0.0
    """Sync score: sum over the 3 groups of the best codeword's squared z."""
    margin: float = 0.0
    """Weakest group's best-codeword z minus its runner-up (decoding reliability)."""
    offset_s: float = 0.0
    """Carrier phase: the excerpt starts this far (mod 0.5 s) into the mark's period."""
    start_s: float = 0.0
    """Where in the input the analysed window starts (0 unless the input was long)."""
    duration_s: float = 0.0
    """Length of the analysed window."""
    inverted: bool = False
    """The audio was polarity-inverted."""
    false_alarm: float = 1.0
    """Estimated chance that unmarked audio reaches this score (before the CRC check,
    which passes by chance once in 128 more)."""

    @property
    def label(self) -> str | None:
        return format_payload(self.payload) if self.payload is not None else None


def _to_mono_float(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
    x = x.astype(np.float64, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = x.reshape(-1)
    return x if np.all(np.isfinite(x)) else np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _whiten(x: np.ndarray) -> np.ndarray:
    """Weight every time-frequency cell by (expected mark amplitude) / (received power).

    The mark is expected where the (noise-floor-subtracted) in-band signal is,
    with the embedder's spectral shape; 8 kHz, 64 ms frames, 50 % overlap."""
    L, H = DET_FRAME, DET_FRAME // 2
    n = len(x)
    nf = -(-n // H) + 1
    pad = np.zeros((nf + 1) * H)
    pad[H : H + n] = x
    win = _sqrt_hann(L)
    spec = np.fft.rfft(pad[np.arange(nf)[:, None] * H + np.arange(L)] * win, axis=1)
    f = np.fft.rfftfreq(L, 1.0 / DETECT_RATE)
    band = (f >= BAND_HZ[0] - 50) & (f <= BAND_HZ[1] + 50)
    p = _smooth_bins(np.abs(spec[:, band]) ** 2, DET_SMOOTH_BINS)
    floor = 1e-12 + 1e-6 * p.mean()
    noise = np.percentile(p, NOISE_PERCENTILE, axis=0) if nf >= 8 else np.zeros(p.shape[1])
    speech = np.maximum(p - noise, 0.0)
    shape = speech**GAMMA
    expected = speech.sum(axis=1, keepdims=True) * shape / np.maximum(shape.sum(axis=1, keepdims=True), 1e-30)
    weight = np.zeros(spec.shape)
    weight[:, band] = np.sqrt(expected) / (p + floor)
    frames = np.fft.irfft(spec * weight, n=L, axis=1) * win
    return _overlap_add(frames, H)[H : H + n]


@lru_cache(maxsize=8)
def _row_signs(key: int = KEY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per carrier line: harmonic number, conjugate phasor, and its sign in every
    Hadamard row of its group -> correlating with all codewords is one inverse FFT."""
    m, phasor, chip = _lines(key)
    group, index = chip // GROUP_CHIPS, chip % GROUP_CHIPS
    signs = np.zeros((N_GROUPS, GROUP_CHIPS, len(m)))
    for g in range(N_GROUPS):
        sel = group == g
        signs[g][:, sel] = _hadamard()[:, index[sel]]
    return m, np.conj(phasor), signs


def _analyse(x8: np.ndarray, key: int = KEY) -> tuple[float, float, np.ndarray]:
    """-> (sync score, lag in 8 kHz samples (mod one period), codeword correlations in z units at that lag)."""
    lp = round(PERIOD_S * DETECT_RATE)
    y = _whiten(x8)
    nper = -(-len(y) // lp)
    fold = np.zeros(nper * lp)
    fold[: len(y)] = y
    spec = np.fft.rfft(fold.reshape(nper, lp).sum(axis=0))
    m, conj_phasor, signs = _row_signs(key)
    lines = signs * (spec[m] * conj_phasor)  # group x codeword x line
    # coarse search: every lag on a half-sample grid (one inverse FFT for all 384 codewords)
    grid = lp * COARSE_OVERSAMPLE
    z = np.zeros((N_GROUPS, GROUP_CHIPS, grid // 2 + 1), complex)
    z[:, :, m] = lines
    h = np.fft.irfft(z, n=grid, axis=2) * (grid / 2)  # = sum over lines of Re(line * e^(2 pi i m lag / lp))
    var0 = float(np.mean(h**2))
    if var0 <= 0.0:
        return 0.0, 0.0, np.zeros((N_GROUPS, GROUP_CHIPS))
    sync = (np.abs(h).max(axis=1) ** 2).sum(axis=0)
    # fine search around the best coarse peaks: exact evaluation at 1/8-sample steps
    top = np.argpartition(sync, -REFINE_PEAKS)[-REFINE_PEAKS:] / COARSE_OVERSAMPLE
    step = 1.0 / COARSE_OVERSAMPLE
    lags = (top[:, None] + np.linspace(-step / 2, step / 2, 5)[None, :]).ravel()
    rot = np.exp(2j * np.pi * np.outer(m, lags) / lp)  # line x lag
    hf = np.real(lines.reshape(-1, len(m)) @ rot).reshape(N_GROUPS, GROUP_CHIPS, len(lags))
    sf = (np.abs(hf).max(axis=1) ** 2).sum(axis=0)
    t = int(np.argmax(sf))
    # the mark's own correlation side lobes inflate var0: remove them (4 lines per chip)
    lines_per_chip = len(m) / N_CHIPS
    var = max(var0 - float(np.mean(hf[:, :, t] ** 2)) / (2 * lines_per_chip), 0.05 * var0)
    return float(sf[t]) / var, float(lags[t] % lp), hf[:, :, t] / np.sqrt(var)


def _false_alarm(score: float) -> float:
    """P(an unmarked excerpt scores >= score), from the Gumbel fit of unmarked scores."""
    return -math.expm1(-math.exp(-(score - H0_LOC) / H0_SCALE))


def _detect8(x8: np.ndarray, start_s: float = 0.0, key: int = KEY) -> Detection:
    dur = len(x8) / DETECT_RATE
    if dur < MIN_SECONDS or not np.any(x8):
        return Detection(False, None, 0.0, start_s=start_s, duration_s=dur)
    score, lag, h = _analyse(x8, key)
    offset = (-lag / DETECT_RATE) % PERIOD_S
    word, best, second = _decode(h)
    margin = float(np.min(best - second))
    payload = _word_payload(word, key)
    inverted = False
    if payload is None:  # a polarity-inverted line flips every chip: the sign bit of each group
        flip = 0
        for g in range(N_GROUPS):
            flip |= 1 << (CODE_BITS - (g + 1) * (RM_M + 1))
        payload = _word_payload(word ^ flip, key)
        inverted = payload is not None
    found = payload is not None and score >= THRESHOLD
    fa = _false_alarm(score)
    return Detection(
        found, payload if found else None, 1.0 - fa if found else 0.0, score, margin, offset, start_s, dur,
        inverted and found, fa,
    )


def detect(samples: np.ndarray, rate: int, *, key: int = KEY) -> Detection:
    """Look for a mark in ``samples`` (mono or (n, channels), float or int PCM, any
    rate 8-48 kHz, any excerpt; 1.5 s or more for a reliable answer).  Input longer
    than :data:`LONG_INPUT_S` is also searched in 4 s windows (2 s apart); the
    strongest find is returned.  ``key``: the seed the mark was made with
    (:func:`key_seed`); a mark made with another key is not found."""
    x = _to_mono_float(samples)
    x8 = soxr.resample(x, rate, DETECT_RATE, quality="HQ") if rate != DETECT_RATE else x
    best = _detect8(x8, key=key)
    if len(x8) > LONG_INPUT_S * DETECT_RATE:
        w = int(WINDOW_S * DETECT_RATE)
        for s in range(0, len(x8) - w // 2, w // 2):
            d = _detect8(x8[s : s + w], s / DETECT_RATE, key)
            if (d.found, d.score) > (best.found, best.score):
                best = d
    return best


def detect_file(path: str | Path, *, key: int = KEY) -> Detection:
    """:func:`detect` on an audio file (WAV, or anything PyAV decodes)."""
    from models.audio import read_audio

    chunk = read_audio(path, DETECT_RATE)
    return detect(chunk.samples, chunk.rate, key=key)
