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


# -- excerpts: a few seconds of a banked video inside a longer one ----------------------------------
# A banked frame may match a little out of order (two near-identical banked frames, the nearest
# picked): going back this much in entry time does not break a run.
EXCERPT_BACK_MS = 500
# The entry's time may run at most this much faster than the upload's (speed-ups) for the run to
# count at its entry span; beyond it the run is inconsistent (scattered matches, not playback).
EXCERPT_MAX_SPEED = 2.0
EXCERPT_SLACK_MS = 1000  # sampling and bank dedupe: a banked frame stands for up to ~1 s of its video


@dataclass(frozen=True)
class ExcerptRun:
    """Consecutive sampled upload frames that all matched one video entry, in the entry's order."""

    upload_start_ms: int
    upload_end_ms: int
    entry_start_ms: int
    entry_end_ms: int
    frames: int

    @property
    def consistent(self) -> bool:
        """Timing consistent with playback: the entry's span is not far beyond the upload's."""
        entry = self.entry_end_ms - self.entry_start_ms
        return entry <= EXCERPT_MAX_SPEED * (self.upload_end_ms - self.upload_start_ms) + EXCERPT_SLACK_MS

    @property
    def covered_ms(self) -> int:
        """How much of the entry's timeline the run shows: its entry span, counted at no more than
        EXCERPT_MAX_SPEED x the upload's span; 0 when the timing is inconsistent."""
        if not self.consistent:
            return 0
        upload = self.upload_end_ms - self.upload_start_ms
        return int(min(self.entry_end_ms - self.entry_start_ms, EXCERPT_MAX_SPEED * upload))

    def to_json(self) -> dict:
        return {"upload_start_ms": self.upload_start_ms, "upload_end_ms": self.upload_end_ms,
                "entry_start_ms": self.entry_start_ms, "entry_end_ms": self.entry_end_ms,
                "frames": self.frames, "covered_ms": self.covered_ms, "consistent": self.consistent}


def excerpt_runs(frames: Sequence[int], pairs: dict[int, int]) -> list[ExcerptRun]:
    """Runs of consecutive sampled frames that matched the entry with entry times in order.

    frames: the upload's usable sampled frame times (quality-gated, allowlisted frames removed),
    in any order; pairs: upload frame_ms -> the entry frame_ms it matched. A frame that did not
    match (or was gated out of `frames`' neighbours by being unusable) ends a run; so does an entry
    time more than EXCERPT_BACK_MS behind the run's latest. Why runs and not percentages: vPDQ's
    80% of either side cannot hold for 2 s of a banked 60 s video inside a 5-minute upload, yet
    2 s of it in order is the material."""
    runs: list[ExcerptRun] = []
    cur: list[tuple[int, int]] = []
    top = 0  # the run's latest entry time

    def close() -> None:
        if cur:
            es = [e for _, e in cur]
            runs.append(ExcerptRun(cur[0][0], cur[-1][0], min(es), max(es), len(cur)))
            cur.clear()

    for ms in sorted(set(frames)):
        entry = pairs.get(ms)
        if entry is None:
            close()
            continue
        if cur and entry < top - EXCERPT_BACK_MS:
            close()
        top = max(top, entry) if cur else entry
        cur.append((ms, entry))
    close()
    return runs


def longest_excerpt(frames: Sequence[int], pairs: dict[int, int]) -> ExcerptRun | None:
    """The run covering the most of the entry (then the most frames); None without a match."""
    runs = excerpt_runs(frames, pairs)
    return max(runs, key=lambda r: (r.covered_ms, r.frames)) if runs else None
