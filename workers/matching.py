"""The matcher's view of the bank: an index per signal kept in step with Redis, and the search
that turns a content's signals into evidence (which bank, which entry, which signal, what distance)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from workers.bank.model import Bank, Entry
from workers.bank.store import BankStore, Change
from workers.indexed_entries import IndexedEntries
from workers.mih import NO_FRAME, to_words
from workers.settings import Settings
from workers.signals import PERCEPTUAL_BITS, SignalValue
from workers.signals.dihedral import VARIANTS as DIHEDRAL_VARIANTS


def is_geometric(variant: str | None) -> bool:
    """Rotated / flipped query variants match only banks that ask for them (Bank.dihedral)."""
    return bool(variant) and variant.rsplit("+", 1)[-1] in DIHEDRAL_VARIANTS


@dataclass(frozen=True)
class Match:
    bank: str
    entry_id: str
    signal: str
    distance: int
    threshold: int
    action: str
    label: str | None = None
    quality: int | None = None
    frame_ms: int | None = None
    variant: str | None = None
    entry_frame_ms: int | None = None  # for video entries: which banked frame matched

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("label", "frame_ms")}


class BankIndex:
    """All enabled entries of all banks, searchable per signal. Owned by one matcher."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.banks: dict[str, Bank] = {}
        self.version = 0
        self.stream_id = "0-0"
        self.synced_at = 0.0
        self.loaded = False
        # Multi-index hashing (workers.mih): exact range search, far faster than a scan on large
        # banks (benchmarks/bench_bank.py), and it scans small ones anyway.
        self._e = IndexedEntries(settings.pdq_min_quality)

    @property
    def video_frames(self) -> dict[tuple[str, str], int]:
        """Video entry -> usable PDQ frames banked (video entries only)."""
        return self._e.video_frames

    # -- keeping in step with the store ------------------------------------------------------
    def load(self, store: BankStore) -> None:
        """Snapshot, then the caller tails the change stream from `stream_id`: no gap, replays harmless.

        Banks with complete packed codes load from them in bulk; older banks from their JSON. The
        new index replaces the old one only when complete, so searches meanwhile use the old one."""
        snap = store.snapshot_start()
        fresh = IndexedEntries(self.settings.pdq_min_quality)
        packed = [name for name in snap.banks if store.has_codes(name)]
        fresh.load_packed(store, packed)
        for name in snap.banks:
            if name not in packed:
                for entry in store.iter_entries(name):
                    fresh.put(entry)
        self._e, self.banks = fresh, dict(snap.banks)
        self.version, self.stream_id = snap.version, snap.stream_id
        self.loaded, self.synced_at = True, time.time()

    def apply(self, changes: Iterable[Change]) -> None:
        for ch in changes:
            if ch.op == "bank_put":
                self.banks[ch.bank] = Bank.from_json(ch.data)
            elif ch.op == "bank_delete":
                self.banks.pop(ch.bank, None)
            elif ch.op == "entries_put":
                for obj in ch.data:
                    self._e.put(Entry.from_json(obj))
            elif ch.op == "entries_delete":
                for entry_id in ch.data:
                    self._e.drop(ch.bank, entry_id)
            self.version = max(self.version, ch.version)
            self.stream_id = ch.stream_id
        self.synced_at = time.time()

    def counts(self) -> dict[str, int]:
        out = {s: idx.rows for s, idx in self._e.hamming.items()}
        out.update({s: len(idx) for s, idx in self._e.exact.items()})
        return out

    # -- searching ------------------------------------------------------------------------------
    def threshold(self, bank: Bank, signal: str) -> int:
        if signal in bank.thresholds:
            return int(bank.thresholds[signal])
        return {"pdq": self.settings.pdq_threshold, "phash": self.settings.phash_threshold,
                "dhash": self.settings.phash_threshold}.get(signal, 0)

    def usable(self, sv: SignalValue) -> bool:
        """Quality gate: degenerate hashes of blank or flat frames match everything, so never match."""
        if sv.quality is None:
            return True
        if sv.signal == "pdq":
            return sv.quality >= self.settings.pdq_min_quality
        if sv.signal in ("phash", "dhash"):
            return sv.quality >= self.settings.phash_min_quality
        return True

    def search(self, signals: list[SignalValue]) -> list[Match]:
        active = {n: b for n, b in self.banks.items() if b.enabled}
        if not active:
            return []
        matches: list[Match] = []
        by_signal: dict[str, list[SignalValue]] = {}
        any_dihedral = any(b.dihedral for b in active.values())
        for sv in signals:
            if self.usable(sv) and (any_dihedral or not is_geometric(sv.variant)):
                by_signal.setdefault(sv.signal, []).append(sv)
        e = self._e  # one consistent index even if a load swaps it meanwhile
        for signal, svs in by_signal.items():
            if signal in e.exact:
                for sv in svs:
                    for handle in e.exact[signal].search(sv.value):
                        self._emit(matches, e, active, handle, sv, 0)
            elif signal in e.hamming:
                limit = max(self.threshold(b, signal) for b in active.values())
                q = to_words(np.frombuffer(b"".join(bytes.fromhex(sv.value) for sv in svs), np.uint8),
                             PERCEPTUAL_BITS[signal] // 64)
                qi, handles, frames, dist = e.hamming[signal].search_arrays(q, limit)
                for i, h, f, d in zip(qi.tolist(), handles.tolist(), frames.tolist(), dist.tolist()):
                    self._emit(matches, e, active, h, svs[i], d, None if f == NO_FRAME else f)
        return matches

    def _emit(self, out: list[Match], e: IndexedEntries, active: dict[str, Bank], handle: int, sv: SignalValue,
              dist: int, bank_frame_ms: int | None = None) -> None:
        bank_name, entry_id = e.table.key(handle)
        bank = active.get(bank_name)
        if bank is None:
            return
        if not bank.dihedral and is_geometric(sv.variant):
            return
        limit = self.threshold(bank, sv.signal)
        if dist > limit:
            return
        out.append(Match(bank.name, entry_id, sv.signal, dist, limit, bank.action,
                         e.table.label(handle) or bank.label, sv.quality, sv.frame_ms, sv.variant, bank_frame_ms))
