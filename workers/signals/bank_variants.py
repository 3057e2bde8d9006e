"""Bank-side variants: the slightly rotated and cropped versions of media banked from the file.

A query cannot know it was rotated by 3 degrees or cropped by 5%, and hashing every query under
every such guess costs a warp per guess on the hot path. The bank entry can: `vigil bank add` has
the media itself (an imported hash list never does), so it also stores the hashes of these
versions, once, as extra values of the entry (SignalValue.variant = the name below). A query then
matches the version nearest to it at no cost but the index rows, and the evidence names it.

A query carries one such version of its own, its centre (CENTRE_VARIANT), which meets the entry's
crop-15%: an overlay in the margin (a caption bar, a corner logo) is then cut from both.

Why these: PDQ moves by ~30-60 of 256 bits for a 2 degree rotation with the black corners it leaves
(cv2/PIL rotate in place), and by more for a 5%+ centre crop, while a version 1 degree away from the
edit is back under the threshold for most photos (benchmarks/bench_accuracy.py). The codes are
persisted (workers.bank.codes flags bits 1..7): append new variants, never reorder.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


def rotated(frame: np.ndarray, degrees: float) -> np.ndarray:
    """Rotated counter-clockwise about the centre in the same canvas, corners black: what an editor's
    'rotate' and cv2.warpAffine / PIL's rotate(expand=False) produce."""
    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def centre_crop(frame: np.ndarray, fraction: float) -> np.ndarray:
    """`fraction` of the height and of the width cut off each side."""
    h, w = frame.shape[:2]
    dy, dx = int(h * fraction), int(w * fraction)
    return np.ascontiguousarray(frame[dy:h - dy, dx:w - dx])


# The query side's one partial variant: the centre without CENTRE_FRACTION of each side, so a caption
# bar or a corner logo inside that margin is cut from the query as it is from the entry's crop-15%.
CENTRE_FRACTION = 0.15
CENTRE_VARIANT = "centre-15%"

# name -> transform; the position (1-based) is the persisted code
BANK_VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rotate+2": lambda f: rotated(f, 2), "rotate-2": lambda f: rotated(f, -2),
    "rotate+3": lambda f: rotated(f, 3), "rotate-3": lambda f: rotated(f, -3),
    "rotate+4": lambda f: rotated(f, 4), "rotate-4": lambda f: rotated(f, -4),
    "rotate+5": lambda f: rotated(f, 5), "rotate-5": lambda f: rotated(f, -5),
    "crop-4%": lambda f: centre_crop(f, 0.04), "crop-8%": lambda f: centre_crop(f, 0.08),
    "crop-12%": lambda f: centre_crop(f, 0.12), "crop-15%": lambda f: centre_crop(f, CENTRE_FRACTION),
}
_CODES = {name: i + 1 for i, name in enumerate(BANK_VARIANTS)}
_NAMES = {i: name for name, i in _CODES.items()}
MAX_CODE = 127  # seven bits of the packed record's flags byte


def variant_code(variant: str | None) -> int:
    """The persisted code of a bank-side variant; 0 for anything else (none, 'unbordered', ...)."""
    return _CODES.get(variant or "", 0)


def variant_name(code: int) -> str | None:
    return _NAMES.get(int(code))


def is_bank_variant(variant: str | None) -> bool:
    return variant_code(variant) > 0


def centre_frame(frame: np.ndarray, min_side: int = 32) -> np.ndarray | None:
    """The query's CENTRE_VARIANT, or None for a frame too small to cut."""
    if min(frame.shape[:2]) < min_side:
        return None
    return centre_crop(frame, CENTRE_FRACTION)


def bank_frames(frame: np.ndarray, min_side: int = 32) -> list[tuple[str, np.ndarray]]:
    """(variant name, transformed frame) for every bank-side variant; none for frames too small
    for a rotation or crop to mean anything."""
    if min(frame.shape[:2]) < min_side:
        return []
    return [(name, fn(frame)) for name, fn in BANK_VARIANTS.items()]
