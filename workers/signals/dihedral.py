"""Rotations and flips of a hash's DCT coefficients, so query-side variants cost no resize.

For a DCT-II, mirroring an axis multiplies frequency k by (-1)**k and transposing the image
transposes the coefficients; the 8 dihedral transforms are combinations of the two. A
variant is named after what was done to the frame: 'rot90' is the hash of np.rot90(frame)
(90 degrees counter-clockwise), 'flip-h' of frame[:, ::-1], 'flip-v' of frame[::-1],
'transpose' of frame.T, 'anti-transpose' of np.rot90(frame, 2).T.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

VARIANTS = ("rot90", "rot180", "rot270", "flip-h", "flip-v", "transpose", "anti-transpose")


@lru_cache(maxsize=None)
def _signs(n: int) -> np.ndarray:
    """-1 on odd frequencies: PDQ's 16x16 starts at frequency 1, pHash's 8x8 at 0."""
    first = 1 if n == 16 else 0
    return np.where((np.arange(n) + first) % 2 == 1, -1.0, 1.0).astype(np.float32)


def transform(dct: np.ndarray, variant: str) -> np.ndarray:
    """(N, n, n) coefficients of frames -> coefficients of the transformed frames."""
    s = _signs(dct.shape[-1])
    rows, cols = s[:, None], s[None, :]
    if variant == "flip-h":
        return dct * cols
    if variant == "flip-v":
        return dct * rows
    if variant == "rot180":
        return dct * rows * cols
    if variant == "transpose":
        return np.swapaxes(dct, -1, -2)
    if variant == "rot90":  # np.rot90(m) == m[:, ::-1].T
        return np.swapaxes(dct * cols, -1, -2)
    if variant == "rot270":  # np.rot90(m, 3) == m[::-1].T
        return np.swapaxes(dct * rows, -1, -2)
    if variant == "anti-transpose":  # m[::-1, ::-1].T
        return np.swapaxes(dct * rows * cols, -1, -2)
    raise ValueError(f"unknown dihedral variant {variant!r} (known: {', '.join(VARIANTS)})")


def apply(frame: np.ndarray, variant: str) -> np.ndarray:
    """The same transform on pixels; the definition the coefficient version is tested against."""
    ops = {
        "rot90": lambda m: np.rot90(m),
        "rot180": lambda m: np.rot90(m, 2),
        "rot270": lambda m: np.rot90(m, 3),
        "flip-h": lambda m: m[:, ::-1],
        "flip-v": lambda m: m[::-1],
        "transpose": lambda m: np.swapaxes(m, 0, 1),
        "anti-transpose": lambda m: np.swapaxes(np.rot90(m, 2), 0, 1),
    }
    return np.ascontiguousarray(ops[variant](frame))
