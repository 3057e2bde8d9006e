"""Vectorised perceptual hashes: one shrink per frame, one pair of matrix products per batch.

Pipeline per batch of frames with the same shape:
  RGB -> (one 2x area halving of the RGB) -> grey -> 2x area halvings down to >= 128 px
  -> Z @ C.T and R @ (.) with stacked operators -> PDQ 64x64 luma, pHash 32x32, dHash 8x9
  -> DCTs as matrix products -> median thresholds -> bits.
The operators reproduce PDQ's Jarosz tent and PIL's LANCZOS folded onto the halved grid
(see resample.py), so the hashes follow pdqhash / imagehash closely without their cost;
tests/test_signals_fast.py pins how closely.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import cv2
import numpy as np

from workers.signals import SignalValue
from workers.signals import dihedral as dih
from workers.signals import quality as q
from workers.signals import resample as rs


@lru_cache(maxsize=None)
def _pdq_dct() -> np.ndarray:
    """PDQ's 16x64 DCT rows 1..16 (DC excluded), scaled sqrt(2/64) as in pdqhashing.cpp."""
    i = np.arange(1, 17)[:, None]
    j = np.arange(64)[None, :]
    return (np.sqrt(2.0 / 64) * np.cos(np.pi / 2 / 64 * i * (2 * j + 1))).astype(np.float32)


@lru_cache(maxsize=None)
def _phash_dct() -> np.ndarray:
    """The first 8 rows of scipy.fftpack's unnormalised DCT-II over 32 samples."""
    k = np.arange(8)[:, None]
    n = np.arange(32)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / 64)


def _grey_small(frame: np.ndarray, times: int) -> np.ndarray:
    """Grey after `times` halvings; RGB is halved once before conversion (less to convert)."""
    if frame.ndim == 3:
        if times:
            frame = rs.halve(frame, 1)
            times -= 1
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return rs.halve(frame, times)


@dataclass
class Features:
    """What the hashes are thresholded from, kept so dihedral variants reuse it."""

    pdq_dct: np.ndarray  # (N, 16, 16) float32
    pdq_quality: np.ndarray  # (N,) int
    phash_dct: np.ndarray  # (N, 8, 8) float64
    phash_quality: np.ndarray  # (N,) int
    dhash_grey: np.ndarray  # (N, 8, 9) float64, rounded like PIL


def _round_u8(x: np.ndarray) -> np.ndarray:
    """PIL's rounding of a resampled value into an 8-bit pixel."""
    return np.clip(np.floor(x.astype(np.float64) + 0.5), 0, 255)


def features(frames: Sequence[np.ndarray], signals: Iterable[str] = ("pdq", "phash", "dhash")) -> Features:
    """Shrink, resample and transform a batch of RGB (H, W, 3) or grey (H, W) uint8 frames.

    Only the requested signals' products are computed; the others stay zero.
    """
    signals = set(signals)
    want_pdq, want_lanczos = "pdq" in signals, bool(signals & {"phash", "dhash"})
    n = len(frames)
    pdq_dct = np.zeros((n, 16, 16), np.float32)
    pdq_quality = np.zeros(n, int)
    phash_dct = np.zeros((n, 8, 8))
    dhash_grey = np.zeros((n, 8, 9))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, frame in enumerate(frames):
        groups.setdefault(frame.shape[:2], []).append(i)
    for (h, w), idx in groups.items():
        if h < 5 or w < 5:  # PDQ's MIN_HASHABLE_DIM: an all-zero hash of quality 0
            continue
        t_pdq = rs.halvings(h, w, rs.PDQ_GRID)
        t_lz = rs.halvings(h, w, rs.LANCZOS_GRID)
        first = t_pdq if want_pdq else t_lz
        z = np.stack([_grey_small(frames[i], first) for i in idx])
        if want_pdq:
            rows, cols_t = rs.pdq_operators(h, w, t_pdq)
            luma = rows @ (z.astype(np.float32) @ cols_t)
            d16 = _pdq_dct()
            pdq_dct[idx] = d16 @ luma @ d16.T
            pdq_quality[idx] = q.pdq_quality(luma)
        if want_lanczos:
            zl = np.stack([rs.halve(g, t_lz - first) for g in z]) if t_lz > first else z
            rows, cols_t = rs.lanczos_operators(h, w, t_lz)
            out = rows @ (zl.astype(np.float32) @ cols_t)  # (k, 40, 41)
            d8 = _phash_dct()
            phash_dct[idx] = d8 @ _round_u8(out[:, :32, :32]) @ d8.T
            dhash_grey[idx] = _round_u8(out[:, 32:, 32:])
    return Features(pdq_dct, pdq_quality, phash_dct, q.phash_quality(phash_dct), dhash_grey)


