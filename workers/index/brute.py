"""Brute-force Hamming range search: the reference the matcher's index (workers.index.mih, which also
serves digests, exactly) is checked against in the tests and benchmarks."""
from __future__ import annotations

from typing import Hashable

import numpy as np

Key = Hashable  # (bank, entry_id)


class HammingIndex:
    """Brute-force Hamming range search over packed codes, vectorised over a batch of queries.

    Codes are stored as uint64 words; XOR + popcount over the whole table is memory-bound and
    fine up to a few million rows per query batch.
    """

    CHUNK = 262_144  # rows per block, to bound the (queries x rows) temporaries

    def __init__(self, bits: int):
        if bits % 64:
            raise ValueError("bits must be a multiple of 64")
        self.words = bits // 64
        self._codes = np.zeros((1024, self.words), dtype=np.uint64)
        self._alive = np.zeros(1024, dtype=bool)
        self._meta: list[tuple[Key, int | None]] = []  # row -> (key, frame_ms)
        self._rows: dict[Key, list[int]] = {}
        self._n = 0
        self._dead = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> int:
        return self._n - self._dead

    def add(self, key: Key, code: bytes, frame_ms: int | None = None) -> None:
        if self._n == len(self._codes):
            self._grow()
        self._codes[self._n] = np.frombuffer(code, dtype=">u8").astype(np.uint64)
        self._alive[self._n] = True
        self._meta.append((key, frame_ms))
        self._rows.setdefault(key, []).append(self._n)
        self._n += 1

    def remove(self, key: Key) -> None:
        for row in self._rows.pop(key, ()):
            self._alive[row] = False
            self._dead += 1
        if self._dead > 1024 and self._dead > self._n // 4:
            self._compact()

    def search(self, queries: list[bytes], max_distance: int) -> list[list[tuple[Key, int | None, int]]]:
        """For each query, every live row within max_distance: (key, frame_ms, distance)."""
        out: list[list[tuple[Key, int | None, int]]] = [[] for _ in queries]
        if not queries or self._n == 0:
            return out
        q = np.stack([np.frombuffer(c, dtype=">u8").astype(np.uint64) for c in queries])
        for start in range(0, self._n, self.CHUNK):
            stop = min(self._n, start + self.CHUNK)
            block = self._codes[start:stop]
            dist = np.zeros((len(q), stop - start), dtype=np.uint16)
            for w in range(self.words):
                dist += np.bitwise_count(q[:, w, None] ^ block[None, :, w])
            hits = np.nonzero((dist <= max_distance) & self._alive[None, start:stop])
            for qi, row in zip(*hits):
                key, frame_ms = self._meta[start + row]
                out[qi].append((key, frame_ms, int(dist[qi, row])))
        return out

    def _grow(self) -> None:
        size = len(self._codes) * 2
        codes = np.zeros((size, self.words), dtype=np.uint64)
        codes[: self._n] = self._codes[: self._n]
        alive = np.zeros(size, dtype=bool)
        alive[: self._n] = self._alive[: self._n]
        self._codes, self._alive = codes, alive

    def _compact(self) -> None:
        keep = np.nonzero(self._alive[: self._n])[0]
        self._codes[: len(keep)] = self._codes[keep]
        self._alive[:] = False
        self._alive[: len(keep)] = True
        self._meta = [self._meta[i] for i in keep]
        self._rows = {}
        for row, (key, _) in enumerate(self._meta):
            self._rows.setdefault(key, []).append(row)
        self._n, self._dead = len(keep), 0
