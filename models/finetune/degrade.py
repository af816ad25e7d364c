"""Make clean recordings sound like a phone call (training augmentation and robustness evaluation).

:func:`phone_degrade` runs 16 kHz audio through what a narrow-band call does
to it, in this order:

1. resampled to 8 kHz with soxr (anti-aliased: nothing above 4 kHz survives);
2. band-limited to the telephone band, ~300-3400 Hz (an FFT mask with
   raised-cosine edges 100 Hz wide on either side);
3. a random gain (``gain_db``, uniform in dB; peaks beyond full scale clip,
   as they do on a hot line);
4. with probability ``noise_prob``, additive noise (white or pink, chosen at
   random, band-limited like the speech) at a random SNR (``snr_db``,
   uniform in dB; power measured over the whole clip, silences included);
5. G.711 mu-law encoded and decoded with the same codec the server uses on
   phone lines (:mod:`models.audio`);
6. resampled back to 16 kHz and trimmed/padded to the input's length.

Deterministic for a given seed or ``numpy.random.Generator`` state.
"""

from __future__ import annotations

import numpy as np

from models.audio import float_to_int16, int16_to_float, mulaw_decode, mulaw_encode, resample

PHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)

__all__ = ["phone_degrade", "band_limit", "add_noise", "mulaw_roundtrip", "PHONE_RATE", "TELEPHONE_BAND"]


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def _uniform(rng: np.random.Generator, v) -> float:
    if isinstance(v, (tuple, list)):
        lo, hi = float(v[0]), float(v[1])
        return lo if lo == hi else float(rng.uniform(lo, hi))
    return float(v)


def band_limit(x: np.ndarray, rate: int, band: tuple[float, float] = TELEPHONE_BAND, edge_hz: float = 100.0) -> np.ndarray:
    """Keep ``band`` (Hz) of ``x``: an FFT-domain mask with raised-cosine transitions ``edge_hz`` wide."""
    if len(x) == 0:
        return x.astype(np.float32)
    n = len(x)
    spec = np.fft.rfft(x.astype(np.float64), n)
    f = np.fft.rfftfreq(n, 1.0 / rate)
    lo, hi = band
    mask = np.ones_like(f)
    h = edge_hz / 2
    # below the band: 0 up to lo - h, cosine ramp to 1 at lo + h
    mask[f <= lo - h] = 0.0
    ramp = (f > lo - h) & (f < lo + h)
    mask[ramp] = 0.5 - 0.5 * np.cos(np.pi * (f[ramp] - (lo - h)) / edge_hz)
    mask[f >= hi + h] = 0.0
    ramp = (f > hi - h) & (f < hi + h)
    mask[ramp] = 0.5 + 0.5 * np.cos(np.pi * (f[ramp] - (hi - h)) / edge_hz)
    return np.fft.irfft(spec * mask, n).astype(np.float32)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


def add_noise(x: np.ndarray, snr_db: float, rng_or_seed=None, *, rate: int = PHONE_RATE, kind: str = "white", band: tuple[float, float] | None = None) -> np.ndarray:
    """``x`` plus ``kind`` ("white" or "pink") noise at ``snr_db`` relative to the power of ``x`` (band-limited to ``band`` first)."""
    rng = _rng(rng_or_seed)
    n = len(x)
    if n == 0:
        return x.astype(np.float32)
    noise = rng.standard_normal(n) if kind == "white" else _pink(n, rng)
    if band is not None:
        noise = band_limit(noise, rate, band).astype(np.float64)
    p_sig = float(np.mean(np.square(x, dtype=np.float64)))
    p_noise = float(np.mean(np.square(noise)))
    if p_sig <= 0 or p_noise <= 0:
        return x.astype(np.float32)
    noise *= np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (x + noise).astype(np.float32)


def mulaw_roundtrip(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law encode then decode (clips to full scale first)."""
    return int16_to_float(mulaw_decode(mulaw_encode(float_to_int16(x))))


def phone_degrade(
    audio: np.ndarray,
    rng_or_seed: np.random.Generator | int | None = None,
    *,
    rate: int = 16000,
    band: tuple[float, float] = TELEPHONE_BAND,
    gain_db: float | tuple[float, float] = (-9.0, 3.0),
    noise_prob: float = 0.8,
    snr_db: float | tuple[float, float] | None = (15.0, 30.0),
    noise_kinds: tuple[str, ...] = ("white", "pink"),
    codec: bool = True,
) -> np.ndarray:
    """``audio`` (mono float32 at ``rate``, 16 kHz by default) as it would sound after a narrow-band phone call.

    ``gain_db`` and ``snr_db`` are a fixed value or a ``(low, high)`` range
    drawn uniformly; ``snr_db=None`` or ``noise_prob=0`` adds no noise;
    ``codec=False`` skips mu-law.  The result has the input's rate and length.
    """
    rng = _rng(rng_or_seed)
    x = np.asarray(audio, np.float32)
    n = len(x)
    if n == 0:
        return x.copy()
    # Draw every random number up front, in a fixed order, so each setting is reproducible.
    gain = 10 ** (_uniform(rng, gain_db) / 20)
    noisy = snr_db is not None and rng.random() < noise_prob
    snr = _uniform(rng, snr_db) if snr_db is not None else 0.0
    kind = noise_kinds[int(rng.integers(len(noise_kinds)))] if noise_kinds else "white"
    noise_seed = int(rng.integers(2**63 - 1))

    y = resample(x, rate, PHONE_RATE)
    y = band_limit(y, PHONE_RATE, band) * gain
    if noisy:
        y = add_noise(y, snr, noise_seed, rate=PHONE_RATE, kind=kind, band=band)
    y = mulaw_roundtrip(y) if codec else np.clip(y, -1.0, 1.0)
    out = resample(y, PHONE_RATE, rate)
    if len(out) >= n:
        return out[:n].astype(np.float32, copy=False)
    return np.pad(out, (0, n - len(out))).astype(np.float32)
