"""Edits that real re-uploads carry (re-encode, resize, crop...), applied to RGB frames.

Used by the demo and the tests to derive copies of banked photos; never on the hot path."""
from __future__ import annotations

import cv2
import numpy as np


def encode(rgb: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode {ext}")
    return buf.tobytes()


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def crop(rgb: np.ndarray, fraction: float) -> np.ndarray:
    """Cut `fraction` of the width and height, split evenly between the sides."""
    h, w = rgb.shape[:2]
    dy, dx = int(h * fraction / 2), int(w * fraction / 2)
    return np.ascontiguousarray(rgb[dy:h - dy, dx:w - dx])


def pad(rgb: np.ndarray, fraction: float, colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    h, w = rgb.shape[:2]
    dy, dx = int(h * fraction / 2), int(w * fraction / 2)
    return cv2.copyMakeBorder(rgb, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=colour)


def flip(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, ::-1])
