"""The matcher's view of the bank: an index per signal kept in step with Redis, and the search
that turns a content's signals into evidence (which bank, which entry, which signal, what distance)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterable

from workers.bank.model import Bank, Entry
from workers.bank.store import BankStore, Change
from workers.index import ExactIndex
from workers.mih import MultiIndexHamming
from workers.settings import Settings
from workers.signals import DIGEST_HEX_LEN, PERCEPTUAL_BITS, SignalValue
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
        # Multi-index hashing: exact range search, far faster than a scan on large banks
        # (benchmarks/bench_bank.py), and it scans small ones anyway.
        self._hamming = {s: MultiIndexHamming(b) for s, b in PERCEPTUAL_BITS.items()}
        self._exact = {s: ExactIndex() for s in DIGEST_HEX_LEN}
        self._labels: dict[tuple[str, str], str | None] = {}
        self.video_frames: dict[tuple[str, str], int] = {}  # video entry -> usable PDQ frames banked

    # -- keeping in step with the store ------------------------------------------------------
    def load(self, store: BankStore) -> None:
        """Snapshot, then the caller tails the change stream from `stream_id`: no gap, replays harmless."""
        snap = store.snapshot_start()
        self.__init__(self.settings)  # type: ignore[misc]
        self.banks = dict(snap.banks)
        for name in snap.banks:
            for entry in store.iter_entries(name):
                self._put(entry)
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
                    self._put(Entry.from_json(obj))
            elif ch.op == "entries_delete":
                for entry_id in ch.data:
                    self._drop((ch.bank, entry_id))
            self.version = max(self.version, ch.version)
            self.stream_id = ch.stream_id
        self.synced_at = time.time()

    def _put(self, entry: Entry) -> None:
        key = (entry.bank, entry.entry_id)
        self._drop(key)
        if entry.disabled:
            return
        self._labels[key] = entry.label
        if entry.media_type == "video":
            self.video_frames[key] = len({sv.frame_ms for sv in entry.signals if sv.signal == "pdq"
                                          and (sv.quality or 0) >= self.settings.pdq_min_quality})
        for sv in entry.signals:
            if sv.signal in self._hamming:
                self._hamming[sv.signal].add(key, bytes.fromhex(sv.value), sv.frame_ms)
            elif sv.signal in self._exact:
                self._exact[sv.signal].add(key, sv.value)

    def _drop(self, key: tuple[str, str]) -> None:
        self._labels.pop(key, None)
        self.video_frames.pop(key, None)
        for idx in self._hamming.values():
            idx.remove(key)
        for idx in self._exact.values():
            idx.remove(key)

    def counts(self) -> dict[str, int]:
        out = {s: idx.rows for s, idx in self._hamming.items()}
        out.update({s: len(idx) for s, idx in self._exact.items()})
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
        for signal, svs in by_signal.items():
            if signal in self._exact:
                for sv in svs:
                    for key in self._exact[signal].search(sv.value):
                        self._emit(matches, active, key, sv, 0)
            elif signal in self._hamming:
                limit = max(self.threshold(b, signal) for b in active.values())
                hits = self._hamming[signal].search([bytes.fromhex(sv.value) for sv in svs], limit)
                for sv, row in zip(svs, hits):
                    for key, bank_frame_ms, dist in row:
                        self._emit(matches, active, key, sv, dist, bank_frame_ms)
        return matches

    def _emit(self, out: list[Match], active: dict[str, Bank], key: tuple[str, str], sv: SignalValue,
              dist: int, bank_frame_ms: int | None = None) -> None:
        bank = active.get(key[0])
        if bank is None:
            return
        if not bank.dihedral and is_geometric(sv.variant):
            return
        limit = self.threshold(bank, sv.signal)
        if dist > limit:
            return
        out.append(Match(bank.name, key[1], sv.signal, dist, limit, bank.action,
                         self._labels.get(key) or bank.label, sv.quality, sv.frame_ms, sv.variant, bank_frame_ms))
