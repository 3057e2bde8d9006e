"""The hash history (topic moderation.hash-history): one binary record per decided upload and per
sampled live frame, so a bank that learns a hash later can find the content that carried it
(workers/retro). Signals only, never media.

Why binary and fixed-stride: a rescan reads 10^8 records, and the retro worker decodes a whole
batch at once by offset arithmetic (`frame_offsets`) and matches the bytes in place, without a
Python object per record. JSON hex would be ~3x larger and ~50x slower to read.

Record value, little-endian (key = content_id, or stream_id for live frames):

    offset size  field
    0      1     format version (1)
    1      1     flags: bits 0-1 media (0 image, 1 video, 2 live frame), bits 2-3 the decision
                 (0 allow, 1 review, 2 block), bit 4 md5 present, bit 5 sha256 present, bit 6
                 event_id packed as 16 uuid bytes (else utf-8)
    2      2     frames that follow (0..65535)
    4      4     bank_version the decision was made with
    8      8     decided_at_ms
    16     16    md5 (zeros when absent)
    32     32    sha256 (zeros when absent)
    64     46*n  per frame: frame_ms u32, pdq 32 bytes, pdq quality u8, phash 8 bytes, phash
                 quality u8 (quality 255: that signal was not computed for the frame)
    64+46n rest  event_id

An image is 64 + 46 + 16 = 126 bytes; a video sampled at 1 frame/s adds 2,760 bytes a minute.
Dihedral variants (rotated copies the hasher adds for dihedral banks) are not kept: 8x the cost.
"""
from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

VERSION = 1
HEADER = struct.Struct("<BBHIQ")
DIGESTS_AT, MD5_AT, SHA256_AT = 16, 16, 32
FRAMES_AT = 64
FRAME = struct.Struct("<I32sB8sB")
FRAME_BYTES = FRAME.size  # 46
PDQ_AT, PDQ_Q_AT, PHASH_AT, PHASH_Q_AT = 4, 36, 37, 45  # within a frame
NO_QUALITY = 255
MEDIA = {"image": 0, "video": 1, "live": 2}
MEDIA_NAMES = {v: k for k, v in MEDIA.items()}
DECISIONS = {"allow": 0, "review": 1, "block": 2}
DECISION_NAMES = {v: k for k, v in DECISIONS.items()}
HAS_MD5, HAS_SHA256, UUID_ID = 1 << 4, 1 << 5, 1 << 6
MAX_FRAMES = 65535
_ZERO16, _ZERO32, _ZERO8 = bytes(16), bytes(32), bytes(8)


@dataclass(frozen=True)
class Frame:
    frame_ms: int
    pdq: bytes | None
    pdq_quality: int | None
    phash: bytes | None
    phash_quality: int | None


def _quality(q: int | None) -> int:
    return NO_QUALITY if q is None else max(0, min(254, int(q)))


def frames_of(signals: Iterable[Any]) -> tuple[list[Frame], bytes | None, bytes | None]:
    """SignalValues (as the matcher sees them) to frames and the two digests. Rotated variants
    are skipped; signals of one frame share frame_ms (None for a still image: 0)."""
    by_ms: dict[int, dict[str, Any]] = {}
    md5 = sha256 = None
    for sv in signals:
        if sv.signal == "md5":
            md5 = bytes.fromhex(sv.value)
        elif sv.signal == "sha256":
            sha256 = bytes.fromhex(sv.value)
        elif sv.signal in ("pdq", "phash") and not sv.variant:
            by_ms.setdefault(sv.frame_ms or 0, {})[sv.signal] = sv
    frames = []
    for ms in sorted(by_ms)[:MAX_FRAMES]:
        got = by_ms[ms]
        pdq, ph = got.get("pdq"), got.get("phash")
        frames.append(Frame(ms, bytes.fromhex(pdq.value) if pdq else None, pdq.quality if pdq else None,
                            bytes.fromhex(ph.value) if ph else None, ph.quality if ph else None))
    return frames, md5, sha256


