"""What a matcher indexes about the bank's entries: every enabled entry's signals, keyed by an int
handle (workers.index.entry_table), its label, and the usable-frame count of video entries. Filled from
the change stream one entry at a time, or at cold start from the packed codes in bulk."""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import redis

from workers.bank.codes import CODE_SIGNALS, NO_FRAME, CodeBlock
from workers.bank.model import Entry
from workers.bank.snapshot import SnapshotMeta
from workers.bank.bulk_changes import PackedEntries
from workers.bank.store import BankStore, codes_key
from workers.index.entry_table import EntryTable
from workers.index.mih import MultiIndexHamming
from workers.signals import DIGEST_HEX_LEN, PERCEPTUAL_BITS
from workers.signals.bank_variants import MAX_CODE, variant_code, variant_name


def row_frame(frame_ms: int | None, variant: int) -> int | None:
    """What the index keeps as a row's frame: the banked frame_ms of a video, or for a photo's
    bank-side variant (workers.signals.bank_variants) NO_FRAME + its code, so a hit says which
    version of the entry matched without a second per-row array (see entry_variant_of)."""
    if variant and frame_ms is None:
        return int(NO_FRAME) + variant
    return frame_ms


def row_frames(frames: np.ndarray, variants: np.ndarray | None) -> np.ndarray:
    if variants is None or not variants.any():
        return frames
    return np.where((variants > 0) & (frames == NO_FRAME), NO_FRAME + variants.astype(np.int64), frames)


def entry_variant_of(frame: int) -> tuple[int | None, str | None]:
    """(banked frame_ms, bank-side variant) of a hit's row frame (the inverse of row_frame)."""
    if frame == NO_FRAME:
        return None, None
    if NO_FRAME < frame <= NO_FRAME + MAX_CODE:
        return None, variant_name(frame - int(NO_FRAME))
    return frame, None


