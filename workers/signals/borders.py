"""Uniform borders (letterbox, pillarbox, padding of any colour) and their removal.

Padding an image by 20% moves every PDQ/pHash coefficient, so a padded re-upload of banked
media would not match; hashing the frame without its borders as well (variant='unbordered')
restores the match. A border is a run of lines, from an edge inwards, in which nearly every
pixel is within BORDER_TOLERANCE of that edge's colour (JPEG ringing and noise stay within
that; a stray logo pixel is allowed by BORDER_FILL).
"""
from __future__ import annotations

import numpy as np

BORDER_TOLERANCE = 20  # max |channel difference| from the edge colour, in grey levels
BORDER_FILL = 0.97  # fraction of a line's pixels that must be border-coloured
MIN_BORDER = 0.02  # ignore borders thinner than this fraction of the side they cut
MIN_CONTENT = 0.10  # less content than this fraction of either side: treat as blank
LINE_SAMPLES = 480  # pixels looked at per line (strided): enough to see any content
CHUNK = 64  # most lines examined at a time


def _uniform(lines: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per line of (L, P, C): is it (nearly all) within tolerance of colour?"""
    near = np.ones(lines.shape[:2], bool)
    for c in range(lines.shape[2]):  # per channel: numpy reduces a trailing axis of 3 slowly
        near &= np.abs(lines[:, :, c].astype(np.int16) - colour[c]) <= BORDER_TOLERANCE
    return near.mean(axis=1) >= BORDER_FILL


def _depth(lines: np.ndarray) -> int:
    """Border lines at the start of `lines` (L, P, C), measured against line 0's colour."""
    colour = np.median(lines[0], axis=0).astype(np.int16)
    start, size = 0, 1  # line 0 alone first: most frames have no border and stop there
    while start < len(lines):
        chunk = _uniform(lines[start : start + size], colour)
        if not chunk.all():
            return start + int(np.argmin(chunk))
        start += size
        size = min(2 * size, CHUNK)
    return len(lines)


def border_box(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) thickness in pixels of the uniform borders, or None if none.

    A frame that is all border (blank, or a sliver of content) also gives None: there is no
    content to hash, and quality gating already stops the original's hash from matching.
    """
    img = frame if frame.ndim == 3 else frame[:, :, None]
    h, w = img.shape[:2]
    sx, sy = max(1, w // LINE_SAMPLES), max(1, h // LINE_SAMPLES)
    top = _depth(img[: h // 2, ::sx])
    bottom = _depth(img[::-1][: h // 2, ::sx])
    cols = np.swapaxes(img, 0, 1)
    left = _depth(cols[: w // 2, ::sy])
    right = _depth(cols[::-1][: w // 2, ::sy])
    if h - top - bottom < MIN_CONTENT * h or w - left - right < MIN_CONTENT * w:
        return None
    if top + bottom < MIN_BORDER * h and left + right < MIN_BORDER * w:
        return None
    return top, bottom, left, right


def remove_borders(frame: np.ndarray) -> np.ndarray | None:
    """The frame without its uniform borders, or None when it has none worth removing.

    One layer: borders can nest (a screenshot has the page's background around the photo and the
    browser's title bar, another colour, above it), and the caller peels the next layer by calling
    this again on the result (hashing.hash_frames_at does, once, as variant 'unbordered-2')."""
    box = border_box(frame)
    if box is None:
        return None
    top, bottom, left, right = box
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[top : h - bottom, left : w - right])