def pdq_bits(dct16: np.ndarray) -> np.ndarray:
    """(N, 16, 16) -> (N, 256) 0/1 in pdqhash's order: > the lower median (Torben's)."""
    flat = dct16.reshape(len(dct16), 256)
    median = np.partition(flat, 127, axis=1)[:, 127:128]
    # pdqhash lists bit 255 (coefficient [15][15]) first.
    return (flat > median)[:, ::-1].astype(np.uint8)


def phash_bits(dct8: np.ndarray) -> np.ndarray:
    flat = dct8.reshape(len(dct8), 64)
    return (flat > np.median(flat, axis=1, keepdims=True)).astype(np.uint8)


def dhash_bits(grey: np.ndarray) -> np.ndarray:
    return (grey[:, :, 1:] > grey[:, :, :-1]).reshape(len(grey), 64).astype(np.uint8)


def _values(feat: Features, signals: Sequence[str],
            variants: Sequence[str | None] | None = None) -> list[list[SignalValue]]:
    """One list of SignalValue per row of feat; variants names each row's variant (None: none).
    Bits are packed for all rows at once: per-row numpy calls cost more than the bits."""
    n = len(feat.pdq_quality)
    variants = variants or [None] * n
    rows: list[list[SignalValue]] = [[] for _ in range(n)]
    for signal in signals:
        if signal == "pdq":
            bits, quality = pdq_bits(feat.pdq_dct), feat.pdq_quality
        elif signal == "phash":
            bits, quality = phash_bits(feat.phash_dct), feat.phash_quality
        elif signal == "dhash":
            bits, quality = dhash_bits(feat.dhash_grey), feat.phash_quality
        else:
            raise ValueError(f"{signal!r} is not a perceptual signal")
        packed = np.packbits(bits, axis=1)
        for i, (row, q_i, variant) in enumerate(zip(packed, quality.tolist(), variants)):
            rows[i].append(SignalValue(signal, row.tobytes().hex(), q_i, variant=variant))
    return rows


def hash_frames(
    frames: Sequence[np.ndarray], signals: Iterable[str], dihedral: bool = False
) -> list[list[SignalValue]]:
    """Hashes of RGB (H, W, 3) or grey (H, W) uint8 frames; one list per frame.

    quality: PDQ's own for pdq; the pHash detail score (quality.phash_quality) for phash and dhash.
    dihedral=True appends, per frame, the 7 rotated/flipped variants of the PDQ and pHash
    hashes (variant='rot90', 'flip-h', ...: see dihedral.py); dHash has none.
    """
    signals = tuple(signals)
    feat = features(frames, signals)
    rows = _values(feat, signals)
    if dihedral:
        for extra in dihedral_variants(feat, signals):
            for row, values in zip(rows, extra):
                row.extend(values)
    return rows


def hash_grey_frames(greys: Sequence[np.ndarray], signals: Iterable[str]) -> list[list[SignalValue]]:
    """Hashes of grey (luma) uint8 frames, for decoders that hand out the Y plane directly."""
    return hash_frames(greys, signals)


def dihedral_variants(feat: Features, signals: Iterable[str]) -> list[list[list[SignalValue]]]:
    """For each of the 7 non-identity dihedral transforms, one list of SignalValue per frame.

    All 7 x N transformed coefficient sets are thresholded in one batch (a query sends them
    for every frame, so this runs as often as the hashes themselves)."""
    signals = tuple(s for s in signals if s in ("pdq", "phash"))
    n, k = len(feat.pdq_quality), len(dih.VARIANTS)
    moved = Features(
        np.concatenate([dih.transform(feat.pdq_dct, name) for name in dih.VARIANTS]),
        np.tile(feat.pdq_quality, k),
        np.concatenate([dih.transform(feat.phash_dct, name) for name in dih.VARIANTS]),
        np.tile(feat.phash_quality, k),
        np.tile(feat.dhash_grey, (k, 1, 1)),
    )
    rows = _values(moved, signals, [name for name in dih.VARIANTS for _ in range(n)])
    return [rows[j * n:(j + 1) * n] for j in range(k)]
