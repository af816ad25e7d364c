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
N_GROUPS = 3
RM_M = 7
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



CRC_POLY = {8: 0x07, 12: 0x80F, 10: 0x233, 6: 0x2F}


def _crc(bits: int, nbits: int) -> int:
    w = CRC_BITS
    poly = CRC_POLY[w]
    crc = (0x5A5 & ((1 << w) - 1))
    for i in range(nbits - 1, -1, -1):
        fb = ((crc >> (w - 1)) & 1) ^ ((bits >> i) & 1)
        crc = (crc << 1) & ((1 << w) - 1)
        if fb:
            crc ^= poly
    return crc


def _crc8(bits, nbits):
    return _crc(bits, nbits)


def _scramble() -> int:
    return int(np.random.default_rng(KEY + 1).integers(0, 1 << 62)) & ((1 << (PAYLOAD_BITS + CRC_BITS)) - 1)


def _hadamard(m: int) -> np.ndarray:
    H = np.ones((1, 1))
    for _ in range(m):
        H = np.block([[H, H], [H, -H]])
    return H


def _codeword(payload: int) -> np.ndarray:
    """Chip signs (+-1), N_GROUPS * 2**RM_M."""
    nb = PAYLOAD_BITS + CRC_BITS
    word = ((payload << CRC_BITS) | _crc(payload, PAYLOAD_BITS)) ^ _scramble()
    k = RM_M + 1
    assert N_GROUPS * k >= nb
    Hm = _hadamard(RM_M)
    chips = []
    for g in range(N_GROUPS):
        shift = nb - (g + 1) * k
        v = (word >> shift) & ((1 << k) - 1) if shift >= 0 else (word << -shift) & ((1 << k) - 1)
        row, sign = v >> 1, v & 1
        chips.append(Hm[row] * (-1.0 if sign else 1.0))
    return np.concatenate(chips)


def _decode_groups(y: np.ndarray):
    """Soft chips -> (word bits, per-group margins)."""
    nb = PAYLOAD_BITS + CRC_BITS
    k = RM_M + 1
    Hm = _hadamard(RM_M)
    word = 0
    metrics = []
    for g in range(N_GROUPS):
        h = Hm @ y[g * 2**RM_M : (g + 1) * 2**RM_M]
        j = int(np.argmax(np.abs(h)))
        v = (j << 1) | (1 if h[j] < 0 else 0)
        shift = nb - (g + 1) * k
        word |= (v << shift) if shift >= 0 else (v >> -shift)
        srt = np.sort(np.abs(h))
        metrics.append((abs(h[j]), srt[-2]))
    return word ^ _scramble(), metrics


@lru_cache(maxsize=None)
def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Harmonic numbers m (freq m/PERIOD_S Hz) and per-chip coefficients D[c, i]."""
    lo = int(np.ceil(BAND_HZ[0] * PERIOD_S))
    hi = int(np.floor(BAND_HZ[1] * PERIOD_S))
    nch = N_GROUPS * 2**RM_M
    m = np.arange(lo, hi + 1)
    rng = np.random.default_rng(KEY)
    phase = rng.uniform(0, 2 * np.pi, len(m))
    per = len(m) // nch
    perm = rng.permutation(len(m))[: per * nch]
    m = m[np.sort(perm)]
    phase = phase[np.sort(perm)]
    chip = rng.permutation(np.arange(len(m)) % nch)
    D = np.zeros((nch, len(m)), complex)
    D[chip, np.arange(len(m))] = np.exp(1j * phase)
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


def _fwht(a: np.ndarray) -> np.ndarray:
    """Walsh-Hadamard transform along the last axis (natural order, matches _hadamard)."""
    a = a.copy()
    n = a.shape[-1]
    h = 1
    shp = a.shape[:-1]
    while h < n:
        a = a.reshape(*shp, n // (2 * h), 2, h)
        x, y = a[..., 0, :].copy(), a[..., 1, :].copy()
        a[..., 0, :] = x + y
        a[..., 1, :] = x - y
        a = a.reshape(*shp, n)
        h *= 2
    return a


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
    Z = np.zeros((D.shape[0], Lp * U // 2 + 1), complex)
    Z[:, m] = F[m][None, :] * np.conj(D)
    C = np.fft.irfft(Z, n=Lp * U, axis=1)  # chips x tau
    nc = (np.abs(D) > 0).sum(axis=1).mean()
    G = 2**RM_M
    Hh = _fwht(C.T.reshape(-1, N_GROUPS, G))  # tau x groups x G
    best = np.abs(Hh).max(axis=2) ** 2  # tau x groups
    var0 = (C**2).mean()
    S0 = best.sum(axis=1) / (var0 * G)
    t = int(np.argmax(S0))
    # de-bias the noise variance for the mark's own sidelobes
    var = max(var0 - (C[:, t] ** 2).mean() / (2 * nc), 1e-3 * var0)
    S = S0 * var0 / var
    return C[:, t] / np.sqrt(var), S, t, Lp * U


def detect(samples: np.ndarray, rate: int) -> Detection:
    x = np.asarray(samples, dtype=np.float32)
    x8 = soxr.resample(x, rate, DETECT_RATE, quality="HQ").astype(np.float64) if rate != DETECT_RATE else x.astype(np.float64)
    if len(x8) < 0.3 * DETECT_RATE or not np.any(x8):
        return Detection(False, None, 0.0)
    y, S, t, n = _analyse(x8)
    word, metr = _decode_groups(y)
    G = 2**RM_M
    payload, crc = word >> CRC_BITS, word & ((1 << CRC_BITS) - 1)
    ok = _crc(payload, PAYLOAD_BITS) == crc
    found = ok and S[t] >= THRESHOLD
    zg = [a / np.sqrt(G) for a, b in metr]
    return Detection(found, payload if found else None, float(S[t]), float(S[t]), float(min(zg)), t / n * PERIOD_S, ok)
