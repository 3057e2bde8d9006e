"""Linear downscaling operators as matrices, so every signal's resize is a matrix product.

Each reference resize (PIL's LANCZOS for pHash/dHash, PDQ's Jarosz tent + decimation) is
separable and linear: out = R @ grey @ C.T for an (n_out, n_in) matrix per axis. Applying
those to a full 1080p frame would still cost ~100 M multiply-adds, so the frame is first
shrunk once by cheap 2x area halvings (cv2's integer-ratio fast path) and each reference
matrix is folded onto the halved grid: M = W @ pinv(A), where A is the halving operator.
For block averages that is simply the sum of the reference weights over each block, exact
whenever the image is constant within a block and very close otherwise.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# Halving stops before the shorter side drops below these. PDQ's tent spans ~2n/64 input
# lines, LANCZOS's 32-sample kernel ~6n/32: the grids keep >= 4 cells per PDQ output cell
# and >= 4 per pHash output cell (accuracy figures: benchmarks/bench_accuracy.py).
PDQ_GRID = 256
LANCZOS_GRID = 128


def _sinc(x: np.ndarray) -> np.ndarray:
    return np.sinc(x)  # sin(pi x) / (pi x), 1 at 0


def pil_lanczos_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL's LANCZOS (a=3) resampling weights, (n_out, n_in), as Pillow's Resample.c builds them."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    out = np.zeros((n_out, n_in))
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        x = (np.arange(xmin, xmax) - center + 0.5) / filterscale
        w = np.where(np.abs(x) < 3.0, _sinc(x) * _sinc(x / 3.0), 0.0)
        total = w.sum()
        out[xx, xmin:xmax] = w / total if total != 0 else w
    return out


def jarosz_matrix(n_in: int, n_out: int = 64, passes: int = 2) -> np.ndarray:
    """PDQ's downsampling: `passes` box filters of width ceil(n_in / 2n_out), then centre decimation."""
    window = (n_in + 2 * n_out - 1) // (2 * n_out)
    half = (window + 2) // 2
    i = np.arange(n_in)
    lo, hi = np.maximum(0, i - (window - half)), np.minimum(n_in, i + half)
    j = np.arange(n_in)
    box = ((j >= lo[:, None]) & (j < hi[:, None])) / (hi - lo)[:, None]
    rows = ((np.arange(n_out) + 0.5) * n_in / n_out).astype(int)
    op = box[rows]
    for _ in range(passes - 1):
        op = op @ box
    return op


def halvings(h: int, w: int, grid: int) -> int:
    """How many 2x area halvings keep the shorter side >= grid."""
    n = 0
    while min(h, w) >> (n + 1) >= grid:
        n += 1
    return n


def fold(weights: np.ndarray, times: int) -> np.ndarray:
    """Weights on the full grid -> weights on the grid after `times` halvings.

    Repeated halving (dropping an odd last line each time) averages blocks of k = 2**times
    over the first (n >> times) * k lines. The least-squares fold W @ pinv(A) of such a
    block-average operator A is the sum of W's weights over each block.
    """
    k = 1 << times
    n_out = weights.shape[1] >> times
    return weights[:, : n_out * k].reshape(weights.shape[0], n_out, k).sum(axis=2)


@lru_cache(maxsize=64)
def pdq_operators(h: int, w: int, times: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows (64, h'), cols.T (w', 64)) of PDQ's downsampling on the grid after `times` halvings."""
    rows = fold(jarosz_matrix(h, 64), times).astype(np.float32)
    cols = fold(jarosz_matrix(w, 64), times).astype(np.float32)
    return np.ascontiguousarray(rows), np.ascontiguousarray(cols.T)


@lru_cache(maxsize=64)
def lanczos_operators(h: int, w: int, times: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacked PIL LANCZOS operators, rows (32 + 8, h') and cols.T (w', 32 + 9): pHash | dHash."""
    rows = np.vstack([pil_lanczos_matrix(h, 32), pil_lanczos_matrix(h, 8)])
    cols = np.vstack([pil_lanczos_matrix(w, 32), pil_lanczos_matrix(w, 9)])
    rows, cols = fold(rows, times).astype(np.float32), fold(cols, times).astype(np.float32)
    return np.ascontiguousarray(rows), np.ascontiguousarray(cols.T)


def halve(img: np.ndarray, times: int) -> np.ndarray:
    """`times` 2x area halvings (odd last row/column dropped first, as fold models)."""
    for _ in range(times):
        h, w = img.shape[:2]
        img = cv2.resize(img[: h - h % 2, : w - w % 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return img
