"""One rescan: the history topic from a point in time up to where it ended when the rescan began,
read by a consumer whose offsets are committed under its own group (vigil-retro.<id>), matched
against only the rescan's new entries.

The end is a lower bound: an open-ended segment reads each partition on until it has passed
`end` and caught up with the partition (a partition-EOF event). Reading a little past the end is
harmless (dedupe, and records decided with the new entries are skipped), and the embedded broker
(tansu) under-reports high watermarks by the size of a partition's last batch, so they cannot be
an exact end. A merge's prefix segment ends exactly at the offsets where the running one was.

A rescan's definition (entries, start and end offsets) lives in Redis (the worker's state key),
its progress in Kafka: a worker killed mid-rescan resumes from the last committed offsets, which
are committed only after every decision before them is delivered.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

import topics
from workers.ops import metrics
from workers.retro.announce import Announcer
from workers.retro.new_entries import NewEntries
from workers.settings import Settings
from workers.stream import history
from workers.stream.kafka import base_config

log = logging.getLogger("vigil.retro")
BATCH = 20_000  # history records decoded and matched at once
COMMIT_EVERY_S = 1.0


@dataclass
class Segment:
    """A rescan of [start, end) per partition of the history for `entries` ((bank, entry_id))."""

    id: str
    bank_version: int
    change_ms: int
    entries: list[tuple[str, str]]
    start: dict[int, int]
    end: dict[int, int]
    since_ms: int
    open_end: bool = True  # read on past `end` to the partition's end (see the module docstring)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "bank_version": self.bank_version, "change_ms": self.change_ms,
                "entries": [list(e) for e in self.entries], "start": self.start, "end": self.end,
                "since_ms": self.since_ms, "open_end": self.open_end}

    @classmethod
    def from_json(cls, o: dict[str, Any]) -> Segment:
        return cls(o["id"], o["bank_version"], o["change_ms"], [tuple(e) for e in o["entries"]],
                   {int(k): v for k, v in o["start"].items()}, {int(k): v for k, v in o["end"].items()},
                   o["since_ms"], o.get("open_end", True))

    @property
    def group(self) -> str:
        return f"vigil-retro.{self.id}"


def history_partitions(settings: Settings) -> list[int]:
    """The history topic's partitions (how many retro workers can share a rescan)."""
    c = Consumer({**base_config(settings), "group.id": "vigil-retro-bounds", "enable.auto.commit": False})
    try:
        return sorted(c.list_topics(topics.HASH_HISTORY, timeout=10).topics[topics.HASH_HISTORY].partitions)
    finally:
        c.close()