def encode_record(event_id: str, media: str, decision: str, bank_version: int, decided_at_ms: int,
                  frames: list[Frame], md5: bytes | None = None, sha256: bytes | None = None) -> bytes:
    """One history record (layout in the module docstring)."""
    flags = MEDIA[media] | DECISIONS[decision] << 2 | (HAS_MD5 if md5 else 0) | (HAS_SHA256 if sha256 else 0)
    try:
        eid = uuid.UUID(event_id).bytes if len(event_id) == 36 and str(uuid.UUID(event_id)) == event_id else None
    except ValueError:
        eid = None
    if eid is not None:
        flags |= UUID_ID
    else:
        eid = event_id.encode()
    parts = [HEADER.pack(VERSION, flags, len(frames), bank_version & 0xFFFFFFFF, decided_at_ms),
             md5 or _ZERO16, sha256 or _ZERO32]
    for f in frames:
        parts.append(FRAME.pack(f.frame_ms & 0xFFFFFFFF, f.pdq or _ZERO32,
                                _quality(f.pdq_quality) if f.pdq else NO_QUALITY,
                                f.phash or _ZERO8, _quality(f.phash_quality) if f.phash else NO_QUALITY))
    parts.append(eid)
    return b"".join(parts)


@dataclass(frozen=True)
class Header:
    """What a matched record says about the original decision (decoded only for matches)."""

    event_id: str
    media: str
    decision: str
    bank_version: int
    decided_at_ms: int
    frames: int

    def frame_ms(self, raw: bytes, frame: int) -> int:
        return struct.unpack_from("<I", raw, FRAMES_AT + frame * FRAME_BYTES)[0]


def decode_header(raw: bytes) -> Header:
    version, flags, frames, bank_version, decided = HEADER.unpack_from(raw, 0)
    if version != VERSION:
        raise ValueError(f"history record format {version}, this worker reads {VERSION}")
    tail = raw[FRAMES_AT + frames * FRAME_BYTES:]
    eid = str(uuid.UUID(bytes=bytes(tail))) if flags & UUID_ID else bytes(tail).decode("utf-8", "replace")
    return Header(eid, MEDIA_NAMES.get(flags & 3, "image"), DECISION_NAMES.get(flags >> 2 & 3, "allow"),
                  bank_version, decided, frames)


@dataclass
class Batch:
    """Many records as one buffer: `starts[i]` is where record i begins; frame rows are
    (record, frame) pairs with `frame_offsets` where each frame begins. Records that are not
    valid version-1 records (short, wrong version, frame count past the end) are in `bad`."""

    buf: np.ndarray
    starts: np.ndarray
    lens: np.ndarray
    flags: np.ndarray
    frame_record: np.ndarray
    frame_offsets: np.ndarray
    bad: np.ndarray


def decode_batch(values: list[bytes]) -> Batch:
    """Vectorised: lengths, flags and frame offsets of every record, no per-record Python."""
    n = len(values)
    lens = np.fromiter(map(len, values), np.int64, n)
    buf = np.frombuffer(b"".join(values), np.uint8)
    starts = np.zeros(n, np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    ok = lens >= FRAMES_AT
    safe = np.where(ok, starts, 0)
    if len(buf) < FRAMES_AT:  # nothing long enough to read a header from
        buf = np.concatenate([buf, np.zeros(FRAMES_AT, np.uint8)])
    version = buf[safe]
    flags = buf[safe + 1]
    frames = buf[safe + 2].astype(np.int64) | buf[safe + 3].astype(np.int64) << 8
    ok &= (version == VERSION) & (FRAMES_AT + frames * FRAME_BYTES <= lens)
    frames = np.where(ok, frames, 0)
    flags = np.where(ok, flags, 0).astype(np.uint8)  # a bad record's digests are never read
    total = int(frames.sum())
    if total == n and bool(ok.all()):  # every record one frame (images): no repeat needed
        frame_record = np.arange(n)
        frame_offsets = starts + FRAMES_AT
    else:
        frame_record = np.repeat(np.arange(n), frames)
        first = np.cumsum(frames) - frames
        frame_offsets = starts[frame_record] + FRAMES_AT + FRAME_BYTES * (np.arange(total) - first[frame_record])
    return Batch(buf, starts, lens, flags, frame_record, frame_offsets, np.flatnonzero(~ok))
