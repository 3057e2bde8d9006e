"""The reference definitions: pdqhash for PDQ, imagehash for pHash and dHash.

Slow, but they are what the rest of the industry computes; the fast path is tested against them.
"""
from __future__ import annotations

from typing import Sequence

import imagehash
import numpy as np
import pdqhash
from PIL import Image

from workers.signals import SignalValue, bits_to_hex


def pdq(rgb: np.ndarray) -> tuple[str, int]:
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return bits_to_hex(bits), int(quality)


def phash(rgb: np.ndarray) -> str:
    return str(imagehash.phash(Image.fromarray(rgb)))


def dhash(rgb: np.ndarray) -> str:
    return str(imagehash.dhash(Image.fromarray(rgb)))


def hash_frames(frames: Sequence[np.ndarray], signals: Sequence[str], dihedral: bool = False
                ) -> list[list[SignalValue]]:
    """dihedral=True hashes each rotated/flipped frame in pixels (slow, but the definition)."""
    out = []
    for rgb in frames:
        row = _hash_one(rgb, signals)
        if dihedral:
            from workers.signals.dihedral import VARIANTS, apply

            for name in VARIANTS:
                moved = np.ascontiguousarray(apply(rgb, name))
                row += [SignalValue(v.signal, v.value, v.quality, variant=name)
                        for v in _hash_one(moved, signals) if v.signal in ("pdq", "phash")]
        out.append(row)
    return out


def _hash_one(rgb: np.ndarray, signals: Sequence[str]) -> list[SignalValue]:
    row = []
    for signal in signals:
        if signal == "pdq":
            value, quality = pdq(rgb)
            row.append(SignalValue("pdq", value, quality))
        elif signal == "phash":
            row.append(SignalValue("phash", phash(rgb)))
        elif signal == "dhash":
            row.append(SignalValue("dhash", dhash(rgb)))
        else:
            raise ValueError(f"{signal!r} is not a perceptual signal")
    return row
