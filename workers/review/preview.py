"""What a reviewer's browser is sent of a case's media: a JPEG rendered on the fly from the file
under the media root, greyscale and blurred unless this reviewer revealed this case (audited),
never written anywhere. A video is a grid of sampled frames (no player, so no autoplay and no
audio). Sizes are capped so a preview costs little to render and to look at."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from workers.errors import MediaError
from workers.media.fetch import read_media, resolve_uri
from workers.media.image import decode_image
from workers.media.probe import media_kind, probe_limits
from workers.settings import Settings

MAX_SIDE = 720
GRID = 3  # a video preview is GRID x GRID frames
BLUR_LEVELS = (0, 8, 16, 24, 40, 64)  # pixels of Gaussian sigma at MAX_SIDE; 0 = greyscale only


def render(media_uri: str, settings: Settings, reveal: bool, blur: int) -> bytes:
    """JPEG bytes of the preview. Raises MediaError when the media cannot be read."""
    path = resolve_uri(media_uri, settings.media_roots)
    if media_kind(path, probe_limits(settings)).kind == "video":  # the bytes decide (media/probe.py)
        rgb = _video_grid(path, settings)
    else:
        rgb = decode_image(read_media(path, settings.max_media_bytes), settings.max_image_pixels)
    img = _fit(np.ascontiguousarray(rgb[..., :3]))
    if not reveal:
        img = shield(img, blur)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise MediaError("decode_failed", "preview could not be encoded")
    return buf.tobytes()


def shield(rgb: np.ndarray, blur: int) -> np.ndarray:
    """Greyscale, then a Gaussian blur of `blur` pixels sigma (scaled to the image): what a
    reviewer sees before choosing to look."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if blur > 0:
        sigma = blur * max(grey.shape) / MAX_SIDE
        grey = cv2.GaussianBlur(grey, (0, 0), sigmaX=sigma)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def _fit(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def _video_grid(path: Path, settings: Settings) -> np.ndarray:
    """GRID x GRID frames spread over the video (1 frame every few seconds, the first GRID**2)."""
    from workers.media.video import SamplingStrategy, VideoLimits, sample_frames

    cell = MAX_SIDE // GRID
    frames = []
    sampling = sample_frames(path, SamplingStrategy("fixed", fps=0.5),
                             VideoLimits(max_bytes=settings.max_video_bytes, max_seconds=settings.video_max_seconds,
                                         max_frames=GRID * GRID, max_pixels=settings.max_image_pixels),
                             max_side=cell)
    for frame in sampling:
        frames.append(frame.pixels)
    if not frames:
        raise MediaError("decode_failed", "no frame of the video could be decoded for a preview")
    tiles = [cv2.resize(f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2RGB), (cell, cell * 9 // 16))
             for f in frames]
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (GRID * GRID - len(tiles))
    rows = [np.hstack(tiles[r * GRID:(r + 1) * GRID]) for r in range(GRID)]
    return np.vstack(rows)
