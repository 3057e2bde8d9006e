"""The building blocks of multi-index hashing (workers/index/mih.py explains the search): how a
code is cut into chunks, what probing them costs, and one segment's immutable chunk tables. Split
from the index so the growable, mutable MultiIndexHamming reads apart from the tables it builds.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from math import comb

import numpy as np

from workers.index import mih_kernel
from workers.index.mih_kernel import EMPTY, MULTI

NO_FRAME = np.iinfo(np.int64).min  # frame_ms None
Hit = tuple[int, int | None, int]  # (key, frame_ms, distance)


def chunk_widths(bits: int, rows: int, max_width: int = 24) -> list[int]:
    """The chunking with the fewest random reads per query at the usual threshold (~12% of the bits).

    Wider chunks mean fewer rows per bucket but more buckets to probe; the optimum has about one
    row per bucket (chunks ~log2(rows) bits). max_width bounds the tables (4 bytes per bucket).
    """
    usual = round(bits * 31 / 256)
    best: tuple[float, list[int]] | None = None
    for m in range(-(-bits // max_width), bits // 8 + 1):
        base, extra = divmod(bits, m)
        widths = [base + 1] * extra + [base] * (m - extra)
        cost = probe_cost(widths, rows, usual)
        if best is None or cost < best[0]:
            best = (cost, widths)
    return best[1]  # type: ignore[index]


def probe_cost(widths: list[int], rows: int, max_distance: int) -> float:
    """Random reads per query: a bucket offset per probe plus the rows it holds (on average)."""
    total = 0.0
    for w, r in zip(widths, chunk_radii(len(widths), max_distance)):
        total += sum(comb(w, k) for k in range(r + 1)) * (1 + rows / (1 << w))
    return total


@lru_cache(maxsize=256)
def flip_masks(width: int, radius: int) -> np.ndarray:
    """Every XOR mask of `width` bits with at most `radius` bits set."""
    out = [0]
    for k in range(1, min(radius, width) + 1):
        out += [sum(1 << b for b in flips) for flips in combinations(range(width), k)]
    return np.array(out, dtype=np.int64)


def chunk_radii(m: int, max_distance: int) -> list[int]:
    """Per-chunk probe radius that still finds every row within max_distance (-1: skip the chunk)."""
    r, a = divmod(max_distance, m)
    return [r if c <= a else r - 1 for c in range(m)]


def chunk_values(codes: np.ndarray, lo_bit: int, width: int, dtype: type = np.int64) -> np.ndarray:
    """Bits [lo_bit, lo_bit+width) of each code (bit 0 = most significant of word 0)."""
    word, off = divmod(lo_bit, 64)
    end = off + width
    if end <= 64:
        v = codes[:, word] >> np.uint64(64 - end)
    else:  # straddles two words
        spill = end - 64
        v = (codes[:, word] << np.uint64(spill)) | (codes[:, word + 1] >> np.uint64(64 - spill))
    v &= np.uint64((1 << width) - 1)
    return v if dtype is np.uint64 else v.astype(dtype)


def to_words(codes: np.ndarray, words: int) -> np.ndarray:
    """(n, bytes) uint8, hash byte order -> (n, words) uint64 (big-endian words, as HammingIndex)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, words * 8)
    return codes.view(">u8").astype(np.uint64)


BUILD_THREADS = min(2, os.cpu_count() or 1)
PARALLEL_BUILD_ROWS = 1_000_000


def _chunk_table(block: np.ndarray, row_ids: np.ndarray, lo: int, w: int, slots: np.ndarray) -> np.ndarray:
    """Fill one chunk's slots; returns its overflow (pointers in slots are into this part)."""
    vals = chunk_values(block, lo, w, np.uint64)
    # One SIMD sort of (bucket << 32 | row) is ~10x faster than argsort of the buckets; the
    # buckets' row counts are then run lengths of the sorted array (cheaper than bincount).
    vals <<= np.uint64(32)
    vals |= row_ids
    vals.sort()
    by_bucket = vals.astype(np.uint32)  # the low 32 bits: rows in bucket order
    vals >>= np.uint64(32)
    first = np.flatnonzero(np.concatenate([[True], vals[1:] != vals[:-1]]))
    bucket = vals[first].astype(np.int64)
    del vals
    counts = np.diff(np.append(first, len(by_bucket)))
    one = counts == 1
    slots[bucket[one]] = by_bucket[first[one]]
    many = ~one
    if not many.any():
        return np.empty(0, np.uint32)
    k = counts[many]
    head = np.cumsum(k + 1) - (k + 1)  # each bucket's count, then its rows
    slots[bucket[many]] = head | MULTI
    part = np.empty(int(k.sum() + len(k)), dtype=np.uint32)
    part[head] = k
    inner = by_bucket[np.repeat(many, counts)]
    part[np.arange(len(inner)) + np.repeat(np.arange(1, len(k) + 1), k)] = inner
    return part