def history_bounds(settings: Settings, since_ms: int,
                   owns: Callable[[int], bool] | None = None) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition (those `owns` accepts: a retro member's share): the first offset at or after
    since_ms, and the current end."""
    c = Consumer({**base_config(settings), "group.id": "vigil-retro-bounds", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topics.HASH_HISTORY, timeout=10).topics[topics.HASH_HISTORY].partitions
        parts = [p for p in parts if owns is None or owns(p)]
        ends = {p: c.get_watermark_offsets(TopicPartition(topics.HASH_HISTORY, p), timeout=10)[1] for p in parts}
        found = c.offsets_for_times([TopicPartition(topics.HASH_HISTORY, p, since_ms) for p in parts], timeout=10)
        starts = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}
        return starts, ends
    finally:
        c.close()


@dataclass
class Progress:
    read: int = 0
    matched: int = 0
    announced: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)


class SegmentScan:
    """Reads one segment's ranges in batches (`step`), announcing matches as they are found."""

    def __init__(self, settings: Settings, seg: Segment, index: NewEntries, announcer: Announcer,
                 producer: Producer | None):
        self.settings, self.seg, self.index, self.announcer, self.producer = settings, seg, index, announcer, producer
        self.consumer = Consumer({**base_config(settings), "group.id": seg.group, "enable.auto.commit": False,
                                  "enable.partition.eof": True, "queued.max.messages.kbytes": 32768,
                                  "fetch.max.bytes": 16 * 2**20, "max.partition.fetch.bytes": 4 * 2**20})
        committed = self.consumer.committed([TopicPartition(topics.HASH_HISTORY, p) for p in seg.start], timeout=10)
        self.pos = {tp.partition: max(tp.offset, seg.start[tp.partition]) if tp.offset >= 0 else seg.start[tp.partition]
                    for tp in committed}
        self.progress = Progress(total=sum(max(0, seg.end[p] - seg.start[p]) for p in seg.start))
        self.progress.read = sum(self.pos[p] - seg.start[p] for p in self.pos)
        self.eof = {p: False for p in self.pos}
        todo = [TopicPartition(topics.HASH_HISTORY, p, self.pos[p]) for p in self.pos if not self._finished(p)]
        if todo:
            self.consumer.assign(todo)
        self._committed_at = time.monotonic()

    def _finished(self, p: int) -> bool:
        return self.pos[p] >= self.seg.end[p] and (self.eof[p] or not self.seg.open_end)

    @property
    def done(self) -> bool:
        return all(self._finished(p) for p in self.pos)

    def remaining(self) -> int:
        return sum(max(0, self.seg.end[p] - self.pos[p]) for p in self.pos)

    def step(self, wait_s: float = 0.5) -> int:
        """One batch read, matched and announced; returns records read."""
        if self.done:
            return 0
        msgs = self.consumer.consume(num_messages=BATCH, timeout=wait_s)
        keys, values = [], []
        finished = {p for p in self.pos if self._finished(p)}
        for m in msgs:
            p = m.partition()
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF and p in self.pos:
                    self.eof[p] = self.pos[p] >= self.seg.end[p]
                continue
            off = m.offset()
            if off < self.pos[p] or p in finished or (not self.seg.open_end and off >= self.seg.end[p]):
                continue
            self.pos[p], self.eof[p] = off + 1, False
            if m.value() is not None:
                keys.append(m.key())
                values.append(m.value())
        for p in [p for p in self.pos if self._finished(p) and p not in finished]:
            try:  # a finished partition stops fetching
                self.consumer.incremental_unassign([TopicPartition(topics.HASH_HISTORY, p)])
            except Exception:  # noqa: BLE001  (not assigned any more)
                pass
        if values:
            self.match(keys, values)
        if self.producer is not None:
            self.producer.poll(0)  # delivery callbacks mark announcements sent as soon as they are
        self.progress.read += len(values)
        metrics.RETRO_RECORDS.inc(len(values))
        if time.monotonic() - self._committed_at > COMMIT_EVERY_S or self.done:
            self.commit()
        return len(values)

    def match(self, keys: list[bytes | None], values: list[bytes]) -> None:
        batch = history.decode_batch(values)
        if len(batch.bad):
            log.warning("unreadable history records skipped", extra={"count": len(batch.bad), "rescan": self.seg.id})
        by_record: dict[int, list] = {}
        for hit in self.index.match(batch):
            by_record.setdefault(hit.record, []).append(hit)
        for rec, hits in by_record.items():
            self.progress.matched += 1
            cid = (keys[rec] or b"").decode("utf-8", "replace")
            if self.announcer.offer(cid, values[rec], hits, self.seg.bank_version, self.seg.change_ms, self.seg.id):
                self.progress.announced += 1

    def commit(self) -> None:
        """Deliver every decision so far, then commit the offsets they cover."""
        if self.producer is not None:
            left = self.producer.flush(60)
            if left:
                raise RuntimeError(f"{left} retro decisions undelivered after 60 s")
            self.announcer.settled()
        offsets = [TopicPartition(topics.HASH_HISTORY, p, o) for p, o in self.pos.items()]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self._committed_at = time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def run_segment(scan: SegmentScan, stop: Callable[[], bool], on_batch: Callable[[Progress], None] | None = None) -> bool:
    """Scan until done (True) or stop() (False), committing on the way out."""
    try:
        while not scan.done and not stop():
            scan.step()
            if on_batch:
                on_batch(scan.progress)
        scan.commit()
        return scan.done
    finally:
        scan.close()
