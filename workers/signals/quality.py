"""How much a frame's hash can be trusted: blank and near-uniform frames must never match.

PDQ's quality is its own gradient metric. pHash has none, so vigil defines a detail score
from the very numbers pHash thresholds (see phash_quality).
"""
from __future__ import annotations

import numpy as np


def pdq_quality(luma64: np.ndarray) -> np.ndarray:
    """PDQ's image-domain quality of (N, 64, 64) luma, as pdqhashing.cpp computes it."""
    luma64 = luma64.astype(np.float32)
    dv = np.trunc((luma64[:, :-1, :] - luma64[:, 1:, :]) * np.float32(100) / np.float32(255))
    dh = np.trunc((luma64[:, :, :-1] - luma64[:, :, 1:]) * np.float32(100) / np.float32(255))
    total = np.abs(dv).sum(axis=(1, 2)) + np.abs(dh).sum(axis=(1, 2))
    return np.minimum(total.astype(np.int64) // 90, 100)


# Scale of phash_quality: a mean distance from the median of PHASH_FULL_DETAIL grey levels
# (in units of a 32x32 pixel-level DCT amplitude, see below) scores 100.
PHASH_FULL_DETAIL = 8.0


def phash_quality(dct8: np.ndarray) -> np.ndarray:
    """Detail score 0-100 of (N, 8, 8) pHash coefficients (scipy.fftpack DCT-II of the 32x32).

    Each bit is 'coefficient > median', so a bit is only as stable as its coefficient's
    distance from the median. The score is the mean |AC coefficient - median| in grey levels
    of the 32x32 image (an unnormalised 2-D DCT-II over 32x32 turns a cosine pattern of
    amplitude a into a coefficient of 1024 a), times 100 / PHASH_FULL_DETAIL, capped at 100.
    A blank frame scores 0, flat frames with noise ~0-2, dark or washed-out photos < 10,
    fine textures (brick, grass) 5-15, ordinary photos 40-100. dHash reports the same score.
    """
    flat = dct8.reshape(len(dct8), 64)
    median = np.median(flat, axis=1, keepdims=True)
    spread = np.abs(flat[:, 1:] - median).mean(axis=1) / 1024.0
    return np.minimum(np.round(spread * 100.0 / PHASH_FULL_DETAIL), 100).astype(int)