@dataclass
class Segment:
    """Chunk tables over rows [start, stop). A bucket is one uint32 slot: empty, its only row, or
    (MULTI | i) with overflow[i] = count and the rows after it. With about one row per bucket most
    probes that hit cost one random read, not an offsets pair plus a postings read."""

    start: int
    stop: int
    widths: list[int]
    lo_bits: list[int]
    base: list[int]  # first bucket of each chunk in `slots`
    slots: np.ndarray  # (sum(2**w),) uint32
    overflow: np.ndarray  # uint32: for each bucket of 2+ rows, its count then its rows
    _plans: dict = field(default_factory=dict)
    _costs: dict = field(default_factory=dict)
    _chunks: np.ndarray | None = None

    @classmethod
    def build(cls, codes: np.ndarray, start: int, stop: int, widths: list[int]) -> "Segment":
        rows = stop - start
        if stop >= MULTI or (len(widths) + 1) * rows >= MULTI:
            raise ValueError("too many rows for 31-bit slots")
        lo_bits = [int(x) for x in np.cumsum([0] + widths[:-1])]
        base = [int(x) for x in np.cumsum([0] + [1 << w for w in widths[:-1]])]
        slots = np.full(base[-1] + (1 << widths[-1]), EMPTY, dtype=np.uint32)
        block = codes[start:stop]
        row_ids = np.arange(start, stop, dtype=np.uint64)
        views = [slots[b: b + (1 << w)] for b, w in zip(base, widths)]
        jobs = [(block, row_ids, lo, w, v) for lo, w, v in zip(lo_bits, widths, views)]
        if rows >= PARALLEL_BUILD_ROWS and BUILD_THREADS > 1:  # numpy releases the GIL: chunks in parallel
            with ThreadPoolExecutor(BUILD_THREADS) as pool:
                parts = list(pool.map(lambda job: _chunk_table(*job), jobs))
        else:
            parts = [_chunk_table(*job) for job in jobs]
        used = 0
        for view, part in zip(views, parts):  # overflow pointers were per chunk: make them global
            if used:
                view[(view >= MULTI) & (view != EMPTY)] += np.uint32(used)
            used += len(part)
        overflow = np.concatenate(parts) if parts else np.empty(0, np.uint32)
        return cls(start, stop, widths, lo_bits, base, slots, overflow)

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def plan(self, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
        """Every probe of a query as (flip mask, chunk it flips), cached per distance. Chunks probed
        at radius -1 get no probes."""
        cached = self._plans.get(max_distance)
        if cached is None:
            radii = chunk_radii(len(self.widths), max_distance)
            masks = [flip_masks(w, r) if r >= 0 else np.empty(0, np.int64) for w, r in zip(self.widths, radii)]
            chunk_of = np.repeat(np.arange(len(masks), dtype=np.int64), [len(m) for m in masks])
            cached = self._plans[max_distance] = (np.concatenate(masks), chunk_of)
        return cached

    def probe_cost(self, max_distance: int) -> float:
        cost = self._costs.get(max_distance)
        if cost is None:
            cost = self._costs[max_distance] = probe_cost(self.widths, self.rows, max_distance)
        return cost

    @property
    def chunks(self) -> np.ndarray:
        """(chunks, 3) first bit, width and first bucket of each chunk, for the compiled probe."""
        if self._chunks is None:
            self._chunks = np.array(list(zip(self.lo_bits, self.widths, self.base)), np.int64)
        return self._chunks

    def probe(self, codes: np.ndarray, alive: np.ndarray, q: np.ndarray, max_distance: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, row, distance) of every live row within max_distance; a row may repeat."""
        masks, chunk_of = self.plan(max_distance)
        q = np.ascontiguousarray(q)  # the layout warm() compiled for
        room = 64 * len(q) + 1024
        while True:
            out = np.empty((3, room), np.int64)
            found = mih_kernel.probe(self.slots, self.overflow, codes, alive, q, self.chunks, masks, chunk_of,
                                     int(max_distance), out[0], out[1], out[2])
            if found <= room:
                return out[0, :found], out[1, :found], out[2, :found]
            room = found  # more hits than room (many near-identical rows): once more, with room for all
