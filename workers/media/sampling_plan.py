"""What a video sampling is asked for: the strategy (which frames), the work limits, and the frame it
yields. Plain data, split from workers/media/video.py (the decode loop) so callers that only build a
request (the hasher's dense windows, the CLI, the settings) need not read the decoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workers.media.probe import ProbeLimits

STRATEGIES = ("keyframes", "fixed", "all")


@dataclass(frozen=True)
class SamplingStrategy:
    """Which frames to take. ``fps`` is the fixed rate and the fill rate for sparse keyframes."""

    kind: str = "keyframes"  # keyframes | fixed | all
    fps: float = 1.0
    max_keyframe_gap_s: float = 5.0
    # fixed only: (start_s, end_s) stretches to sample, sorted and merged here; () = the whole stream
    windows: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {self.kind!r} ({' | '.join(STRATEGIES)})")
        if not self.fps > 0 or not self.max_keyframe_gap_s > 0:
            raise ValueError("fps and max_keyframe_gap_s must be positive")
        if self.windows:
            if self.kind != "fixed":
                raise ValueError("windows apply to the fixed strategy only")
            object.__setattr__(self, "windows", merge_windows(self.windows))

    def in_window(self, due: float) -> float:
        """The first time at or after `due` inside a window (inf after the last one)."""
        if not self.windows:
            return due
        for start, end in self.windows:
            if due <= end + 1e-9:
                return max(due, start)
        return math.inf

    def takes(self, t: float, key: bool, due: float) -> bool:
        """Whether a frame at `t` s (a keyframe or not) is sampled, the next tick being `due`."""
        if self.kind == "all":
            return True
        if self.kind == "keyframes" and key:
            return True
        return t >= due - 1e-9

    def next_due(self, t: float, key: bool) -> float:
        """The time the next frame is wanted after one taken at `t`: the next grid tick (in a
        window) for fixed; for keyframes, the gap fill if no keyframe comes within max_keyframe_gap_s."""
        step = 1.0 / self.fps
        if self.kind == "fixed":
            return self.in_window((math.floor(t / step + 1e-9) + 1) * step)
        if self.kind == "keyframes":
            return t + (self.max_keyframe_gap_s if key else step)
        return -math.inf


def merge_windows(windows) -> tuple[tuple[float, float], ...]:
    """(start, end) seconds sorted, overlapping or touching ones joined; empty ones dropped."""
    out: list[list[float]] = []
    for start, end in sorted((max(0.0, float(a)), float(b)) for a, b in windows):
        if end < start:
            continue
        if out and start <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return tuple((a, b) for a, b in out)


@dataclass(frozen=True)
class VideoLimits:
    """Work bounds for one video. Exceeding a bound stops sampling and marks the result partial,
    except max_pixels: absurd frame dimensions are refused before anything is decoded."""

    max_bytes: int = 64 * 1024 * 1024  # compressed video bytes demuxed
    max_seconds: float = 600.0  # of stream time
    max_frames: int = 600  # frames yielded
    max_pixels: int = 64_000_000  # per frame, as declared by the stream and as decoded
    probe: ProbeLimits = ProbeLimits()  # opening: probesize, analyzeduration, open timeout


@dataclass(frozen=True)
class VideoFrame:
    pixels: np.ndarray  # uint8, upright: (H, W, 3) RGB, or (H, W) luma when sampled with grey=True
    frame_ms: int  # presentation time from the stream start
    keyframe: bool

    @property
    def rgb(self) -> np.ndarray:
        """The RGB pixels; a grey sampling has none (ValueError)."""
        if self.pixels.ndim != 3:
            raise ValueError("this frame was sampled grey (luma only): no RGB")
        return self.pixels
