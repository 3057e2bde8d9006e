"""A decoded PyAV frame as the pixels hashers want: display aspect, at most `max_side`, RGB or
luma, upright. Apart from workers/media/video.py's decode loop because it is the one step that
depends on how a frame is shown rather than on which frames are taken."""
from __future__ import annotations

import numpy as np
from av.video.reformatter import VideoReformatter


def upright_pixels(scaler: VideoReformatter, frame, sar: float, max_side: int | None, grey: bool,
                   threads: int) -> tuple[np.ndarray, int]:
    """(pixels, rotation in degrees from the display matrix, 0 for none). Scaling (AREA) and the
    colour conversion are one reformat; the sample aspect ratio is applied so a stretched
    anamorphic frame hashes as it is shown."""
    width, height = frame.width, frame.height
    out_w, out_h = width * sar, float(height)
    if max_side and max(out_w, out_h) > max_side:
        scale = max_side / max(out_w, out_h)
        out_w, out_h = out_w * scale, out_h * scale
    out_w, out_h = max(2, int(round(out_w))), max(2, int(round(out_h)))
    fmt = "gray" if grey else "rgb24"
    scale = {} if (out_w, out_h) == (width, height) else {"interpolation": "AREA"}
    pixels = scaler.reformat(frame, out_w, out_h, fmt, threads=threads, **scale).to_ndarray()
    rotation = int(getattr(frame, "rotation", 0) or 0)
    if rotation % 360:
        # The display matrix rotates counter-clockwise by `rotation`; np.rot90 does the same.
        pixels = np.rot90(pixels, k=round(rotation / 90) % 4)
    else:
        rotation = 0
    return np.ascontiguousarray(pixels), rotation  # PyAV pads odd widths' rows; hashers want plain arrays
