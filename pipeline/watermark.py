"""In-band audio watermark (prototype)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soxr

KEY = 0x44415559
PAYLOAD_BITS = 16
CRC_BITS = 8
N_BITS = PAYLOAD_BITS + CRC_BITS
PERIOD_S = 0.5
BAND_HZ = (300.0, 3400.0)
DETECT_RATE = 8000
GAMMA = 0.5
SMOOTH_BINS = 2
DEFAULT_STRENGTH = 0.1
DET_BETA = 1.0
DET_SMOOTH = 2
DET_FRAME = 256
UPSAMPLE = 4
THRESHOLD = 80.0
DET_MODE = "plain"
NOISE_PCT = 10
NOISE_K = 1.0
DET_GAMMA = 0.5



def _crc8(bits: int, nbits: int) -> int:
    """CRC-8 (poly 0x07, init 0x5A) over the nbits of ``bits``, MSB first."""
    crc = 0x5A
    for i in range(nbits - 1, -1, -1):
        b = (bits >> i) & 1
        fb = ((crc >> 7) & 1) ^ b
        crc = (crc << 1) & 0xFF
        if fb:
            crc ^= 0x07
    return crc


def _codeword(payload: int) -> np.ndarray:
    word = (payload << CRC_BITS) | _crc8(payload, PAYLOAD_BITS)
    return np.array([(word >> (N_BITS - 1 - i)) & 1 for i in range(N_BITS)], dtype=np.int8)


SCHEME = "tdm"


@lru_cache(maxsize=None)
def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Harmonic numbers m (freq m/PERIOD_S Hz) and per-bit coefficients D[b, i]."""
    lo = int(np.ceil(BAND_HZ[0] * PERIOD_S))
    hi = int(np.floor(BAND_HZ[1] * PERIOD_S))
    m = np.arange(lo, hi + 1)
    rng = np.random.default_rng(KEY)
    phase = rng.uniform(0, 2 * np.pi, len(m))
    if SCHEME == "fdm":
        bit = rng.permutation(len(m)) % N_BITS
        D = np.zeros((N_BITS, len(m)), complex)
        D[bit, np.arange(len(m))] = np.exp(1j * phase)
    else:
        Lp = int(round(PERIOD_S * DETECT_RATE))
        spec = np.zeros(Lp // 2 + 1, complex)
        spec[m] = np.exp(1j * phase)
        w = np.fft.irfft(spec, n=Lp)
        edges = np.round(np.arange(N_BITS + 1) * Lp / N_BITS).astype(int)
        order = rng.permutation(N_BITS)
        D = np.zeros((N_BITS, len(m)), complex)
        for slot in range(N_BITS):
            seg = np.zeros(Lp)
            seg[edges[slot] : edges[slot + 1]] = w[edges[slot] : edges[slot + 1]]
            D[order[slot]] = np.fft.rfft(seg)[m]
    D /= np.sqrt((np.abs(D) ** 2).sum() / len(m))
    return m, D


@lru_cache(maxsize=64)
def _template(rate: int, payload: int) -> np.ndarray:
    """One second of the periodic mark (unit RMS) at ``rate``."""
    m, D = _grid()
    signs = 2.0 * _codeword(payload) - 1.0
    coef = signs @ D
    spec = np.zeros(rate // 2 + 1, complex)
    k = np.round(m / PERIOD_S).astype(int)
    spec[k] = coef
    w = np.fft.irfft(spec, n=rate, norm="forward")
    return w / np.sqrt(np.mean(w**2))


def _frame_len(rate: int) -> int:
    return 2 * int(round(0.008 * rate))


class Embedder:
    def __init__(self, rate: int, payload: int, strength: float = DEFAULT_STRENGTH) -> None:
        self.rate = rate
        self.strength = strength
        self.wave = _template(rate, payload)
        self.L = _frame_len(rate)
        self.H = self.L // 2
        n = np.arange(self.L)
        self.win = np.sin(np.pi * (n + 0.5) / self.L)  # sqrt-hann
        f = np.fft.rfftfreq(self.L, 1 / rate)
        self.band = (f >= BAND_HZ[0]) & (f <= BAND_HZ[1])
        self._hist = np.zeros(self.L)
        self._tail = np.zeros(self.L)
        self.pos = 0
        self._next = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, dtype=np.float32)
        n = len(x)
        if n == 0:
            return x.copy()
        L, H = self.L, self.H
        buf = np.concatenate([self._hist, x.astype(np.float64)])  # starts at pos - L
        starts = np.arange(self._next, self.pos + n, H)
        mark = np.zeros(n + 2 * L)
        mark[:L] = self._tail
        if len(starts):
            rel = starts - self.pos  # >= 0
            idx = rel[:, None] + np.arange(L)[None, :]
            host = buf[idx] * self.win
            P = np.abs(np.fft.rfft(host, axis=1)) ** 2
            e_band = P[:, self.band].sum(axis=1)
            if SMOOTH_BINS:
                k = 2 * SMOOTH_BINS + 1
                c = np.cumsum(np.pad(P, ((0, 0), (SMOOTH_BINS + 1, SMOOTH_BINS)), mode="edge"), axis=1)
                P = (c[:, k:] - c[:, :-k]) / k
            G = np.where(self.band, P ** (GAMMA / 2), 0.0)
            pidx = (starts[:, None] + np.arange(L)[None, :]) % self.rate
            Q = np.fft.rfft(self.wave[pidx] * self.win, axis=1)
            M = G * Q
            em = (np.abs(M) ** 2).sum(axis=1)
            scale = self.strength * np.sqrt(e_band / np.maximum(em, 1e-30))
            y = np.fft.irfft(M * scale[:, None], n=L, axis=1) * self.win
            o = rel[0]
            nf = len(starts)
            segs = np.zeros((nf + 1, H))
            segs[:nf] += y[:, :H]
            segs[1:] += y[:, H:]
            mark[o : o + (nf + 1) * H] += segs.ravel()
            self._next = int(starts[-1] + H)
        out = x + mark[:n].astype(np.float32)
        self._tail = mark[n : n + L].copy()
        self._hist = buf[-L:].copy()
        self.pos += n
        return out


def embed(samples: np.ndarray, rate: int, payload: int, *, strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    return Embedder(rate, payload, strength).process(samples)


@dataclass
class Detection:
    found: bool
    payload: int | None
    confidence: float
    score: float = 0.0
    bit_snr: float = 0.0
    offset_s: float = 0.0
    crc_ok: bool = False


def _whiten(x: np.ndarray, _W=None, _ret_W=False) -> np.ndarray:
    L = DET_FRAME
    H = L // 2
    n = len(x)
    nf = int(np.ceil(n / H)) + 1
    pad = np.zeros((nf + 1) * H)
    pad[H : H + n] = x
    win = np.sin(np.pi * (np.arange(L) + 0.5) / L)
    idx = np.arange(nf)[:, None] * H + np.arange(L)[None, :]
    Y = np.fft.rfft(pad[idx] * win, axis=1)
    P = np.abs(Y) ** 2
    if DET_SMOOTH:
        k = 2 * DET_SMOOTH + 1
        c = np.cumsum(np.pad(P, ((0, 0), (DET_SMOOTH + 1, DET_SMOOTH)), mode="edge"), axis=1)
        P = (c[:, k:] - c[:, :-k]) / k
    if _W is not None:
        y = np.fft.irfft(Y * _W, n=L, axis=1) * win
        segs = np.zeros((nf + 1, H))
        segs[:nf] += y[:, :H]
        segs[1:] += y[:, H:]
        return segs.ravel()[H : H + n]
    f = np.fft.rfftfreq(L, 1 / DETECT_RATE)
    band = (f >= BAND_HZ[0] - 50) & (f <= BAND_HZ[1] + 50)
    floor = 1e-12 + 1e-6 * P[:, band].mean()
    if DET_MODE == "matched":
        Pb = P[:, band]
        N = np.percentile(Pb, NOISE_PCT, axis=0) if len(Pb) > 4 else np.zeros(Pb.shape[1])
        Sx = np.maximum(Pb - NOISE_K * N, 0.0)
        shape = Sx ** (DET_GAMMA / 2)
        Eb = Sx.sum(axis=1)
        Mh = Eb[:, None] * shape**2 / np.maximum((shape**2).sum(axis=1, keepdims=True), 1e-30)
        W = np.zeros_like(P)
        W[:, band] = np.sqrt(Mh) / (Pb + floor) ** (DET_BETA / 2)
    else:
        W = np.where(band, (P + floor) ** (-DET_BETA / 2), 0.0)
    if _ret_W:
        return W
    y = np.fft.irfft(Y * W, n=L, axis=1) * win
    out = np.zeros((nf + 1) * H)
    segs = np.zeros((nf + 1, H))
    segs[:nf] += y[:, :H]
    segs[1:] += y[:, H:]
    out = segs.ravel()
    return out[H : H + n]


def _analyse(x8: np.ndarray):
    Lp = int(round(PERIOD_S * DETECT_RATE))
    y = _whiten(x8)
    nper = int(np.ceil(len(y) / Lp))
    fold = np.zeros(nper * Lp)
    fold[: len(y)] = y
    fold = fold.reshape(nper, Lp).sum(axis=0)
    F = np.fft.rfft(fold)
    m, D = _grid()
    U = UPSAMPLE
    Z = np.zeros((N_BITS, Lp * U // 2 + 1), complex)
    Z[:, m] = F[m][None, :] * np.conj(D)
    C = np.fft.irfft(Z, n=Lp * U, axis=1)
    sig = np.sqrt((C**2).mean(axis=1)) + 1e-30
    z = C / sig[:, None]
    S = (z**2).sum(axis=0)
    return z, S, Lp * U


def detect(samples: np.ndarray, rate: int) -> Detection:
    x = np.asarray(samples, dtype=np.float32)
    x8 = soxr.resample(x, rate, DETECT_RATE, quality="HQ").astype(np.float64) if rate != DETECT_RATE else x.astype(np.float64)
    if len(x8) < 0.3 * DETECT_RATE or not np.any(x8):
        return Detection(False, None, 0.0)
    z, S, n = _analyse(x8)
    t = int(np.argmax(S))
    zb = z[:, t]
    bits = (zb > 0).astype(int)
    word = int("".join(map(str, bits)), 2)
    payload, crc = word >> CRC_BITS, word & 0xFF
    ok = _crc8(payload, PAYLOAD_BITS) == crc
    found = ok and S[t] >= THRESHOLD
    return Detection(found, payload if found else None, float(S[t]), float(S[t]), float(np.mean(np.abs(zb))), t / n * PERIOD_S, ok)
