"""The matcher's entries as numbers: (bank, entry_id) <-> an int handle, with each entry's label.

Ten million entries as Python tuples and dict slots cost ~1.5 GB; here an entry is its id bytes in
a fixed-width array, a bank number, a label number and 8 bytes of lookup (~32 bytes at 10M). The
indexes (workers.mih, workers.index.ExactIndex) key their rows by handle; a handle becomes
(bank, entry_id) only for the few rows a search returns.
"""
from __future__ import annotations

from bisect import bisect_left

import numpy as np

LOW32 = np.uint64(0xFFFFFFFF)
_MUL = np.uint64(0x9E3779B97F4A7C15)


def id_hashes(ids: np.ndarray, bank_nos: np.ndarray | int) -> np.ndarray:
    """64-bit hashes of (bank number, id) for a fixed-width bytes array, in numpy (no Python object
    per id). NUL padding is skipped, so an id hashes alike in arrays of any width."""
    n, width = len(ids), ids.dtype.itemsize
    words = -(-width // 8)
    out = np.empty(n, np.uint64)
    for s in range(0, n, 1 << 20):
        part = ids[s: s + (1 << 20)]
        raw = np.zeros((len(part), words * 8), np.uint8)
        raw[:, :width] = part.view(np.uint8).reshape(len(part), width)
        h = np.empty(len(part), np.uint64)
        h[:] = bank_nos if np.ndim(bank_nos) == 0 else bank_nos[s: s + len(part)]
        h += np.uint64(1)
        h *= _MUL
        for w in raw.view(np.uint64).T:
            mixed = (h ^ w) * _MUL
            mixed ^= mixed >> np.uint64(29)
            h = np.where(w != 0, mixed, h)
        out[s: s + len(part)] = h
    return out


class EntryTable:
    """Handles are never reused: an entry removed and re-added gets its old handle back."""

    def __init__(self) -> None:
        self.bank_names: list[str] = []
        self._bank_no: dict[str, int] = {}
        self._label_names: list[str | None] = [None]
        self._label_no: dict[str | None, int] = {None: 0}
        self._n = 0
        self._bank = np.zeros(1024, np.uint16)
        self._label = np.zeros(1024, np.uint32)
        self._ids = np.zeros(1024, "S18")
        # Lookup: (hash32 << 32 | handle) sorted for handles < _sorted_upto; a dict for later ones.
        self._by_hash = np.empty(0, np.uint64)
        self._sorted_upto = 0
        self._recent: dict[tuple[int, bytes], int] = {}
        self._dirty = False  # handles appended in bulk, not yet in the sorted lookup

    def __len__(self) -> int:
        return self._n

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._bank, self._label, self._ids, self._by_hash))

    # -- numbering --------------------------------------------------------------------------------
    def bank_no(self, bank: str) -> int:
        no = self._bank_no.get(bank)
        if no is None:
            no = self._bank_no[bank] = len(self.bank_names)
            self.bank_names.append(bank)
            if no >= 2**16:
                raise ValueError("at most 65536 banks")
        return no

    def label_no(self, label: str | None) -> int:
        no = self._label_no.get(label)
        if no is None:
            no = self._label_no[label] = len(self._label_names)
            self._label_names.append(label)
        return no


    # -- one entry (the change stream) --------------------------------------------------------------
    def find(self, bank: str, entry_id: str) -> int | None:
        no = self._bank_no.get(bank)
        if no is None:
            return None
        if self._dirty:
            self.sort()
        raw = entry_id.encode()
        handle = self._recent.get((no, raw))
        if handle is not None or not self._sorted_upto:
            return handle
        h = int(id_hashes(np.array([raw]), no)[0]) >> 32
        i = bisect_left(self._by_hash, h << 32)
        while i < len(self._by_hash) and int(self._by_hash[i]) >> 32 == h:
            cand = int(self._by_hash[i]) & 0xFFFFFFFF
            if self._bank[cand] == no and self._ids[cand] == raw:
                return cand
            i += 1
        return None

    def put(self, bank: str, entry_id: str, label: str | None) -> int:
        """The entry's handle (a new one if unknown), its label set."""
        handle = self.find(bank, entry_id)
        if handle is None:
            no = self.bank_no(bank)
            handle = int(self._append(no, [entry_id.encode()])[0])
            self._recent[(no, entry_id.encode())] = handle
            if len(self._recent) > max(65_536, self._sorted_upto // 8):
                self.sort()
        self._label[handle] = self.label_no(label)
        return handle

    def key(self, handle: int) -> tuple[str, str]:
        return self.bank_names[self._bank[handle]], self._ids[handle].decode()

    def label(self, handle: int) -> str | None:
        return self._label_names[self._label[handle]]

    # -- many entries (cold start) -------------------------------------------------------------------
    def put_many(self, bank: str, entry_ids: list[bytes], labels: np.ndarray) -> np.ndarray:
        """Handles of these entries of one bank (new ones appended), labels (label numbers) set."""
        no = self.bank_no(bank)
        handles = self._find_many(no, entry_ids)
        new = np.flatnonzero(handles < 0)
        if len(new):
            handles[new] = self._append(no, [entry_ids[i] for i in new.tolist()])
            self._dirty = True
        self._label[handles] = labels
        return handles

    def _find_many(self, no: int, entry_ids: list[bytes]) -> np.ndarray:
        out = np.full(len(entry_ids), -1, np.int64)
        if self._n == 0:
            return out
        if self._recent or self._dirty:
            self.sort()
        want = np.array(entry_ids, dtype="S")
        h = (id_hashes(want, no) >> np.uint64(32)) << np.uint64(32)
        at = np.minimum(np.searchsorted(self._by_hash, h), len(self._by_hash) - 1)
        cand = self._by_hash[at]
        handle = (cand & LOW32).astype(np.int64)
        ok = ((cand >> np.uint64(32)) == (h >> np.uint64(32))) & (self._bank[handle] == no)
        ok &= self._ids[handle] == want
        out[ok] = handle[ok]
        for i in np.flatnonzero(~ok & ((cand >> np.uint64(32)) == (h >> np.uint64(32)))).tolist():
            found = self.find(self.bank_names[no], entry_ids[i].decode())  # a shared hash: look further
            out[i] = -1 if found is None else found
        return out

    def _append(self, no: int, entry_ids: list[bytes]) -> np.ndarray:
        k = len(entry_ids)
        start, stop = self._n, self._n + k
        if stop > 2**32:
            raise ValueError("at most 2**32 entries")
        ids = np.array(entry_ids, dtype="S")
        if ids.dtype.itemsize > self._ids.dtype.itemsize:
            self._ids = self._ids.astype(ids.dtype)
        if stop > len(self._bank):
            size = max(stop, 2 * len(self._bank))
            for name in ("_bank", "_label", "_ids"):
                old = getattr(self, name)
                new = np.zeros(size, old.dtype)
                new[:start] = old[:start]
                setattr(self, name, new)
        self._ids[start:stop] = ids
        self._bank[start:stop] = no
        self._n = stop
        return np.arange(start, stop, dtype=np.int64)

    def reserve(self, n: int) -> None:
        """Room for n entries in all, so a cold start allocates its arrays once."""
        if n > len(self._bank):
            for name in ("_bank", "_label", "_ids"):
                old = getattr(self, name)
                new = np.zeros(n, old.dtype)
                new[: self._n] = old[: self._n]
                setattr(self, name, new)

    def sort(self) -> None:
        """(Re)build the sorted lookup over every handle (after a bulk append)."""
        n = self._n
        packed = (id_hashes(self._ids[:n], self._bank[:n]) >> np.uint64(32)) << np.uint64(32)
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        self._by_hash, self._sorted_upto, self._recent, self._dirty = packed, n, {}, False