class IndexedEntries:
    """Swapped whole when a snapshot loads, so searches never see a half-built index."""

    def __init__(self, pdq_min_quality: int):
        self.pdq_min_quality = pdq_min_quality
        self.table = EntryTable()
        self.hamming = {s: MultiIndexHamming(b) for s, b in PERCEPTUAL_BITS.items()}
        self.exact = {s: MultiIndexHamming(digest_bits(s), exact=True) for s in DIGEST_HEX_LEN}
        self.video_frames: dict[tuple[str, str], int] = {}  # video entry -> usable PDQ frames banked
        self._numbered: set[str] = set()  # banks whose entries have handles (cold start)

    def indexes(self) -> list[MultiIndexHamming]:
        """Every signal's index: perceptual (Hamming) and digest (exact)."""
        return [*self.hamming.values(), *self.exact.values()]

    # -- one entry ------------------------------------------------------------------------------
    def put(self, entry: Entry) -> None:
        self.drop(entry.bank, entry.entry_id)
        if entry.disabled:
            return
        handle = self.table.put(entry.bank, entry.entry_id, entry.label)
        if entry.media_type == "video":
            self.video_frames[(entry.bank, entry.entry_id)] = len(
                {sv.frame_ms for sv in entry.signals if sv.signal == "pdq" and (sv.quality or 0) >= self.pdq_min_quality})
        for sv in entry.signals:
            if sv.signal in self.hamming:
                self.hamming[sv.signal].add(handle, bytes.fromhex(sv.value), row_frame(sv.frame_ms, variant_code(sv.variant)))
            elif sv.signal in self.exact:
                self.exact[sv.signal].add(handle, digest_code(sv.signal, bytes.fromhex(sv.value)))

    def drop(self, bank: str, entry_id: str) -> None:
        handle = self.table.find(bank, entry_id)
        if handle is None:
            return
        self.video_frames.pop((bank, entry_id), None)
        for idx in self.indexes():
            idx.remove(handle)

    def put_packed(self, bank: str, packed: PackedEntries) -> None:
        """Many entries of one bank replaced at once from their packed codes (an import batch read by
        BankStore.read_changes(packed=True)): numpy in bulk, as a cold start loads, where put() goes
        entry by entry. Entries in no block (disabled, removed since) end with no rows."""
        if not packed.entry_ids:
            return
        old = self.table.find_many(bank, packed.entry_ids)
        old = old[old >= 0]
        if len(old):
            self._discard(old)
        for signal, block in packed.blocks.items():
            first = np.arange(len(block.entries)) if block.per_entry is None \
                else np.concatenate([[0], np.cumsum(block.per_entry)[:-1]])
            ids = block.labels[first]
            nos = np.array([self.table.label_no(packed.labels.get(int(i))) for i in ids.tolist()], np.uint32) \
                if ids.any() else np.zeros(len(ids), np.uint32)
            handles = self.table.put_many(bank, block.entries, nos)
            self._add_rows(bank, signal, block, handles, None)

    def tidy(self) -> None:
        """Compact the indexes that changes left slow to search (MultiIndexHamming.rebuild_due):
        for an index being built aside, before searches see it."""
        for idx in self.indexes():
            if idx.rebuild_due:
                idx.compact()

    # -- cold start -----------------------------------------------------------------------------
    def load_packed(self, store: BankStore, banks: list[str],
                    snapshots: dict[tuple[str, str], SnapshotMeta] | None = None) -> None:
        """Every enabled entry of these banks from their packed codes (BankStore.has_codes): from the
        binary snapshot where `snapshots` names one for (bank, signal), else HSCAN of the codes hash.
        A snapshot that turns out unusable raises SnapshotError (the caller reloads without it)."""
        snapshots = snapshots or {}
        sizes = {}
        for s in CODE_SIGNALS:  # entries to make room for: the snapshot's where one is used
            hashed = _sum_hlen(store, [codes_key(b, s) for b in banks if (b, s) not in snapshots])
            sizes[s] = hashed if hashed < 0 else hashed + sum(m.entries for (_, sig), m in snapshots.items() if sig == s)
        most = max(max(sizes.values(), default=0), 0)
        self.table.reserve(len(self.table) + most + most // 8)  # headroom: the next puts don't copy it all
        for signal in CODE_SIGNALS:
            if sizes[signal] == 0:
                continue
            index = self.hamming[signal] if signal in self.hamming else self.exact[signal]
            with index.bulk(max(sizes[signal], 0)):
                self._load_signal(store, banks, signal, snapshots)
        self.table.compact()

    def _load_signal(self, store: BankStore, banks: list[str], signal: str,
                     snapshots: dict[tuple[str, str], SnapshotMeta]) -> None:
        seen = np.zeros(0, bool)  # handles that have rows of this signal already (HSCAN repeats)
        for bank in banks:
            labels = store.labels(bank)
            first_pass = bank not in self._numbered  # no entry of it has a handle: none to look up
            meta = snapshots.get((bank, signal))
            blocks = store.iter_code_blocks(bank, signal, count=50_000) if meta is None \
                else store.iter_snapshot_blocks(bank, signal, meta)
            for block in _prefetch(blocks):
                block = self.keep(signal, block)
                if block is None:
                    continue
                if block.per_entry is None:
                    first = np.arange(len(block.entries))
                else:
                    first = np.concatenate([[0], np.cumsum(block.per_entry)[:-1]])
                label_nos, labels = self._label_nos(store, bank, block.labels[first], labels)
                if first_pass:
                    self._add_rows(bank, signal, block, self.table.append_new(bank, block.entries, label_nos), None)
                    continue
                handles = self.table.put_many(bank, block.entries, label_nos)
                if len(seen) < len(self.table):
                    seen = np.concatenate([seen, np.zeros(len(self.table) - len(seen) + 1024, bool)])
                fresh = ~seen[handles]
                seen[handles] = True
                self._add_rows(bank, signal, block, handles, fresh)
            if first_pass:
                self._numbered.add(bank)
                repeats = self.table.index_appended()
                if len(repeats):
                    self._discard(repeats)

    def keep(self, signal: str, block: CodeBlock) -> CodeBlock | None:
        """The part of a cold-start block to index (all of it here; a narrower view overrides)."""
        return block

    def _discard(self, handles: np.ndarray) -> None:
        for idx in self.indexes():
            idx.discard(handles)
        for h in handles.tolist():
            self.video_frames.pop(self.table.key(h), None)

    def _label_nos(self, store: BankStore, bank: str, ids: np.ndarray,
                   labels: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
        uniq, inverse = np.unique(ids, return_inverse=True)
        if any(int(i) and int(i) not in labels for i in uniq):
            labels = store.labels(bank)  # written since we read them
        nos = np.array([self.table.label_no(labels.get(int(i))) for i in uniq], np.uint32)
        return nos[inverse], labels

    def _add_rows(self, bank: str, signal: str, block: CodeBlock, handles: np.ndarray, fresh: np.ndarray | None) -> None:
        rows = handles if block.per_entry is None else np.repeat(handles, block.per_entry)
        keep = None if fresh is None else fresh if block.per_entry is None else np.repeat(fresh, block.per_entry)
        if keep is not None and not keep.all():
            variants = None if block.variants is None else block.variants[keep]
            rows, codes, frames, quality, video = (a[keep] for a in (rows, block.codes, block.frames, block.quality, block.video))
        else:
            codes, frames, quality, video, variants = block.codes, block.frames, block.quality, block.video, block.variants
        if signal in self.hamming:
            self.hamming[signal].add_many(rows, codes, row_frames(frames, variants))
        else:
            self.exact[signal].add_many(rows, digest_codes(signal, codes))
        if video.any():
            self._count_frames(bank, signal, rows[video], frames[video], quality[video])

    def _count_frames(self, bank: str, signal: str, rows: np.ndarray, frames: np.ndarray, quality: np.ndarray) -> None:
        """Distinct usable PDQ frames per video entry (0 if it has none: still a video)."""
        usable: dict[int, set[int]] = {}
        if signal == "pdq":
            for h, f, q in zip(rows.tolist(), frames.tolist(), quality.tolist()):
                if max(q, 0) >= self.pdq_min_quality:
                    usable.setdefault(h, set()).add(f)
        for h in set(rows.tolist()):
            key = self.table.key(h)
            self.video_frames[key] = self.video_frames.get(key, 0) + len(usable.get(h, ()))


def _sum_hlen(store: BankStore, keys: list[str]) -> int:
    """Entries in these hashes, to allocate once; -1 if an older ACL without HLEN forbids asking."""
    try:
        return sum(int(store.r.hlen(k)) for k in keys)
    except redis.exceptions.NoPermissionError:
        return -1


def _prefetch(blocks: Iterator[CodeBlock], depth: int = 4) -> Iterator[CodeBlock]:
    """Blocks read by a thread while the caller indexes the previous ones: Redis's time (HSCAN ~1 us
    an entry on the server; snapshot chunk GETs far less) overlaps the matcher's own work."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def read() -> None:
        try:
            for block in blocks:
                q.put(block)
        except Exception as exc:  # noqa: BLE001  (handed to the caller, raised there)
            q.put(exc)
            return
        q.put(done)

    threading.Thread(target=read, name="bank-prefetch", daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, Exception):
            raise item
        yield item


def digest_bits(signal: str) -> int:
    """Bits of a digest as the exact index holds it: padded with zeros to whole 64-bit words."""
    return -(-DIGEST_HEX_LEN[signal] * 4 // 64) * 64


def digest_codes(signal: str, codes: np.ndarray) -> np.ndarray:
    """(rows, digest bytes) uint8 -> rows padded to digest_bits (SHA-1's 160 bits -> 192)."""
    width = digest_bits(signal) // 8
    if codes.shape[1] == width:
        return codes
    out = np.zeros((len(codes), width), np.uint8)
    out[:, : codes.shape[1]] = codes
    return out


def digest_code(signal: str, value: bytes) -> bytes:
    return value.ljust(digest_bits(signal) // 8, b"\0")
