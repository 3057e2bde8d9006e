"""Binary bank snapshots: a signal's packed codes as a few large strings, so a matcher's cold start
GETs ~100 chunks instead of HSCANning 10M hash fields (~2.6 us a field on the server alone).

A chunk is self-describing, little-endian:
  header  magic b"VSNP", format (uint8), flags (uint8, bit 0: per-entry row counts follow),
          id width w (uint16), entries n (uint32), rows r (uint32)
  ids     n fixed-width `S<w>` entry ids (NUL padded)
  counts  n uint32 rows per entry, only with flag bit 0 (some entry has several rows: video frames)
  records r records exactly as workers.bank.codes.pack_codes writes them
Parsing is numpy views over the string: no Python object per entry.
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

import numpy as np

from workers.bank.codes import TRAILER, CodeBlock, block_from_records, code_bytes

MAGIC = b"VSNP"
FORMAT = 1
MULTI_ROW = 1  # flags bit
HEADER = struct.Struct("<4sBBHII")
CHUNK_ENTRIES = 100_000  # a chunk closes at this many entries or CHUNK_BYTES, whichever comes first
CHUNK_BYTES = 8 * 1024 * 1024


class SnapshotError(Exception):
    """A snapshot cannot be used (replaced under the reader, malformed, or not covered by the
    change stream): the caller loads from the codes hashes instead."""


@dataclass(frozen=True)
class SnapshotMeta:
    """What `vigil:bank:<name>:snap` holds per signal (JSON)."""

    gen: str
    version: int  # the bank version read before the codes hash was scanned
    stream_id: str  # the change stream id read with it: readers replay changes after it
    chunks: int
    entries: int
    rows: int
    bytes: int
    at_ms: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> SnapshotMeta:
        obj = json.loads(raw)
        return cls(str(obj["gen"]), int(obj["version"]), str(obj["stream_id"]), int(obj["chunks"]),
                   int(obj["entries"]), int(obj["rows"]), int(obj["bytes"]), int(obj["at_ms"]))

    def covered(self, version: int, first_change: int | None) -> bool:
        """True if the change stream still holds every version after this snapshot's, so that
        replaying it brings the snapshot up to `version` (the current one)."""
        return self.version >= version or (first_change is not None and first_change <= self.version + 1)


def pack_chunk(signal: str, ids: list[bytes], values: list[bytes]) -> bytes:
    """One chunk from HSCAN pairs (entry id, packed codes of that entry)."""
    rec = code_bytes(signal) + TRAILER
    id_arr = np.array(ids, dtype="S")
    width = max(id_arr.dtype.itemsize, 1)
    per_entry = np.fromiter(map(len, values), np.int64, len(values)) // rec
    multi = bool((per_entry != 1).any())
    parts = [HEADER.pack(MAGIC, FORMAT, MULTI_ROW if multi else 0, width, len(ids), int(per_entry.sum())),
             id_arr.astype(f"S{width}").tobytes()]
    if multi:
        parts.append(per_entry.astype("<u4").tobytes())
    parts.append(b"".join(values))
    return b"".join(parts)


def parse_chunk(signal: str, raw: bytes) -> CodeBlock:
    """A chunk as the CodeBlock an HSCAN batch gives; SnapshotError if it is not a valid chunk."""
    if len(raw) < HEADER.size:
        raise SnapshotError("snapshot chunk shorter than its header")
    magic, fmt, flags, width, n, rows = HEADER.unpack_from(raw)
    if magic != MAGIC or fmt != FORMAT or width == 0:
        raise SnapshotError(f"not a snapshot chunk of format {FORMAT} (magic {magic!r}, format {fmt})")
    rec = code_bytes(signal) + TRAILER
    multi = bool(flags & MULTI_ROW)
    off = HEADER.size + n * width
    end = off + (4 * n if multi else 0)
    if len(raw) != end + rows * rec or (not multi and rows != n):
        raise SnapshotError(f"snapshot chunk of {len(raw)} bytes does not hold {n} entries / {rows} rows")
    ids = np.frombuffer(raw, f"S{width}", n, HEADER.size)
    per_entry = None
    if multi:
        per_entry = np.frombuffer(raw, "<u4", n, off).astype(np.int64)
        if int(per_entry.sum()) != rows:
            raise SnapshotError("snapshot chunk row counts do not add up")
    blob = np.frombuffer(raw, np.uint8, rows * rec, end).reshape(rows, rec)
    return block_from_records(signal, ids, per_entry, blob)
