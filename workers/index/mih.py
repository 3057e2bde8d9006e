"""Multi-index hashing: exact Hamming range search that touches a few thousand rows, not all of them.

A code of B bits is cut into m chunks. If two codes are within distance d, then writing
d = m*r + a (0 <= a < m), one of the first a+1 chunks is within r of the query's chunk or some
chunk is within r-1 (otherwise the distance would be at least m*r + a + 1). So each chunk gets a
table chunk-value -> rows, the query probes every value within that radius of its own chunk, and
only the rows found are compared in full. With chunks about log2(rows) bits wide a bucket holds
about one row, so a 256-bit PDQ query at d=31 over 10M rows checks a few thousand rows.

Tables are built once per segment of contiguous rows (cold start builds one segment of all rows).
Rows added later go to a small brute-force tail, which becomes a segment when it fills; segments
merge when the newer one grows to half the older one, so a bank change costs amortised O(log n)
and there are O(log n) segments. Removal tombstones rows; a quarter dead rebuilds everything.
A segment whose probes would cost more than scanning it (small segments, large distances) is
scanned instead, so results are exact at every distance. The probe loop itself is compiled
(workers/index/mih_kernel.py: 1.8x the queries per core of numpy passes at 10M rows).

Searches wait while a change is applied, so no change may rebuild much inline: merges and
compactions over more than INLINE_BUILD_ROWS rows (~0.2 s) are left undone, and `rebuild_due`
tells the owner to build a fresh index aside (the matcher reloads its bank) once the extra
segments make searches REBUILD_COST times dearer than one segment would, or a quarter is dead.
Arrays are allocated zeroed (untouched pages cost no memory) and grow by doubling, so growing a
large index is rare rather than a copy every quarter.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from workers.index.mih_segment import (  # noqa: F401  (re-exported: callers import them from here)
    NO_FRAME,
    Segment,
    chunk_radii,
    chunk_values,
    chunk_widths,
    flip_masks,
    probe_cost,
    to_words,
)

class MultiIndexHamming:
    """Exact Hamming range index; see the module docstring.

    Keys are ints in [0, 2**32): the caller's handles (BankIndex numbers its entries), so a row
    costs 4 bytes of key instead of a Python object. Several rows may share a key (video frames).

    exact=True: distance 0 only (MD5/SHA digests), with one chunk table over the first ~log2(rows)
    bits (a code equal to the query has that chunk equal): one probe a query, ~30-45 bytes a row,
    where a dict of hex strings costs ~400.
    """

    TAIL = 8192  # rows scanned by brute force before they get chunk tables
    SCAN_ADVANTAGE = 8  # a scanned row is this much cheaper than a probed one (sequential vs random)
    MAX_PAIRS = 4_000_000  # (query, row) pairs per brute-force pass, bounding temporaries (~200 MB)
    INLINE_BUILD_ROWS = 262_144  # largest merge or compaction done while searches wait (~0.2 s)
    REBUILD_COST = 1.25  # rebuild_due once searches cost this much more than after a rebuild

    def __init__(self, bits: int, exact: bool = False):
        if bits % 64 or not 64 <= bits <= 256:
            raise ValueError("bits must be 64, 128, 192 or 256 (the kernel's code widths)")
        self.bits = bits
        self.exact = exact
        self._usual = 0 if exact else round(bits * 31 / 256)  # the distance chunkings are chosen for
        self.words = bits // 64
        self._reset(0)

    def _reset(self, capacity: int) -> None:
        capacity = max(capacity, 1024)
        self._codes = np.zeros((capacity, self.words), dtype=np.uint64)
        self._frame: np.ndarray | None = None  # allocated when a row with a frame_ms arrives
        self._alive = np.zeros(capacity, dtype=bool)
        self._keys = np.zeros(capacity, dtype=np.uint32)  # row -> key
        # Key -> rows: rows before _sorted_upto by binary search (over _keys itself when bulk loads
        # arrive in key order, else over the permutation _order), later ones in a small dict.
        self._order: np.ndarray | None = None
        self._sorted_upto = 0
        self._recent: dict[int, list[int]] = {}
        self._segments: list[Segment] = []
        self._n = 0
        self._dead = 0
        self._bulk = False
        self._deferred = False  # a merge or compaction was left to a rebuild

    # -- size -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Keys with at least one live row (counted on demand: not on the matching path)."""
        return int(len(np.unique(self._keys[: self._n][self._alive[: self._n]])))

    @property
    def rows(self) -> int:
        return self._n - self._dead

    def nbytes(self) -> int:
        """Bytes of the index's arrays in use (row arrays up to the last row: the zeroed headroom
        after it is not resident until rows arrive)."""
        rows = [a[: self._n] for a in (self._codes, self._alive, self._keys, self._frame) if a is not None]
        arrays = rows + [a for a in [self._order] if a is not None]
        arrays += [a for s in self._segments for a in (s.slots, s.overflow)]
        return sum(a.nbytes for a in arrays) + 200 * len(self._recent)

    # -- writes -----------------------------------------------------------------------------------
    def add(self, key: int, code: bytes, frame_ms: int | None = None) -> None:
        self._append(np.array([key]), to_words(np.frombuffer(code, dtype=np.uint8), self.words), [frame_ms])

    def add_many(self, keys: Sequence[int] | np.ndarray, codes: np.ndarray,
                 frame_ms: Sequence[int | None] | np.ndarray | None = None) -> None:
        """Append rows in bulk (cold start): codes is (len(keys), bits/8) uint8 in hash byte order."""
        self._append(np.asarray(keys), to_words(codes, self.words), frame_ms)

    def _append(self, keys: np.ndarray, words: np.ndarray, frame_ms: Sequence[int | None] | np.ndarray | None) -> None:
        k = len(keys)
        if len(words) != k or (frame_ms is not None and len(frame_ms) != k):
            raise ValueError("one code (and frame) per key")
        if k == 0:
            return
        if keys.min() < 0 or keys.max() >= 2**32:
            raise ValueError("keys are ints in [0, 2**32)")
        start, stop = self._n, self._n + k
        self._ensure(stop)
        self._codes[start:stop] = words
        if frame_ms is not None:
            if not isinstance(frame_ms, np.ndarray):
                frame_ms = np.array([NO_FRAME if f is None else int(f) for f in frame_ms], dtype=np.int64)
            if self._frame is not None or (frame_ms != NO_FRAME).any():
                self._frames()[start:stop] = frame_ms
        self._alive[start:stop] = True
        self._keys[start:stop] = keys
        self._n = stop
        if self._bulk:
            return
        if len(self._recent) + k > max(65_536, self._sorted_upto // 8):
            self._sort_keys()
        else:
            for row, key in enumerate(keys.tolist(), start):
                self._recent.setdefault(key, []).append(row)
        self._index_tail()

    @contextmanager
    def bulk(self, rows: int = 0) -> Iterator[None]:
        """Many add_many calls (a cold start's blocks), indexed once at the end; room for `rows`."""
        self._ensure(2 * (self._n + rows), exact=True)  # zeroed: the headroom costs no memory until used
        self._bulk = True
        try:
            yield
        finally:
            self._bulk = False
            self._sort_keys()
            self._index_tail(inline=False)  # bulk loads build aside, before searches see the index

    def _frames(self) -> np.ndarray:
        if self._frame is None:
            self._frame = np.full(len(self._codes), NO_FRAME, dtype=np.int64)
        return self._frame

    def remove(self, key: int) -> None:
        rows = self._rows_of(key)
        self._recent.pop(key, None)
        if not rows:
            return
        self._alive[rows] = False
        self._dead += len(rows)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._dead > 1024 and self._dead > self._n // 4:
            if self._n - self._dead <= self.INLINE_BUILD_ROWS:
                self._compact()
            else:
                self._deferred = True

    def discard(self, keys: np.ndarray) -> None:
        """remove() for many keys at once (works inside bulk(), before keys are indexed)."""
        if len(keys):
            gone = np.isin(self._keys[: self._n], keys) & self._alive[: self._n]
            self._alive[: self._n][gone] = False
            self._dead += int(gone.sum())
            if not self._bulk:
                self._maybe_compact()

    @property
    def rebuild_due(self) -> bool:
        """True when a fresh index of the live rows would search markedly faster (see module doc)."""
        if not self._deferred:
            return False
        if self._dead > self._n // 4:
            return True
        usual = self._usual
        now = sum(seg.probe_cost(usual) for seg in self._segments) + (self._n - self._covered()) / 8
        rows = self.rows
        return now > self.REBUILD_COST * probe_cost(self._widths(rows), rows, usual)

    def _widths(self, rows: int) -> list[int]:
        if self.exact:  # about one row per bucket
            return [min(24, max(8, rows.bit_length()))]
        return chunk_widths(self.bits, rows)

    def _rows_of(self, key: int) -> list[int]:
        rows = [r for r in self._recent.get(key, ()) if self._alive[r]]
        if self._sorted_upto and 0 <= key < 2**32:
            k = np.uint32(key)
            if self._order is None:
                sorted_keys = self._keys[: self._sorted_upto]
                lo, hi = np.searchsorted(sorted_keys, k, "left"), np.searchsorted(sorted_keys, k, "right")
                found = range(int(lo), int(hi))
            else:  # binary search over the permutation: O(log n) reads, no sorted copy of the keys
                keys, n = self._keys, self._sorted_upto
                lo = bisect_left(self._order, key, 0, n, key=lambda r: int(keys[r]))
                hi = bisect_right(self._order, key, lo, n, key=lambda r: int(keys[r]))
                found = self._order[lo:hi].tolist()
            rows += [r for r in found if self._alive[r]]
        return rows

    def _sort_keys(self) -> None:
        keys = self._keys[: self._n]
        if self._n < 2 or bool((keys[1:] >= keys[:-1]).all()):
            self._order = None  # bulk loads arrive in key order: no permutation needed
        else:
            self._order = np.argsort(keys, kind="stable").astype(np.uint32)
        self._sorted_upto = self._n
        self._recent = {}

    def _ensure(self, n: int, exact: bool = False) -> None:
        cap = len(self._codes)
        if n <= cap:
            return
        size = n if exact else max(n, cap * 2)
        for name in ("_codes", "_frame", "_alive", "_keys"):
            old = getattr(self, name)
            if old is None:
                continue
            if name == "_frame":
                new = np.full((size,) + old.shape[1:], NO_FRAME, dtype=old.dtype)
            else:  # calloc: pages past _n are not touched, so not resident, until rows arrive
                new = np.zeros((size,) + old.shape[1:], dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def _covered(self) -> int:
        return self._segments[-1].stop if self._segments else 0

    def _index_tail(self, inline: bool = True) -> None:
        covered = self._covered()
        if self._n - covered < self.TAIL:
            return
        self._segments.append(Segment.build(self._codes, covered, self._n, self._widths(self._n - covered)))
        while len(self._segments) >= 2 and 2 * self._segments[-1].rows >= self._segments[-2].rows:
            if inline and self._segments[-1].rows + self._segments[-2].rows > self.INLINE_BUILD_ROWS:
                self._deferred = True  # a big merge would stall searches: left to a rebuild
                break
            newer, older = self._segments.pop(), self._segments.pop()
            self._segments.append(Segment.build(self._codes, older.start, newer.stop,
                                                 self._widths(newer.stop - older.start)))

    def compact(self) -> None:
        """Rebuild as one segment of the live rows, inline: for an index not yet searched (a load
        that replayed many changes) or one whose owner can wait."""
        self._compact()
        self._deferred = False

    def _compact(self) -> None:
        keep = np.nonzero(self._alive[: self._n])[0]
        codes, keys = self._codes[keep], self._keys[keep]
        frame = None if self._frame is None else self._frame[keep]
        self._reset(len(keep))
        self._append(keys, codes, frame)
        self._sort_keys()

    # -- search -----------------------------------------------------------------------------------
    def search(self, queries: list[bytes], max_distance: int) -> list[list[Hit]]:
        """For each query, every live row within max_distance: (key, frame_ms, distance)."""
        out: list[list[Hit]] = [[] for _ in queries]
        if not queries:
            return out
        q = to_words(np.frombuffer(b"".join(queries), dtype=np.uint8), self.words)
        qi, keys, frames, dist = self.search_arrays(q, max_distance)
        for i, k, f, d in zip(qi.tolist(), keys.tolist(), frames.tolist(), dist.tolist()):
            out[i].append((k, None if f == NO_FRAME else f, d))
        return out

    def key_distance(self, key: int, frame: int, q: np.ndarray) -> int:
        """The smallest distance from q ((words,) uint64, as to_words makes) to a live row of `key`
        whose frame is `frame` (NO_FRAME: none); -1 when the key has no such row. For a rule that
        checks a few candidates another signal found (workers/index/joint.py) without a range search."""
        rows = np.asarray(self._rows_of(key), np.int64)
        if len(rows) and self._frame is not None:
            rows = rows[self._frame[rows] == frame]
        elif frame != NO_FRAME:
            return -1
        if not len(rows):
            return -1
        return int(np.bitwise_count(self._codes[rows] ^ q[None, :]).sum(axis=1).min())

    def search_arrays(self, q: np.ndarray, max_distance: int) -> tuple[np.ndarray, ...]:
        """Every (query index, key, frame_ms or NO_FRAME, distance) within max_distance, for
        queries already as (n, words) uint64 (to_words): what BankIndex reads, no per-hit tuples."""
        empty = np.empty(0, np.int64)
        if self.exact and max_distance > 0:
            raise ValueError("an exact index answers distance 0 only")
        if len(q) == 0 or self._n == 0 or max_distance < 0:
            return empty, empty, empty, empty
        parts = []
        covered = 0
        for seg in self._segments:
            covered = seg.stop
            if seg.probe_cost(max_distance) * self.SCAN_ADVANTAGE >= seg.rows:
                parts.append(self._scan(q, seg.start, seg.stop, max_distance))
            else:
                parts.append(self._probe(seg, q, max_distance))
        parts.append(self._scan(q, covered, self._n, max_distance))
        qi, rows, dist = (np.concatenate(a) for a in zip(*parts))
        frames = np.full(len(rows), NO_FRAME, np.int64) if self._frame is None else self._frame[rows]
        return qi, self._keys[rows].astype(np.int64), frames, dist

    def _probe(self, seg: Segment, q: np.ndarray, max_distance: int) -> tuple[np.ndarray, ...]:
        qid, rows, dist = seg.probe(self._codes, self._alive, q, max_distance)
        # a row within radius in several chunks is found several times
        _, first = np.unique(qid * self._n + rows, return_index=True)
        return qid[first], rows[first], dist[first]

    def _scan(self, q: np.ndarray, start: int, stop: int, max_distance: int) -> tuple[np.ndarray, ...]:
        parts = []
        step = max(1024, self.MAX_PAIRS // max(1, len(q)))
        for lo in range(start, stop, step):
            hi = min(stop, lo + step)
            block = self._codes[lo:hi]
            dist = np.zeros((len(q), hi - lo), dtype=np.uint16)
            for w in range(self.words):
                dist += np.bitwise_count(q[:, w, None] ^ block[None, :, w])
            qi, r = np.nonzero((dist <= max_distance) & self._alive[None, lo:hi])
            parts.append((qi.astype(np.int64), (r + lo).astype(np.int64), dist[qi, r].astype(np.int64)))
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts))
