"""The matcher's view of the bank: an index per signal kept in step with Redis, and the search
that turns a content's signals into evidence (which bank, which entry, which signal, what distance)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from workers.bank.bulk_changes import packed_from_entries
from workers.bank.model import Bank, Entry
from workers.bank.snapshot import SnapshotError, SnapshotMeta
from workers.bank.store import BankStore, Change, Snapshot
from workers.index.indexed_entries import IndexedEntries, digest_bits, digest_code, entry_variant_of
from workers.index.joint import RULE as JOINT_RULE
from workers.index.joint import JointLimits, NearHit, confirm
from workers.index.mih import NO_FRAME, to_words
from workers.settings import Settings
from workers.signals import PERCEPTUAL_BITS, SignalValue
from workers.signals.bank_variants import CENTRE_VARIANT
from workers.signals.dihedral import VARIANTS as DIHEDRAL_VARIANTS
from workers.signals.overlay import OVERLAY_VARIANT

log = logging.getLogger(__name__)
# Changes read (and applied under the search lock) at a time: an import's change holds 2000
# entries, so a page is up to 200k, applied in bulk in well under a second (BankStore._packed).
SYNC_PAGE = 100


def is_geometric(variant: str | None) -> bool:
    """Rotated / flipped query variants match only banks that ask for them (Bank.dihedral)."""
    return bool(variant) and variant.rsplit("+", 1)[-1] in DIHEDRAL_VARIANTS


def is_partial(variant: str | None) -> bool:
    """A query variant made of part of the picture (the centre without a caption band, the picture
    with an overlay box painted out): it never counts for allowlists."""
    return bool(variant) and variant.split("+", 1)[0] in (CENTRE_VARIANT, OVERLAY_VARIANT)


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
    entry_variant: str | None = None  # which bank-side version of the entry matched ('rotate+3', ...)
    rule: str | None = None  # 'joint': within the joint limits of both PDQ and pHash, not each alone

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("label", "frame_ms")}


def apply_changes(e: IndexedEntries, banks: dict[str, Bank], changes: Iterable[Change]) -> Change | None:
    """Changes applied in order to this (index, banks) pair; returns the last one. Idempotent: the
    last change of an entry or bank wins, so a replay over data that already has some is harmless."""
    last = None
    for ch in changes:
        if ch.op == "bank_put":
            banks[ch.bank] = Bank.from_json(ch.data)
        elif ch.op == "bank_delete":
            banks.pop(ch.bank, None)
        elif ch.op == "entries_put":
            for obj in ch.data:
                e.put(Entry.from_json(obj))
        elif ch.op == "entries_packed":
            e.put_packed(ch.bank, ch.data)
        elif ch.op == "entries_delete":
            for entry_id in ch.data:
                e.drop(ch.bank, entry_id)
        last = ch
    return last


class IndexRebuilder:
    """Runs BankIndex.rebuild in a thread when the index asks for one (rebuild_due): one at a time,
    and not again within RETRY_S of a failed one, while matching goes on from the current index."""

    RETRY_S = 60.0

    def __init__(self, index: "BankIndex", store: BankStore, lock: threading.Lock):
        self.index, self.store, self.lock = index, store, lock
        self.thread: threading.Thread | None = None
        self._not_before = 0.0

    def maybe_start(self) -> bool:
        busy = self.thread is not None and self.thread.is_alive()
        if busy or time.monotonic() < self._not_before or not self.index.rebuild_due:
            return False
        self.thread = threading.Thread(target=self._run, name="bank-rebuild", daemon=True)
        self.thread.start()
        return True

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.index.rebuild(self.store, self.lock)
            log.info("bank index rebuilt", extra={"version": self.index.version,
                                                  "seconds": round(time.perf_counter() - t0, 1)})
        except Exception as exc:  # noqa: BLE001  (matching goes on from the current index)
            self._not_before = time.monotonic() + self.RETRY_S
            log.warning("bank index rebuild failed; matching continues from the current index",
                        extra={"error": str(exc)})


class CatchUp:
    """Holds decisions while the matcher applies bank changes it knows are there.

    behind(target) when the store's version is past what the index has applied (an import is
    arriving), reached(version) after each apply; the consumer threads call wait() before each
    poll. A decision made meanwhile would use the bank as it was, so it waits instead until the
    target is applied (well under a second while a matcher keeps up with an import), for at most
    `hold_s` from when the matcher fell behind: past that (a matcher far behind) decisions go on,
    and after VIGIL_BANK_BEHIND_SECONDS the matcher reports itself not ready (behind_for)."""

    def __init__(self, hold_s: float):
        self.hold_s = hold_s
        self._current = threading.Event()
        self._current.set()
        self._mu = threading.Lock()
        self.since: float | None = None  # monotonic time it fell behind `target`
        self.target = 0

    @property
    def catching_up(self) -> bool:
        return not self._current.is_set()

    def behind_for(self) -> float:
        """Seconds the oldest unapplied version seen has waited (0 when current)."""
        since = self.since
        return 0.0 if since is None else time.monotonic() - since

    def behind(self, target: int) -> None:
        with self._mu:
            if self._current.is_set():
                self.since, self.target = time.monotonic(), target
                self._current.clear()

    def reached(self, version: int) -> None:
        with self._mu:
            if version >= self.target:
                self.since = None
                self._current.set()

    def wait(self) -> bool:
        """True if the index is current (at once, or within the hold)."""
        since = self.since
        if self._current.is_set() or since is None:
            return True
        return self._current.wait(max(0.0, since + self.hold_s - time.monotonic()))


class BankIndex:
    """All enabled entries of all banks, searchable per signal. Owned by one matcher."""

    entries_class = IndexedEntries  # what is indexed of each entry (workers.index.video_near narrows it)

    def __init__(self, settings: Settings):
        self.settings = settings
        self.banks: dict[str, Bank] = {}
        self.version = 0
        self.stream_id = "0-0"
        self.synced_at = 0.0
        self.loaded = False
        self.catch_up_gate = CatchUp(settings.bank_hold_seconds)
        # Multi-index hashing (workers.index.mih): exact range search, far faster than a scan on large
        # banks (benchmarks/bench_bank.py), and it scans small ones anyway.
        self._e = self.entries_class(settings.pdq_min_quality)

    @property
    def video_frames(self) -> dict[tuple[str, str], int]:
        """Video entry -> usable PDQ frames banked (video entries only)."""
        return self._e.video_frames

    # -- keeping in step with the store ------------------------------------------------------
    def load(self, store: BankStore, snapshots: bool = True) -> None:
        """Snapshot, then the caller tails the change stream from `stream_id`: no gap, replays harmless.

        Banks with complete packed codes load from their binary snapshots (BankStore.write_snapshot)
        where the change stream still covers them, else from the codes hashes (HSCAN); older banks
        from their JSON. The changes since the oldest snapshot used are replayed before the new
        index replaces the old one, so searches meanwhile use the old one and never a stale new one.
        An unusable snapshot (replaced mid-read, malformed, a gap in the stream) means one more
        load without snapshots, never a wrong index. snapshots=False: HSCAN only (benchmarks, checks)."""
        t0 = time.perf_counter()
        try:
            snap, fresh, banks, report = self._build(store, use_snapshots=snapshots)
        except SnapshotError as exc:
            log.warning("bank snapshot unusable; loading from the codes hashes instead",
                        extra={"reason": str(exc)})
            snap, fresh, banks, report = self._build(store, use_snapshots=False)
        self._e, self.banks = fresh, banks
        self.version, self.stream_id = snap.version, snap.stream_id
        self.loaded, self.synced_at = True, time.time()
        log.info("bank index built", extra={**report, "version": snap.version,
                                             "seconds": round(time.perf_counter() - t0, 2)})

    def load_entries(self, banks: list[Bank], entries: Iterable[Entry], batch: int = 50_000) -> None:
        """An index with no Redis behind it (`vigil scan --hash-list`): these banks and entries,
        searched exactly as a matcher searches its bank. Loaded in batches through the import path
        (packed codes, numpy in bulk), then compacted as a cold start leaves its index."""
        fresh = IndexedEntries(self.settings.pdq_min_quality)
        chunk: list[Entry] = []
        for entry in entries:
            if chunk and (len(chunk) >= batch or entry.bank != chunk[-1].bank):
                fresh.put_packed(chunk[-1].bank, packed_from_entries(chunk))
                chunk = []
            chunk.append(entry)
        if chunk:
            fresh.put_packed(chunk[-1].bank, packed_from_entries(chunk))
        for idx in fresh.indexes():  # one segment each, as a cold start leaves them (tidy() would do less)
            idx.compact()
        fresh.table.compact()
        self._e, self.banks = fresh, {b.name: b for b in banks}
        self.loaded, self.synced_at = True, time.time()

    def _build(self, store: BankStore, use_snapshots: bool) -> tuple[Snapshot, IndexedEntries, dict[str, Bank], dict]:
        snap = store.snapshot_start()
        fresh = self.entries_class(self.settings.pdq_min_quality)
        packed = [name for name in snap.banks if store.has_codes(name)]
        plan = self._snapshot_plan(store, snap, packed) if use_snapshots else {}
        fresh.load_packed(store, packed, plan)
        for name in snap.banks:
            if name not in packed:
                for entry in store.iter_entries(name):
                    fresh.put(entry)
        banks = dict(snap.banks)
        replayed, since = self._replay(store, snap, plan, fresh, banks)
        fresh.tidy()  # a long replay through the incremental path leaves deferred merges
        report = {"source": "snapshots" if plan else "hscan", "snapshots": len(plan), "snapshot_versions": sorted({m.version for m in plan.values()}),
                  "replayed_changes": replayed, "replayed_since_version": since}
        return snap, fresh, banks, report

    @staticmethod
    def _snapshot_plan(store: BankStore, snap: Snapshot, banks: list[str]) -> dict[tuple[str, str], SnapshotMeta]:
        """(bank, signal) -> the snapshot to load it from: those the change stream still covers."""
        first = store.first_change_version()
        plan = {}
        for bank in banks:
            for signal, meta in store.snapshot_metas(bank).items():
                if meta.covered(snap.version, first):
                    plan[(bank, signal)] = meta
                else:
                    log.info("bank snapshot older than the change stream; scanning the codes hash",
                             extra={"bank": bank, "signal": signal, "snapshot_version": meta.version,
                                    "first_change_version": first})
        return plan

    @staticmethod
    def _replay(store: BankStore, snap: Snapshot, plan: dict[tuple[str, str], SnapshotMeta],
                e: IndexedEntries, banks: dict[str, Bank]) -> tuple[int, int | None]:
        """Apply the changes from the oldest snapshot used up to this load's version; raises
        SnapshotError unless every version in between is there."""
        older = [m for m in plan.values() if m.version < snap.version]
        if not older:
            return 0, None
        start = min(older, key=lambda m: m.version)
        want, n = start.version + 1, 0
        batch: list[Change] = []
        for ch in store.changes_until(start.stream_id, snap.stream_id):
            if ch.version <= start.version:
                continue
            if ch.version != want:
                raise SnapshotError(f"change stream has version {ch.version} where {want} was expected")
            want += 1
            batch.append(ch)
            if len(batch) >= 500:
                apply_changes(e, banks, batch)
                n, batch = n + len(batch), []
        apply_changes(e, banks, batch)
        n += len(batch)
        if want != snap.version + 1:
            raise SnapshotError(f"change stream ends at version {want - 1}, not {snap.version}")
        return n, start.version

    def apply(self, changes: Iterable[Change], after: str | None = None) -> bool:
        """Tailing: apply changes read after `stream_id` to the live index. With `after` (the
        stream_id the changes were read from), changes read before a rebuild swapped in a newer
        index are dropped (False) rather than moving stream_id back."""
        if after is not None and after != self.stream_id:
            return False
        last = apply_changes(self._e, self.banks, changes)
        if last is not None:
            self.version = max(self.version, last.version)
            self.stream_id = last.stream_id
        self.synced_at = time.time()
        return True

    @property
    def rebuild_due(self) -> bool:
        """Changes since the load left deferred merges or many dead rows (workers.index.mih): a fresh
        index would search markedly faster."""
        return any(idx.rebuild_due for idx in self._e.indexes())

    def rebuild(self, store: BankStore, lock: threading.Lock) -> None:
        """Load a fresh index aside, bring it up to the change stream's end, and swap it in under
        `lock` (held only for the last few changes), so searches neither wait for the build nor
        see an index older than the one they had. Needs memory for both while it builds."""
        fresh = type(self)(self.settings)
        fresh.load(store)
        fresh.catch_up(store)  # the changes made while it loaded, outside the lock
        fresh._e.tidy()
        with lock:
            fresh.catch_up(store)  # the last few
            self._e, self.banks = fresh._e, fresh.banks
            self.version, self.stream_id, self.synced_at = fresh.version, fresh.stream_id, fresh.synced_at
            self.loaded = True

    def catch_up(self, store: BankStore) -> None:
        """Apply every change in the stream after stream_id (no waiting for new ones)."""
        while changes := store.read_changes(self.stream_id, count=SYNC_PAGE, packed=True):
            self.apply(changes)

    def counts(self) -> dict[str, int]:
        out = {s: idx.rows for s, idx in self._e.hamming.items()}
        out.update({s: idx.rows for s, idx in self._e.exact.items()})
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
        joint = self.joint_limits()
        near: list[NearHit] = []  # pHash within the joint limit only: counts if PDQ is too (workers/index/joint.py)
        for signal, svs in by_signal.items():
            if signal in e.exact:
                q = to_words(np.frombuffer(b"".join(digest_code(signal, bytes.fromhex(sv.value)) for sv in svs),
                                           np.uint8), digest_bits(signal) // 64)
                qi, handles, _frames, _dist = e.exact[signal].search_arrays(q, 0)
                for i, h in zip(qi.tolist(), handles.tolist()):
                    self._emit(matches, near, e, active, h, svs[i], 0, NO_FRAME, joint)
            elif signal in e.hamming:
                limit = max(self.threshold(b, signal) for b in active.values())
                if joint is not None and signal == "phash":
                    limit = max(limit, joint.phash)  # PDQ is never searched out to its joint limit
                q = to_words(np.frombuffer(b"".join(bytes.fromhex(sv.value) for sv in svs), np.uint8),
                             PERCEPTUAL_BITS[signal] // 64)
                qi, handles, frames, dist = e.hamming[signal].search_arrays(q, limit)
                for i, h, f, d in zip(qi.tolist(), handles.tolist(), frames.tolist(), dist.tolist()):
                    self._emit(matches, near, e, active, h, svs[i], d, f, joint)
        if near and joint is not None:
            matched = {(m.bank, m.entry_id, m.frame_ms) for m in matches}
            matches += confirm(near, by_signal.get("pdq", []), e.hamming["pdq"], joint, matched)
        return closest_per_entry(matches)

    def joint_limits(self) -> JointLimits | None:
        """The joint rule's limits (Settings.joint_*); None when the rule is off."""
        pdq, phash = self.settings.joint_pdq_threshold, self.settings.joint_phash_threshold
        return JointLimits(pdq, phash) if pdq > 0 and phash > 0 else None

    def _emit(self, out: list[Match], near: list[NearHit], e: IndexedEntries, active: dict[str, Bank], handle: int,
              sv: SignalValue, dist: int, row_frame: int, joint: JointLimits | None) -> None:
        bank_name, entry_id = e.table.key(handle)
        bank = active.get(bank_name)
        if bank is None:
            return
        if not bank.dihedral and is_geometric(sv.variant):
            return
        if bank.action == "allow" and is_partial(sv.variant):
            return  # an allowlisted logo in the middle of a picture does not make the picture benign
        limit, rule = self.threshold(bank, sv.signal), None
        if dist > limit:
            if joint is None or sv.signal != "phash" or dist > joint.phash or "pdq" in bank.thresholds \
                    or "phash" in bank.thresholds:
                return
            limit, rule = joint.phash, JOINT_RULE
        match = Match(bank.name, entry_id, sv.signal, dist, limit, bank.action, e.table.label(handle) or bank.label,
                      sv.quality, sv.frame_ms, sv.variant, *entry_variant_of(row_frame), rule)
        if rule is None:
            out.append(match)
        else:
            near.append(NearHit(match, handle, row_frame))


def closest_per_entry(matches: list[Match]) -> list[Match]:
    """One match per (bank, entry, signal, query frame, banked frame): the closest. A photo entry
    with bank-side variants and a query with dihedral variants can meet in several pairs; the
    evidence keeps the pair the decision rests on (its variants and its distance), not all of them."""
    best: dict[tuple, Match] = {}
    for m in matches:
        key = (m.bank, m.entry_id, m.signal, m.frame_ms, m.entry_frame_ms)
        old = best.get(key)
        if old is None or (m.distance, m.variant is not None, m.entry_variant is not None) < \
                (old.distance, old.variant is not None, old.entry_variant is not None):
            best[key] = m
    return list(best.values())
