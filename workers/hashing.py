"""Media bytes to signals: the one pipeline shared by the hasher worker and `vigil bank add`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from workers import signals as sig
from workers.errors import MediaError
from workers.media.image import decode_image, sniff_media_type
from workers.settings import Settings
from workers.signals.borders import remove_borders


@dataclass
class HashResult:
    media_type: str
    signals: list[sig.SignalValue]
    frames: int = 0
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def hash_media(data: bytes, settings: Settings, media_type: str | None = None, query: bool = True) -> HashResult:
    """Digests of the bytes plus perceptual signals of the decoded frame(s).

    The uploader's media_type is a hint; the bytes decide, so a video named .jpg is still a video.
    query=False is for banking: a bank entry stores the media as it is, without query variants.
    """
    kind = sniff_media_type(data)
    if kind == "video":
        raise MediaError("unsupported_media", "video uploads are not processed by this version")
    t0 = time.perf_counter()
    rgb = decode_image(data, settings.max_image_pixels)
    t1 = time.perf_counter()
    values = hash_frame(rgb, settings, dihedral=query) + sig.hash_bytes(data)
    t2 = time.perf_counter()
    notes = [] if media_type in (None, kind) else [f"media_type hint {media_type!r} but the bytes are {kind}"]
    return HashResult(kind, values, frames=1, notes=notes, stage_seconds={"decode": t1 - t0, "hash": t2 - t1})


def hash_frame(rgb: np.ndarray, settings: Settings, frame_ms: int | None = None,
               dihedral: bool = False) -> list[sig.SignalValue]:
    """The frame as it is, plus (when it has uniform borders: letterbox, padding) the frame
    without them, so a padded copy still matches. Queries also carry the rotated/flipped
    variants, which only banks that ask for them (dihedral) match."""
    frames, variants = [rgb], [None]
    inner = remove_borders(rgb)
    if inner is not None:
        frames.append(inner)
        variants.append("unbordered")
    rows = sig.hash_frames(frames, sig.DEFAULT_PERCEPTUAL, impl=settings.signal_impl, dihedral=dihedral)
    out = []
    for row, variant in zip(rows, variants):
        for sv in row:
            name = sv.variant if variant is None else (f"{variant}+{sv.variant}" if sv.variant else variant)
            out.append(replace(sv, frame_ms=frame_ms, variant=name))
    return out
