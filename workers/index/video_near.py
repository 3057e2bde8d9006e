"""The hasher's view of the bank for adaptive sampling: the PDQ frames of every video entry of a
block or review bank, and one question, "is this sampled frame near any of them?".

A sparse pass (keyframes, a frame at least every VIGIL_VIDEO_MAX_GAP_S) takes one or two frames
from a 2 s excerpt; the hasher decodes the seconds around a frame this index calls near densely
(workers/signals/hashing.py, DenseResampler), so the matcher sees the excerpt with ~20 frames.
"Near" is a sampling hint, not a match: it uses VIGIL_VIDEO_NEAR_FACTOR x the bank's PDQ threshold
(1.5 x 31 = 46 bits), and a false hint costs only decode time. Whether frames match, and what that
means, stays with the matcher's BankIndex.search and workers/policy/.

It is a BankIndex narrowed to video entries' PDQ rows (VideoEntries), kept current from the bank's
change stream by the same load/apply/rebuild machinery as the matcher's, so it is never a second
copy of the rules: image entries and imported hash lists are skipped at load (their rows are read
but not kept), and memory is that of the video entries' frames only.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace

import numpy as np
import redis

from workers.bank.codes import CodeBlock
from workers.bank.model import Entry
from workers.bank.store import BankStore
from workers.index.indexed_entries import IndexedEntries
from workers.index.matching import BankIndex, is_geometric
from workers.index.mih import to_words
from workers.settings import Settings
from workers.signals import PERCEPTUAL_BITS, SignalValue

log = logging.getLogger("vigil.hasher")
NEAR_ACTIONS = ("block", "review")  # an allowlisted video never needs a closer look


class VideoEntries(IndexedEntries):
    """IndexedEntries holding only video entries, and of them only their PDQ frames."""

    def put(self, entry: Entry) -> None:
        if entry.media_type != "video":
            self.drop(entry.bank, entry.entry_id)
            return
        super().put(replace(entry, signals=tuple(sv for sv in entry.signals if sv.signal == "pdq")))

    def keep(self, signal: str, block: CodeBlock) -> CodeBlock | None:
        if signal != "pdq" or not block.video.any():
            return None
        if block.per_entry is None:
            rows = entries = block.video
            per_entry = None
        else:
            first = np.concatenate([[0], np.cumsum(block.per_entry)[:-1]]).astype(np.int64)
            entries = block.video[first]
            rows = np.repeat(entries, block.per_entry)
            per_entry = block.per_entry[entries]
        ids = block.entries[entries] if isinstance(block.entries, np.ndarray) \
            else [e for e, k in zip(block.entries, entries.tolist()) if k]
        return CodeBlock(ids, per_entry, block.codes[rows], block.frames[rows], block.quality[rows],
                         block.video[rows], block.labels[rows])


class VideoNearIndex(BankIndex):
    """Video entries' PDQ frames of every bank; `near_frames` is the hasher's check."""

    entries_class = VideoEntries

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.lock = threading.Lock()  # the hasher's worker threads ask while the sync thread applies

    def near_frames(self, signals: list[SignalValue]) -> list[int]:
        """frame_ms of the usable PDQ signals within VIGIL_VIDEO_NEAR_FACTOR x the PDQ threshold of
        a video entry of an enabled block or review bank; [] until the index has loaded."""
        with self.lock:
            banks = {n: b for n, b in self.banks.items() if b.enabled and b.action in NEAR_ACTIONS}
            svs = [sv for sv in signals if sv.signal == "pdq" and sv.frame_ms is not None
                   and self.usable(sv) and not is_geometric(sv.variant)]
            e = self._e
            if not banks or not svs or not e.video_frames:
                return []
            limit = int(self.settings.video_near_factor * max(self.threshold(b, "pdq") for b in banks.values()))
            q = to_words(np.frombuffer(b"".join(bytes.fromhex(sv.value) for sv in svs), np.uint8),
                         PERCEPTUAL_BITS["pdq"] // 64)
            qi, handles, _frames, _dist = e.hamming["pdq"].search_arrays(q, min(limit, PERCEPTUAL_BITS["pdq"]))
            near = {svs[i].frame_ms for i, h in zip(qi.tolist(), handles.tolist()) if e.table.key(h)[0] in banks}
        return sorted(near)

    def follow(self, store: BankStore, stop: threading.Event) -> None:
        """Load, then tail the change stream until `stop`; Redis outages only pause it (the hints
        come from the index in memory meanwhile)."""
        backoff = 0.2
        block_ms = int(self.settings.bank_poll_seconds * 1000)
        while not stop.is_set():
            try:
                if not self.loaded:
                    self.load(store)
                    log.info("video index loaded", extra={"version": self.version,
                                                          "video_entries": len(self.video_frames)})
                after = self.stream_id
                changes = store.read_changes(after, block_ms)
                if changes and changes[0].version > self.version + 1 and \
                        (store.first_change_version() or 0) > self.version + 1:
                    self.loaded = False  # the stream was trimmed past us: load again
                    continue
                with self.lock:
                    self.apply(changes, after)
                if self.rebuild_due:
                    self.rebuild(store, self.lock)
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("redis unavailable; adaptive sampling uses the video index in memory",
                            extra={"error": str(exc), "retry_s": backoff})
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
