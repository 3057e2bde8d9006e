"""Media bytes to signals: the one pipeline shared by the hasher worker and `vigil bank add`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from workers import signals as sig
from workers.errors import MediaError
from workers.media.image import decode_for_signals, decode_image, image_notes
from workers.media.probe import media_kind, probe_limits
from workers.settings import Settings
from workers.signals.bank_variants import CENTRE_VARIANT, bank_frames, centre_frame, is_bank_variant
from workers.signals.borders import remove_borders
from workers.signals.overlay import OVERLAY_VARIANT, unboxed_frame
from workers.signals.provenance import read_provenance

if TYPE_CHECKING:
    from workers.media.video import SamplingStrategy, VideoLimits, VideoSampling


@dataclass
class HashResult:
    media_type: str
    signals: list[sig.SignalValue]
    frames: int = 0
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    provenance: dict | None = None  # what the file claims about its origin (signals/provenance.py)


def hash_media(data: bytes, settings: Settings, media_type: str | None = None, query: bool = True,
               digests: list[sig.SignalValue] | None = None, bank_variants: bool = False) -> HashResult:
    """Digests of the bytes plus perceptual signals of the decoded frame(s).

    The uploader's media_type is a hint; the bytes decide, so a video named .jpg is still a video.
    query=False is for banking: a bank entry stores the media as it is, without query variants
    (and without provenance, which only decisions carry); bank_variants=True (banking only) adds
    its slightly rotated and cropped versions (bank_variants.py).
    digests: the bytes' MD5/SHA-256 when the caller already has them (the hasher's cache lookup).
    """
    kind = media_kind(data, probe_limits(settings)).kind
    if kind == "video":
        raise MediaError("unsupported_media", "videos are hashed from their file with hash_video")
    t0 = time.perf_counter()
    if settings.signal_impl == "fast":  # luma only, DCT-reduced where the short side allows
        pixels = decode_for_signals(data, settings.max_image_pixels, settings.decode_min_side, grey=True)
    else:  # the reference definitions: the full RGB decode, exactly as pdqhash and imagehash see it
        pixels = decode_image(data, settings.max_image_pixels)
    t1 = time.perf_counter()
    values = hash_frames_at([pixels], settings, [None], dihedral=query, bank_variants=bank_variants and not query,
                            centre=query, overlay=query)
    values += digests or sig.hash_bytes(data)
    t2 = time.perf_counter()
    notes = [] if media_type in (None, kind) else [f"media_type hint {media_type!r} but the bytes are {kind}"]
    notes += image_notes(data)  # e.g. bytes appended after the image (a polyglot): hashed, but said
    stages = {"decode": t1 - t0, "hash": t2 - t1}
    provenance = None
    if query and settings.provenance_read:
        provenance = read_provenance(data, settings.provenance_trust_anchors)
        stages["provenance"] = time.perf_counter() - t2
    return HashResult(kind, values, frames=1, notes=notes, stage_seconds=stages, provenance=provenance)


def hash_frame(pixels: np.ndarray, settings: Settings, frame_ms: int | None = None,
               dihedral: bool = False) -> list[sig.SignalValue]:
    """The frame (RGB, or luma for the fast signals) as it is, plus (when it has uniform borders:
    letterbox, padding) the frame without them, so a padded copy still matches. Queries also
    carry the rotated/flipped variants, which only banks that ask for them (dihedral) match."""
    return hash_frames_at([pixels], settings, [frame_ms], dihedral)


def hash_frames_at(frames: Sequence[np.ndarray], settings: Settings, frame_ms: Sequence[int | None],
                   dihedral: bool = False, bank_variants: bool = False, centre: bool = False,
                   overlay: bool = False) -> list[sig.SignalValue]:
    """hash_frame of several frames, in order, with one batched transform per frame shape: a
    video part's frames share a shape, and per-frame numpy calls cost more than the arithmetic.
    bank_variants: also the rotated / cropped versions a bank entry stores (bank_variants.py), each
    no better in quality than the frame itself (black corners add edges, not content: a flat photo's
    rotations must stay as unusable as the photo). centre: also the query's centre-15% (photos only:
    it costs about half a hash more per frame). overlay: also the query with an opaque overlay box
    painted out, when it has one (overlay.py; photos only)."""
    images, owners, variants = [], [], []
    for i, pixels in enumerate(frames):
        images.append(pixels)
        owners.append(i)
        variants.append(None)
        inner = remove_borders(pixels)
        if inner is not None:
            images.append(inner)
            owners.append(i)
            variants.append("unbordered")
            deeper = remove_borders(inner)  # a second layer: a screenshot's page around the photo
            if deeper is not None:
                images.append(deeper)
                owners.append(i)
                variants.append("unbordered-2")
        if centre and (middle := centre_frame(pixels)) is not None:
            images.append(middle)
            owners.append(i)
            variants.append(CENTRE_VARIANT)
        if overlay and (unboxed := unboxed_frame(pixels)) is not None:
            images.append(unboxed)
            owners.append(i)
            variants.append(OVERLAY_VARIANT)
        if bank_variants:
            for name, moved in bank_frames(pixels):
                images.append(moved)
                owners.append(i)
                variants.append(name)
    rows = sig.hash_frames(images, sig.DEFAULT_PERCEPTUAL, impl=settings.signal_impl, dihedral=dihedral)
    out = []
    own_quality: dict[tuple[int, str], int | None] = {}
    for row, owner, variant in zip(rows, owners, variants):
        for sv in row:
            name = sv.variant if variant is None else (f"{variant}+{sv.variant}" if sv.variant else variant)
            quality = sv.quality
            if variant is None and sv.variant is None:
                own_quality[(owner, sv.signal)] = quality
            elif is_bank_variant(variant) and quality is not None:
                quality = min(quality, own_quality.get((owner, sv.signal)) or 0)
            out.append(sig.SignalValue(sv.signal, sv.value, quality, frame_ms[owner], name))
    return out


@dataclass
class VideoPart:
    signals: list[sig.SignalValue]
    frames: int
    stage_seconds: dict[str, float]
    # Set on the parts of a dense re-decode (adaptive sampling): the (start_s, end_s) it covered.
    dense_windows: tuple[tuple[float, float], ...] = ()


# frame_ms of the signals (of one part) that came near a video entry: the hasher's bank check.
NearCheck = Callable[[list[sig.SignalValue]], list[int]]


def upload_strategy(settings: Settings, kind: str | None = None) -> "SamplingStrategy":
    """How an upload is sampled: keyframes, and a frame whenever VIGIL_VIDEO_MAX_GAP_S passes
    without one (so no excerpt that long falls between samples), or the fixed/all strategies."""
    from workers.media.video import SamplingStrategy

    kind = kind or settings.video_strategy
    if kind == "keyframes":
        gap = settings.video_max_gap_s
        return SamplingStrategy(kind, fps=max(settings.video_fps, 1.0 / gap), max_keyframe_gap_s=gap)
    return SamplingStrategy(kind, fps=settings.video_fps)


def hash_video(path: Path, settings: Settings, query: bool = True, strategy: str | None = None,
               part_frames: int | None = None, near: NearCheck | None = None,
               ) -> tuple[Iterator[VideoPart], "VideoSampling"]:
    """Parts of a video's frame hashes, as they are decoded, so a matcher can block before the end.

    Returns the parts iterator and the sampling object, whose summary (partial, notes, frames)
    is complete once the iterator is exhausted. The fast signals only read luma, so frames are
    decoded grey for them (under half the conversion cost of RGB).

    near: adaptive sampling. After each part, the frames `near` names (close to some banked
    video) get the seconds around them decoded densely (DenseResampler), and those frames follow
    as parts of their own: a 2 s excerpt of a banked video inside a long upload is then measured
    with ~20 frames rather than the one or two the sparse pass takes. Without a near frame this
    costs nothing."""
    from workers.media.video import sample_frames

    sampling = sample_frames(path, upload_strategy(settings, strategy), _limits(settings, settings.video_max_frames),
                             max_side=settings.video_max_side, grey=settings.signal_impl == "fast")
    size = part_frames or settings.video_part_frames
    dense = DenseResampler(path, settings, query, near, size) \
        if near is not None and settings.video_near_factor > 0 else None

    def parts() -> Iterator[VideoPart]:
        batch, t0 = [], time.perf_counter()
        for frame in sampling:
            batch.append(frame)
            if len(batch) >= size:
                part = _video_part(batch, settings, query, t0)
                yield part
                if dense is not None:
                    yield from dense.after(part)
                batch, t0 = [], time.perf_counter()
        if batch:
            part = _video_part(batch, settings, query, t0)
            yield part
            if dense is not None:
                yield from dense.after(part)

    return parts(), sampling


def _limits(settings: Settings, max_frames: int) -> "VideoLimits":
    from workers.media.video import VideoLimits

    return VideoLimits(max_bytes=settings.max_video_bytes, max_seconds=settings.video_max_seconds,
                       max_frames=max_frames, max_pixels=settings.max_image_pixels, probe=probe_limits(settings))


class DenseResampler:
    """Decodes the seconds around near frames at VIGIL_VIDEO_DENSE_FPS, once per stretch.

    Each stretch is decoded by a second pass over the file that demuxes up to it and decodes
    only its GOPs (SamplingStrategy.windows). A dense frame that is itself near extends the
    stretch, so a long excerpt is followed to its end; the whole is bounded by
    VIGIL_VIDEO_DENSE_MAX_SECONDS per upload. Only sampling changes here: whether frames match is
    still the matcher's question, asked of every frame the same way."""

    def __init__(self, path: Path, settings: Settings, query: bool, near: NearCheck, part_frames: int):
        self.path, self.settings, self.query, self.near, self.part_frames = path, settings, query, near, part_frames
        self.covered: tuple[tuple[float, float], ...] = ()
        self.budget_s = settings.video_dense_max_seconds
        self.frames = 0
        self.passes = 0

    def after(self, part: VideoPart) -> Iterator[VideoPart]:
        todo = self._windows(self.near(part.signals))
        while todo:
            hits: list[int] = []
            for dense_part in self._decode(todo):
                hits += self.near(dense_part.signals)
                yield dense_part
            todo = self._windows(hits)

    def _windows(self, near_ms: list[int]) -> tuple[tuple[float, float], ...]:
        """Stretches around these frames not decoded densely yet, within the budget."""
        from workers.media.video import merge_windows

        w = self.settings.video_dense_window_s
        wanted = merge_windows((ms / 1000 - w, ms / 1000 + w) for ms in near_ms)
        out = []
        for start, end in wanted:
            for a, b in _subtract((start, end), self.covered):
                if b - a >= 1.0 / self.settings.video_dense_fps and self.budget_s > 0:
                    b = min(b, a + self.budget_s)
                    self.budget_s -= b - a
                    out.append((a, b))
        return merge_windows(out)

    def _decode(self, windows: tuple[tuple[float, float], ...]) -> Iterator[VideoPart]:
        from workers.media.video import SamplingStrategy, merge_windows, sample_frames

        self.passes += 1
        self.covered = merge_windows(self.covered + windows)
        seconds = sum(b - a for a, b in windows)
        strategy = SamplingStrategy("fixed", fps=self.settings.video_dense_fps, windows=windows)
        sampling = sample_frames(self.path, strategy,
                                 _limits(self.settings, int(seconds * self.settings.video_dense_fps) + 2 * len(windows) + 8),
                                 max_side=self.settings.video_max_side, grey=self.settings.signal_impl == "fast")
        batch, t0 = [], time.perf_counter()
        try:
            for frame in sampling:
                batch.append(frame)
                if len(batch) >= self.part_frames:
                    yield self._part(batch, t0, windows)
                    batch, t0 = [], time.perf_counter()
        except MediaError:
            pass  # nothing decodable in the windows (past the end, a damaged stretch): the sparse pass stands
        if batch:
            yield self._part(batch, t0, windows)

    def _part(self, frames: list, t0: float, windows: tuple[tuple[float, float], ...]) -> VideoPart:
        self.frames += len(frames)
        part = _video_part(frames, self.settings, self.query, t0)
        part.dense_windows = windows
        return part


def _subtract(span: tuple[float, float], covered: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    """The parts of span outside every covered (sorted, merged) stretch."""
    start, end = span
    out = []
    for a, b in covered:
        if b <= start or a >= end:
            continue
        if a > start:
            out.append((start, a))
        start = max(start, b)
    if start < end:
        out.append((start, end))
    return out


def _video_part(frames: list, settings: Settings, query: bool, t0: float) -> VideoPart:
    t1 = time.perf_counter()
    values = hash_frames_at([f.pixels for f in frames], settings, [f.frame_ms for f in frames], dihedral=query)
    return VideoPart(values, len(frames), {"decode": t1 - t0, "hash": time.perf_counter() - t1})
