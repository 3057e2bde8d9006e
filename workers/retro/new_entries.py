"""The index a rescan matches the history against: only the entries just added, per signal.

Thresholds and quality gates are the matcher's (BankIndex.threshold / usable), so a retro match
is exactly what the matcher would have said had the entry been there at upload time, minus
dihedral variants, which the history does not keep."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.bank.model import Bank, Entry
from workers.retro import kernel
from workers.settings import Settings
from workers.stream import history

OUT = 1 << 16  # hits per kernel call; the scan resumes where it stopped when full
PERCEPTUAL = {"pdq": (history.PDQ_AT, 32, history.PDQ_Q_AT), "phash": (history.PHASH_AT, 8, history.PHASH_Q_AT)}
DIGESTS = {"md5": (history.MD5_AT, 16, history.HAS_MD5), "sha256": (history.SHA256_AT, 32, history.HAS_SHA256)}


@dataclass(frozen=True)
class Hit:
    record: int  # index in the batch
    entry: Entry
    bank: Bank
    signal: str
    distance: int
    threshold: int
    frame: int | None  # which frame of the record (None for a digest)


def threshold(settings: Settings, bank: Bank, signal: str) -> int:
    if signal in bank.thresholds:
        return int(bank.thresholds[signal])
    return {"pdq": settings.pdq_threshold, "phash": settings.phash_threshold}.get(signal, 0)


class _Perceptual:
    def __init__(self, signal: str, codes: np.ndarray, owners: np.ndarray, limits: np.ndarray, min_q: int):
        self.signal, self.owners, self.limits, self.min_q = signal, owners, limits, min_q
        self.code_at, self.nbytes, self.qual_at = PERCEPTUAL[signal]
        radius = int(limits.max()) // (self.nbytes // 2)
        self.bitmap, self.slot_start, self.slot_entry = kernel.build_tables(codes, radius)
        self.words = kernel.entry_words(codes)

    def scan(self, b: history.Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, ents, dists = [], [], []
        o_row, o_ent, o_dist = np.empty(OUT, np.int64), np.empty(OUT, np.int64), np.empty(OUT, np.int64)
        i = 0
        while i < len(b.frame_offsets):
            i, n = kernel.scan(b.buf, b.frame_offsets, self.code_at, self.nbytes, self.qual_at, self.min_q,
                               self.bitmap, self.slot_start, self.slot_entry, self.words, self.limits,
                               o_row, o_ent, o_dist, i)
            rows.append(o_row[:n].copy()), ents.append(o_ent[:n].copy()), dists.append(o_dist[:n].copy())
        return np.concatenate(rows), np.concatenate(ents), np.concatenate(dists)


class _Digest:
    def __init__(self, signal: str, values: np.ndarray, owners: np.ndarray):
        self.signal, self.owners = signal, owners
        self.at, self.nbytes, self.flag = DIGESTS[signal]
        prefixes = np.ascontiguousarray(values[:, :8]).view("<u8").ravel()
        self.order = np.argsort(prefixes, kind="stable").astype(np.int64)
        self.prefixes = prefixes[self.order]
        self.values = values

    def scan(self, b: history.Batch) -> tuple[np.ndarray, np.ndarray]:
        rows, ents = [], []
        o_row, o_ent = np.empty(OUT, np.int64), np.empty(OUT, np.int64)
        i = 0
        while i < len(b.starts):
            i, n = kernel.scan_digest(b.buf, b.starts, b.flags, self.flag, self.at, self.nbytes,
                                      self.prefixes, self.order, self.values, o_row, o_ent, i)
            rows.append(o_row[:n].copy()), ents.append(o_ent[:n].copy())
        return np.concatenate(rows), np.concatenate(ents)


class NewEntries:
    """Enabled entries of block/review banks, as kernel tables per signal."""

    def __init__(self, entries: list[Entry], banks: dict[str, Bank], settings: Settings):
        self.entries = [e for e in entries if not e.disabled and e.bank in banks
                        and banks[e.bank].enabled and banks[e.bank].action in ("block", "review")]
        self.banks = banks
        self.settings = settings
        codes: dict[str, list[bytes]] = {}
        owners: dict[str, list[int]] = {}
        limits: dict[str, list[int]] = {}
        min_q = {"pdq": settings.pdq_min_quality, "phash": settings.phash_min_quality}
        for i, e in enumerate(self.entries):
            for sv in e.signals:
                if sv.variant or sv.signal not in PERCEPTUAL and sv.signal not in DIGESTS:
                    continue
                if sv.signal in min_q and sv.quality is not None and sv.quality < min_q[sv.signal]:
                    continue  # the matcher's gate: degenerate hashes of flat frames never match
                codes.setdefault(sv.signal, []).append(bytes.fromhex(sv.value))
                owners.setdefault(sv.signal, []).append(i)
                limits.setdefault(sv.signal, []).append(threshold(settings, banks[e.bank], sv.signal))
        self.perceptual = []
        self.digests = []
        for signal, blobs in codes.items():
            arr = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(blobs), -1)
            own = np.asarray(owners[signal], np.int64)
            if signal in PERCEPTUAL:
                self.perceptual.append(_Perceptual(signal, arr, own, np.asarray(limits[signal], np.int64),
                                                   min_q[signal]))
            else:
                self.digests.append(_Digest(signal, np.ascontiguousarray(arr), own))

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, b: history.Batch) -> list[Hit]:
        """Every (record, entry) pair that matches, its closest signal first; records in b.bad
        are never read (their frame and digest offsets are dropped by decode_batch)."""
        best: dict[tuple[int, int], Hit] = {}
        bad = set(b.bad.tolist())
        for idx in self.perceptual:
            rows, ents, dists = idx.scan(b)
            for r, e, d in zip(rows.tolist(), ents.tolist(), dists.tolist()):
                rec, owner = int(b.frame_record[r]), int(idx.owners[e])
                entry = self.entries[owner]
                first = int(r - np.searchsorted(b.frame_record, rec))
                self._keep(best, Hit(rec, entry, self.banks[entry.bank], idx.signal, d, int(idx.limits[e]), first))
        for dg in self.digests:
            rows, ents = dg.scan(b)
            for r, e in zip(rows.tolist(), ents.tolist()):
                if r in bad:
                    continue
                entry = self.entries[int(dg.owners[e])]
                self._keep(best, Hit(r, entry, self.banks[entry.bank], dg.signal, 0, 0, None))
        return sorted(best.values(), key=lambda h: (h.record, h.entry.entry_id))

    @staticmethod
    def _keep(best: dict[tuple[int, int], Hit], hit: Hit) -> None:
        key = (hit.record, id(hit.entry))
        old = best.get(key)
        if old is None or (hit.distance, hit.signal != "pdq") < (old.distance, old.signal != "pdq"):
            best[key] = hit
