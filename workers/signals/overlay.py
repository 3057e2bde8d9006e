"""The query variant with an opaque overlay box painted out: a logo, a sticker or a name plate
stamped on a copy ('unboxed').

Why: of a watermark's parts, the opaque box moves PDQ the most. On the accuracy benchmark's
watermark (three lines of semi-transparent text and a box over 5% of the picture), the box alone
moves PDQ as far as the whole watermark for most photos, while with the box painted out from the
surrounding pixels the copy comes back within the thresholds for two thirds of them
(benchmarks/bench_accuracy.py). An imported hash list cannot know where an overlay would be, so the
query does the work: it finds a flat, nearly rectangular region inside the picture (not touching the
edges: uniform borders are `unbordered`'s job), and if there is one, sends one more variant with it
inpainted. Most photos have no such region and cost only the detection (~1 ms at 128 px).

Detection runs on a small copy (DETECT_SIDE on the long side): the box is a large object, and
the inpainting only has to restore the low frequencies that PDQ and pHash read.
"""
from __future__ import annotations

import cv2
import numpy as np

OVERLAY_VARIANT = "unboxed"
DETECT_SIDE = 128
FLAT_RANGE = 6  # grey levels a 3x3 neighbourhood may span and still count as flat
MIN_AREA, MAX_AREA = 0.015, 0.20  # of the picture: smaller is a detail, larger is content
MIN_FILL = 0.85  # of its bounding box: a box, not a patch of sky


def _small(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame at DETECT_SIDE on its long side, and the scale: detection and inpainting share it."""
    h, w = frame.shape[:2]
    scale = DETECT_SIDE / max(h, w)
    return cv2.resize(frame, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA), scale


def overlay_box(frame: np.ndarray, small: tuple[np.ndarray, float] | None = None) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in the frame's pixels of its largest flat box not touching the edges, or None.
    `small`: the frame's _small() copy, when the caller has it already."""
    h, w = frame.shape[:2]
    if min(h, w) < 32:
        return None
    small, scale = small or _small(frame)
    grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    kernel = np.ones((3, 3), np.uint8)
    flat = ((cv2.dilate(grey, kernel) - cv2.erode(grey, kernel)) <= FLAT_RANGE).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=4)
    sh, sw = grey.shape
    best = None
    for i, (x, y, bw, bh, _area) in enumerate(stats[1:n].tolist(), 1):
        if x == 0 or y == 0 or x + bw >= sw or y + bh >= sh:
            continue
        if not MIN_AREA <= bw * bh / (sw * sh) <= MAX_AREA:
            continue
        filled = _filled(labels[y: y + bh, x: x + bw] == i)  # the box's own lettering makes holes
        if filled >= MIN_FILL * bw * bh and (best is None or filled > best[4]):
            best = (x, y, bw, bh, filled)
    if best is None:
        return None
    x, y, bw, bh, _ = best
    return (max(0, int((x - 1) / scale)), max(0, int((y - 1) / scale)),
            min(w, int((x + bw + 1) / scale) + 1), min(h, int((y + bh + 1) / scale) + 1))


def _filled(region: np.ndarray) -> int:
    """Pixels of the component with its holes filled: everything not reachable from outside it."""
    padded = np.pad(region.astype(np.uint8), 1)
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 2)
    return int((outside != 2).sum())


def unboxed_frame(frame: np.ndarray) -> np.ndarray | None:
    """The frame with its overlay box inpainted from around it (Telea, on the small copy, pasted
    back into the box only), or None when it has no such box."""
    if min(frame.shape[:2]) < 32:
        return None
    small, scale = shrunk = _small(frame)
    box = overlay_box(frame, shrunk)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[int(y0 * scale): int(np.ceil(y1 * scale)), int(x0 * scale): int(np.ceil(x1 * scale))] = 255
    painted = cv2.inpaint(small, mask, 3, cv2.INPAINT_TELEA)
    sy0, sy1 = int(y0 * scale), max(int(y0 * scale) + 1, int(np.ceil(y1 * scale)))
    sx0, sx1 = int(x0 * scale), max(int(x0 * scale) + 1, int(np.ceil(x1 * scale)))
    out = frame.copy()
    out[y0:y1, x0:x1] = cv2.resize(painted[sy0:sy1, sx0:sx1], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) \
        .reshape(out[y0:y1, x0:x1].shape)
    return out
