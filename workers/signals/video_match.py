"""vPDQ-style video matching: what share of one video's frames appear in another.

The rule follows ThreatExchange's vPDQ brute-force matcher: drop exact duplicate hashes, drop
frames below PDQ quality 50, then a frame matches when any frame of the other video is within
Hamming distance 31 (inclusive). Two percentages come out:

* query_percent: share of the query's frames found in the compared (bank) video. A short clip
  of a long banked video scores high here while compared_percent stays low.
* compared_percent: share of the banked video's frames found in the query; high when an upload
  embeds a whole banked clip inside longer content.

vPDQ calls it a match when either percentage reaches 80 (``VideoMatch.is_match``).
Distances are computed for all pairs at once with numpy on hashes packed as 4 x uint64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from workers.signals import SignalValue

PDQ_BYTES = 32
DISTANCE = 31  # vPDQ's VPDQ_DISTANCE_THRESHOLD, inclusive
QUALITY = 50  # vPDQ's VPDQ_QUALITY_THRESHOLD, inclusive
MATCH_PERCENT = 80.0  # vPDQ's confident-match threshold on either percentage
# Pairs per block when comparing, so two long videos never build one huge (n, m) matrix at once.
_BLOCK_PAIRS = 4_000_000

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class FrameHash(NamedTuple):
    """One sampled frame: its PDQ hash (hex, 32 bytes, or 256 0/1 bits), quality and time."""

    pdq: str | bytes | np.ndarray
    quality: int
    frame_ms: int


@dataclass(frozen=True)
class VideoMatch:
    query_percent: float
    compared_percent: float
    query_frames: int  # frames compared after dedupe and the quality filter
    compared_frames: int
    # (query frame_ms, compared frame_ms) of each matching query frame's nearest compared frame:
    # where in the banked video the upload's content sits.
    pairs: tuple[tuple[int, int], ...] = ()

    def is_match(self, percent: float = MATCH_PERCENT) -> bool:
        return max(self.query_percent, self.compared_percent) >= percent


def pack(hashes: Iterable[str | bytes | np.ndarray]) -> np.ndarray:
    """PDQ hashes as an (n, 32) uint8 array, most significant bit first (the hex order)."""
    rows = []
    for value in hashes:
        if isinstance(value, str):
            raw = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
        elif isinstance(value, (bytes, bytearray)):
            raw = np.frombuffer(bytes(value), dtype=np.uint8)
        else:
            arr = np.asarray(value)
            raw = np.packbits(arr.astype(np.uint8)) if arr.size == PDQ_BYTES * 8 else arr.astype(np.uint8)
        if raw.size != PDQ_BYTES:
            raise ValueError(f"a PDQ hash is {PDQ_BYTES} bytes, got {raw.size}")
        rows.append(raw)
    if not rows:
        return np.zeros((0, PDQ_BYTES), np.uint8)
    return np.ascontiguousarray(np.stack(rows))


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per element; np.bitwise_count on numpy 2, a byte lookup table before that."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape(words.shape + (words.dtype.itemsize,))
    return _POPCOUNT8[as_bytes].sum(axis=-1, dtype=np.uint16)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) Hamming distances between packed hash rows of a and b."""
    wa = np.ascontiguousarray(a).view(np.uint64)  # (n, 4)
    wb = np.ascontiguousarray(b).view(np.uint64)  # (m, 4)
    out = np.empty((len(wa), len(wb)), dtype=np.uint16)
    step = max(1, _BLOCK_PAIRS // max(1, len(wb)))
    for i in range(0, len(wa), step):
        x = wa[i:i + step, None, :] ^ wb[None, :, :]
        out[i:i + step] = popcount(x).sum(axis=-1, dtype=np.uint16)
    return out


def frames_from_signals(rows: Sequence[Sequence[SignalValue]], frame_ms: Sequence[int]) -> list[FrameHash]:
    """Pair hash_frames() output with the sampler's timestamps, keeping the PDQ value of each."""
    out = []
    for row, ms in zip(rows, frame_ms, strict=True):
        for value in row:
            if value.signal == "pdq":
                out.append(FrameHash(value.value, int(value.quality or 0), int(ms)))
                break
    return out


def _usable(frames: Sequence[FrameHash], quality: int) -> list[FrameHash]:
    """vPDQ's preparation: first occurrence of each exact hash, then the quality filter."""
    seen: set[bytes] = set()
    out = []
    for frame in frames:
        key = pack([frame.pdq])[0].tobytes()
        if key in seen:
            continue
        seen.add(key)
        if frame.quality >= quality:
            out.append(frame)
    return out


def match_video(
    query: Sequence[FrameHash],
    compared: Sequence[FrameHash],
    *,
    distance: int = DISTANCE,
    quality: int = QUALITY,
) -> VideoMatch:
    """Both vPDQ percentages for a query video against one compared (bank) video.

    A side with no usable frame (all black, say) scores 0 rather than dividing by zero.
    """
    q = _usable([FrameHash(*f) for f in query], quality)
    c = _usable([FrameHash(*f) for f in compared], quality)
    if not q or not c:
        return VideoMatch(0.0, 0.0, len(q), len(c))
    d = distances(pack(f.pdq for f in q), pack(f.pdq for f in c))
    close = d <= distance
    q_hit = close.any(axis=1)
    c_hit = close.any(axis=0)
    nearest = d.argmin(axis=1)
    pairs = tuple((q[i].frame_ms, c[int(nearest[i])].frame_ms) for i in np.flatnonzero(q_hit))
    return VideoMatch(
        query_percent=100.0 * q_hit.sum() / len(q),
        compared_percent=100.0 * c_hit.sum() / len(c),
        query_frames=len(q),
        compared_frames=len(c),
        pairs=pairs,
    )


def dedupe_frames(frames: Sequence[FrameHash], distance: int = 8) -> list[FrameHash]:
    """Collapse runs of near-identical consecutive frames to their first frame (for bank entries).

    Each frame is compared with the last frame kept, not its neighbour, so a slow pan cannot
    drift away frame by frame and vanish. Every dropped frame lies within `distance` of a kept
    one, so a query within t of a dropped frame is within t + distance of a kept frame: keep
    `distance` well below the match threshold. distance=0 keeps every change.
    """
    frames = [FrameHash(*f) for f in frames]
    if not frames:
        return []
    packed = pack(f.pdq for f in frames)
    words = packed.view(np.uint64)
    kept = [0]
    for i in range(1, len(frames)):
        if int(popcount(words[i] ^ words[kept[-1]]).sum()) > distance:
            kept.append(i)
    return [frames[i] for i in kept]
