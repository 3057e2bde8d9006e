"""Packed codes: each enabled entry's values of one signal as fixed-size binary records, so a
matcher cold-starts from raw bytes (numpy views) instead of parsing millions of JSON entries.

Record (per value): raw hash bytes, frame_ms (int64 BE, NO_FRAME for none), quality (uint8, 255 for
none), flags (uint8, bit 0: the entry is a video; bits 1..7: the bank-side variant's code,
workers.signals.bank_variants, 0 for none, so evidence can say "matched the entry rotated 3°"), label id (uint32 BE, 0 for none). Everything the
matcher keeps per entry is in the record, so no JSON is read: the label as an id into the bank's
labels hash (`vigil:bank:<name>:labels`, id -> label; ids are CRC32s of the label, so writers need
no counter), and the quality so a video's count of usable frames follows VIGIL_PDQ_MIN_QUALITY.
"""
from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

from workers.bank.model import Entry
from workers.signals import DIGEST_HEX_LEN, PERCEPTUAL_BITS
from workers.signals.bank_variants import variant_code

NO_FRAME = np.iinfo(np.int64).min  # frame_ms None (workers.index.mih uses the same)
NO_QUALITY = 255
VIDEO = 1  # flags bit
CODES_LAYOUT = "codes-v2"  # v1 records lacked quality, flags and label: such banks load from JSON
CODE_SIGNALS = tuple(PERCEPTUAL_BITS) + tuple(DIGEST_HEX_LEN)
TRAILER = 8 + 1 + 1 + 4


def code_bytes(signal: str) -> int:
    return PERCEPTUAL_BITS[signal] // 8 if signal in PERCEPTUAL_BITS else DIGEST_HEX_LEN[signal] // 2


def label_id(label: str | None) -> int:
    """A stable 32-bit id for a label (0: none). Writers check the labels hash for collisions."""
    if label is None:
        return 0
    return zlib.crc32(label.encode()) or 1


def pack_codes(entry: Entry, signal: str) -> bytes:
    """The entry's values of one signal as records (see the module docstring)."""
    video = VIDEO if entry.media_type == "video" else 0
    label = label_id(entry.label).to_bytes(4, "big")
    out = bytearray()
    for sv in entry.signals:
        if sv.signal == signal:
            out += bytes.fromhex(sv.value)
            out += (NO_FRAME if sv.frame_ms is None else int(sv.frame_ms)).to_bytes(8, "big", signed=True)
            q = NO_QUALITY if sv.quality is None else min(max(int(sv.quality), 0), 254)
            out.append(q)
            out.append(video | (variant_code(sv.variant) << 1))
            out += label
    return bytes(out)


class CodeBlock(NamedTuple):
    """A batch of a signal's records (an HSCAN reply or a snapshot chunk), one row per value (a
    video has one per frame)."""

    entries: list[bytes] | np.ndarray  # entry ids, each once: HSCAN fields, or an `S<w>` array (snapshots)
    per_entry: np.ndarray | None  # rows of each entry, in order; None when every entry has one
    codes: np.ndarray  # (rows, code bytes) uint8
    frames: np.ndarray  # (rows,) int64, NO_FRAME for none
    quality: np.ndarray  # (rows,) int16, -1 for none
    video: np.ndarray  # (rows,) bool
    labels: np.ndarray  # (rows,) uint32 label ids
    variants: np.ndarray | None = None  # (rows,) uint8 bank-side variant codes (0: none)


def unpack_block(signal: str, found: dict[bytes, bytes]) -> CodeBlock:
    """Records of an HSCAN reply (entry id -> packed values) as arrays."""
    rec = code_bytes(signal) + TRAILER
    vals = list(found.values())
    blob = np.frombuffer(b"".join(vals), dtype=np.uint8).reshape(-1, rec)
    per_entry = None
    if len(blob) != len(vals):  # some entry has several values (frames)
        per_entry = np.fromiter(map(len, vals), np.int64, len(vals)) // rec
    return block_from_records(signal, list(found), per_entry, blob)


def block_from_records(signal: str, entries: list[bytes] | np.ndarray, per_entry: np.ndarray | None,
                       blob: np.ndarray) -> CodeBlock:
    """A CodeBlock from (rows, record bytes) uint8 records; shared by HSCAN replies and snapshots."""
    n = code_bytes(signal)
    frames = np.ascontiguousarray(blob[:, n: n + 8]).view(">i8").ravel().astype(np.int64)
    quality = blob[:, n + 8].astype(np.int16)
    quality[quality == NO_QUALITY] = -1
    video = (blob[:, n + 9] & VIDEO).astype(bool)
    variants = blob[:, n + 9] >> 1
    labels = np.ascontiguousarray(blob[:, n + 10:]).view(">u4").ravel().astype(np.uint32)
    return CodeBlock(entries, per_entry, np.ascontiguousarray(blob[:, :n]), frames, quality, video, labels, variants)
