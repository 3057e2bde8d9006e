"""Frames for `vigil live push`: a local video sampled at a fixed rate, or a directory of images,
as JPEG bytes, the way an ingest sampler would produce them. A file is a video or an image by
what its bytes are (workers.media.probe, as for uploads and `vigil bank add`), not by its name:
a recording in any container FFmpeg reads (.ts, .flv, .mkv...) is pushed as a stream."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from workers.media.probe import ProbeLimits, media_kind

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def frames_from(source: Path, fps: float, loop: bool = False, probe: ProbeLimits = ProbeLimits()) -> Iterator[bytes]:
    """JPEG frames of the source; MediaError when a file is neither an image nor a video
    (decode_failed) or has no video stream (no_video_stream)."""
    kind = None if source.is_dir() else media_kind(source, probe).kind
    while True:
        if source.is_dir():
            for path in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                yield _jpeg_file(path)
        elif kind == "image":
            yield _jpeg_file(source)
        else:
            from workers.media.video import SamplingStrategy, VideoLimits, sample_frames

            limits = VideoLimits(max_seconds=24 * 3600, max_frames=10**9, probe=probe)
            for frame in sample_frames(source, SamplingStrategy("fixed", fps=fps), limits):
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, 85])
                if ok:
                    yield buf.tobytes()
        if not loop:
            return


def _jpeg_file(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:3] == b"\xff\xd8\xff":
        return data
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path} is not a decodable image")
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
