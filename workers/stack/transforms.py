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


def watermark(img: np.ndarray) -> np.ndarray:
    """Three lines of semi-transparent text and an opaque logo box over ~5% of the image."""
    out = img.copy()
    h, w = img.shape[:2]
    scale = w / 400
    for i, text in enumerate(("@vigil-test", "reposted 2024", "watermark")):
        org = (int(w * 0.05), int(h * (0.3 + 0.3 * i)))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    out = cv2.addWeighted(img, 0.4, out, 0.6, 0)
    bw, bh = int(w * 0.25), int(h * 0.2)  # 5% of the area, bottom right
    x, y = w - bw - int(w * 0.03), h - bh - int(h * 0.03)
    cv2.rectangle(out, (x, y), (x + bw, y + bh), (30, 30, 200), -1)
    cv2.putText(out, "LOGO", (x + bw // 8, y + 2 * bh // 3), cv2.FONT_HERSHEY_SIMPLEX, bw / 150, (255, 255, 255),
                max(1, bw // 60), cv2.LINE_AA)
    return out


def caption_bar(img: np.ndarray) -> np.ndarray:
    """A meme caption: a white bar with black text over the top 12% of the image."""
    out = img.copy()
    h, w = img.shape[:2]
    bar = int(h * 0.12)
    out[:bar] = 255
    cv2.putText(out, "WHEN YOU SEE IT", (int(w * 0.05), int(bar * 0.72)), cv2.FONT_HERSHEY_SIMPLEX,
                bar / 40, (0, 0, 0), max(1, bar // 15), cv2.LINE_AA)
    return out
