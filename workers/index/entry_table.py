"""The matcher's entries as numbers: (bank, entry_id) <-> an int handle, with each entry's label.

Ten million entries as Python tuples and dict slots cost ~1.5 GB; here an entry is its id bytes in
a fixed-width array, a bank number, a label number and 8 bytes of lookup (~32 bytes at 10M). The
indexes (workers.index.mih, perceptual and digest) key their rows by handle; a handle becomes
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
    """Handles are never reused: an entry removed and re-added gets its old handle back.

    Lookup is log-structured: sorted runs of (hash32 << 32 | handle), a new run per bulk append
    (and per 64k single puts), merged when a run grows to half the one before it, so a cold start
    of n entries sorts each about log2(n / block) times, and a lookup searches O(log n) runs."""

    def __init__(self) -> None:
        self.bank_names: list[str] = []
        self._bank_no: dict[str, int] = {}
        self._label_names: list[str | None] = [None]
        self._label_no: dict[str | None, int] = {None: 0}
        self._n = 0
        self._bank = np.zeros(1024, np.uint16)
        self._label = np.zeros(1024, np.uint32)
        self._ids = np.zeros(1024, "S18")
        self._runs: list[np.ndarray] = []
        self._recent: dict[tuple[int, bytes], int] = {}  # single puts not yet in a run
        self._unindexed = 2**62  # first handle appended by append_new and not yet in a run

    def __len__(self) -> int:
        return self._n

    def nbytes(self) -> int:
        return sum(a.nbytes for a in [self._bank, self._label, self._ids, *self._runs])

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
        raw = entry_id.encode()
        handle = self._recent.get((no, raw))
        if handle is not None:
            return handle
        h = int(id_hashes(np.array([raw]), no)[0]) >> 32
        for run in self._runs:
            i = bisect_left(run, h << 32)
            while i < len(run) and int(run[i]) >> 32 == h:
                cand = int(run[i]) & 0xFFFFFFFF
                if self._bank[cand] == no and self._ids[cand] == raw:
                    return cand
                i += 1
        return None

    def put(self, bank: str, entry_id: str, label: str | None) -> int:
        """The entry's handle (a new one if unknown), its label set."""
        handle = self.find(bank, entry_id)
        if handle is None:
            no = self.bank_no(bank)
            raw = np.array([entry_id.encode()])
            handle = int(self._append(no, raw)[0])
            self._recent[(no, raw[0])] = handle
            if len(self._recent) >= 65_536:
                self._push_recent()
        self._label[handle] = self.label_no(label)
        return handle

    def key(self, handle: int) -> tuple[str, str]:
        return self.bank_names[self._bank[handle]], self._ids[handle].decode()

    def label(self, handle: int) -> str | None:
        return self._label_names[self._label[handle]]

    # -- many entries (cold start, imports) ------------------------------------------------------------
    def find_many(self, bank: str, entry_ids: list[bytes] | np.ndarray) -> np.ndarray:
        """Handles of these entries of one bank, -1 for those it has none of."""
        no = self._bank_no.get(bank)
        if no is None or not len(entry_ids):
            return np.full(len(entry_ids), -1, np.int64)
        want = _id_array(entry_ids)
        return self._find_many(no, want, id_hashes(want, no) >> np.uint64(32))

    def put_many(self, bank: str, entry_ids: list[bytes] | np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Handles of these entries of one bank (new ones appended), labels (label numbers) set.
        Ids as a list of bytes or an `S<w>` array (a snapshot chunk's, used as it is)."""
        no = self.bank_no(bank)
        want = _id_array(entry_ids)
        h = id_hashes(want, no) >> np.uint64(32)
        handles = self._find_many(no, want, h)
        new = np.flatnonzero(handles < 0)
        if len(new):
            handles[new] = self._append(no, want[new])
            self._push((h[new] << np.uint64(32)) | handles[new].astype(np.uint64))
        self._label[handles] = labels
        return handles

    def append_new(self, bank: str, entry_ids: list[bytes] | np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Handles for entries of a bank that has none yet (a cold start's first pass over it): no
        lookups. They become findable, and repeats (HSCAN may return an entry twice) are found, at
        index_appended()."""
        no = self.bank_no(bank)
        handles = self._append(no, _id_array(entry_ids))
        self._label[handles] = labels
        self._unindexed = min(self._unindexed, int(handles[0])) if len(handles) else self._unindexed
        return handles

    def index_appended(self) -> np.ndarray:
        """Make the append_new handles findable; returns the repeats (later handles of an entry
        already numbered), which are left out: drop their rows."""
        start, self._unindexed = self._unindexed, 2**62
        if start >= self._n:
            return np.empty(0, np.int64)
        handles = np.arange(start, self._n, dtype=np.int64)
        h = id_hashes(self._ids[start:self._n], self._bank[start:self._n]) >> np.uint64(32)
        packed = (h << np.uint64(32)) | handles.astype(np.uint64)
        packed.sort()
        hs, hd = packed >> np.uint64(32), (packed & LOW32).astype(np.int64)
        same = np.flatnonzero(hs[1:] == hs[:-1])  # neighbours sharing a hash (handles ascending)
        dup_at: list[int] = []
        if len(same):  # few (hash collisions and repeats): checked one by one
            first: dict[tuple[int, bytes], int] = {}
            for i in np.union1d(same, same + 1).tolist():  # runs of one hash, in handle order
                key = (int(self._bank[hd[i]]), bytes(self._ids[hd[i]]))
                if first.setdefault(key, i) != i:
                    dup_at.append(i)
        dups = hd[dup_at]
        if dup_at:
            packed = np.delete(packed, dup_at)
        self._push(packed)
        self.compact()
        return dups

    def _find_many(self, no: int, want: np.ndarray, h: np.ndarray) -> np.ndarray:
        out = np.full(len(want), -1, np.int64)
        shared = np.zeros(len(want), bool)  # a run holds this hash for another entry: look further
        order = np.argsort(h)
        keys = h[order] << np.uint64(32)  # sorted keys: numpy's binary search reuses each answer
        for run in self._runs:
            at = np.empty(len(h), np.int64)
            at[order] = np.searchsorted(run, keys)
            np.minimum(at, len(run) - 1, out=at)
            cand = run[at]
            same = (cand >> np.uint64(32)) == h
            handle = (cand & LOW32).astype(np.int64)
            ok = same & (self._bank[handle] == no) & (self._ids[handle] == want)
            out[ok] = handle[ok]
            shared |= same & ~ok
        for i in np.flatnonzero(shared & (out < 0)).tolist():
            found = self.find(self.bank_names[no], want[i].decode())
            out[i] = -1 if found is None else found
        if self._recent:
            for i, raw in enumerate(want.tolist()):
                out[i] = self._recent.get((no, raw), out[i])
        return out

    def _append(self, no: int, ids: np.ndarray) -> np.ndarray:
        k = len(ids)
        start, stop = self._n, self._n + k
        if stop > 2**32:
            raise ValueError("at most 2**32 entries")
        if ids.dtype.itemsize > self._ids.dtype.itemsize:
            self._ids = self._ids.astype(ids.dtype)
        if stop > len(self._bank):
            cap = len(self._bank)
            self.reserve(max(stop, 2 * cap if cap < 2**20 else cap + cap // 4))
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

    def _push(self, packed: np.ndarray) -> None:
        packed.sort()
        self._runs.append(packed)
        while len(self._runs) >= 2 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            newer, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([older, newer])
            merged.sort()
            self._runs.append(merged)

    def _push_recent(self) -> None:
        if self._recent:
            handles = np.fromiter(self._recent.values(), np.int64, len(self._recent))
            h = id_hashes(self._ids[handles], self._bank[handles]) >> np.uint64(32)
            self._recent = {}
            self._push((h << np.uint64(32)) | handles.astype(np.uint64))

    def compact(self) -> None:
        """One run (after a cold start): the fewest searches per lookup."""
        self._push_recent()
        if len(self._runs) > 1:
            merged = np.concatenate(self._runs)
            merged.sort()
            self._runs = [merged]


def _id_array(entry_ids: list[bytes] | np.ndarray) -> np.ndarray:
    """Ids as a fixed-width bytes array; an `S` array passes through without a copy."""
    if isinstance(entry_ids, np.ndarray) and entry_ids.dtype.kind == "S":
        return entry_ids
    return np.array(entry_ids, dtype="S")
