"""Media bytes to signals: the one pipeline shared by the hasher worker and `vigil bank add`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from workers import signals as sig
from workers.errors import MediaError
from workers.media.image import decode_image, sniff_media_type
from workers.settings import Settings


@dataclass
class HashResult:
    media_type: str
    signals: list[sig.SignalValue]
    frames: int = 0
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def hash_media(data: bytes, settings: Settings, media_type: str | None = None) -> HashResult:
    """Digests of the bytes plus perceptual signals of the decoded frame(s).

    The uploader's media_type is a hint; the bytes decide, so a video named .jpg is still a video.
    """
    kind = sniff_media_type(data)
    if kind == "video":
        raise MediaError("unsupported_media", "video uploads are not processed by this version")
    t0 = time.perf_counter()
    rgb = decode_image(data, settings.max_image_pixels)
    t1 = time.perf_counter()
    frames = [rgb]
    hashed = sig.hash_frames(frames, sig.DEFAULT_PERCEPTUAL, impl=settings.signal_impl)
    values = [sv for row in hashed for sv in row] + sig.hash_bytes(data)
    t2 = time.perf_counter()
    notes = [] if media_type in (None, kind) else [f"media_type hint {media_type!r} but the bytes are {kind}"]
    return HashResult(kind, values, frames=len(frames), notes=notes,
                      stage_seconds={"decode": t1 - t0, "hash": t2 - t1})
