"""Shared by the retro tests (tests/test_retro.py, tests/test_retro_scale.py): reading the
history and decisions topics of the real embedded broker, and producing history records."""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, TopicPartition

import topics
from workers.bank.model import Entry
from workers.bank.store import BankStore
from workers.settings import Settings
from workers.signals import SignalValue, hashing
from workers.stack import samples, transforms
from workers.stream import history
from workers.stream.kafka import base_config


def read_history(settings: Settings, prefix: str | None = None) -> tuple[dict[int, int], dict[str, int]]:
    """Records on each history partition, counted by reading it to its end (tansu's high
    watermarks lag), and the partition of each content id starting with `prefix`."""
    c = Consumer({**base_config(settings), "group.id": f"t-{uuid.uuid4()}", "enable.partition.eof": True})
    try:
        parts = c.list_topics(topics.HASH_HISTORY, timeout=10).topics[topics.HASH_HISTORY].partitions
        c.assign([TopicPartition(topics.HASH_HISTORY, p, 0) for p in parts])
        left, n, where = set(parts), {p: 0 for p in parts}, {}
        while left:
            msgs = c.consume(10_000, 5)
            assert msgs, "history topic read timed out"
            for msg in msgs:
                if msg.error():
                    left.discard(msg.partition())
                    continue
                n[msg.partition()] += 1
                if prefix is not None and (key := (msg.key() or b"").decode()).startswith(prefix):
                    where[key] = msg.partition()
        return n, where
    finally:
        c.close()


def history_count(settings: Settings) -> int:
    return sum(read_history(settings)[0].values())


def wait_history(settings: Settings, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (n := history_count(settings)) < at_least:
        assert time.monotonic() < deadline, f"history has {n} records, wanted {at_least}"
        time.sleep(0.2)


class RetroWatch:
    """Every retro decision on the decisions topic from now on (no consumer group)."""

    def __init__(self, settings: Settings):
        self.c = Consumer({**base_config(settings), "group.id": f"t-{uuid.uuid4()}", "enable.auto.commit": False})
        parts = self.c.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS].partitions
        self.c.assign([TopicPartition(topics.DECISIONS, p,
                                      self.c.get_watermark_offsets(TopicPartition(topics.DECISIONS, p), timeout=10)[1])
                       for p in parts])
        self.seen: list[dict] = []

    def collect(self, seconds: float, until=None) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.c.poll(0.2)
            if msg is not None and not msg.error():
                d = json.loads(msg.value())
                if d.get("source") == "retro":
                    self.seen.append(d)
            if until is not None and until(self.seen):
                break
        return self.seen

    def close(self) -> None:
        self.c.close()


def produce_history(p, key: str, value: bytes) -> None:
    """One history record, waiting for room when the producer's queue is full (large histories)."""
    while True:
        try:
            p.produce(topics.HASH_HISTORY, key=key.encode(), value=value)
            return
        except BufferError:
            p.poll(0.1)


def committed_records(s: Settings, store: BankStore, state_key: str = "vigil:retro:state") -> int:
    """Records the running rescan of one retro worker (its state key) has committed, from its
    consumer group's offsets."""
    segs = json.loads(store.r.get(state_key) or "{}").get("segments")
    if not segs:
        return 0
    seg = segs[0]
    c = Consumer({**base_config(s), "group.id": f"vigil-retro.{seg['id']}"})
    try:
        committed = c.committed([TopicPartition(topics.HASH_HISTORY, int(p)) for p in seg["start"]], timeout=10)
    finally:
        c.close()
    return sum(max(0, tp.offset - seg["start"][str(tp.partition)]) for tp in committed if tp.offset >= 0)


# Real photos whose edited copies a bank entry of the original finds at 100% (benchmarks/bench_retro.py).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "china.jpg", "flower.jpg", "stereo_motorcycle", "retina")
EDITS = {"reencode-q60": lambda im: im, "half-size": lambda im: transforms.resize(im, 0.5),
         "crop-2%": lambda im: transforms.crop(im, 0.02)}


def photo_signals(img: np.ndarray, quality: int = 85) -> list[SignalValue]:
    return hashing.hash_media(transforms.encode(img, ".jpg", quality), Settings(), query=False).signals


def planted_photos(names=PHOTOS, bank: str = "new") -> tuple[list[Entry], list[list[SignalValue]], list[str]]:
    """Bank entries of real photos, and the signals of edited copies of them (what the history of
    earlier uploads carries), with each copy's entry id."""
    entries, copies, owner = [], [], []
    for name in names:
        img = samples.photo(name)
        entries.append(Entry(f"photo-{name}", bank, tuple(s for s in photo_signals(img, 95) if s.signal in ("pdq", "phash"))))
        for edit in EDITS.values():
            copies.append(photo_signals(edit(img), 60))
            owner.append(f"photo-{name}")
    return entries, copies, owner


def planted_record(copy: list[SignalValue], event_id: str | None = None) -> bytes:
    """The history record of an allowed upload that carried `copy`."""
    frames, md5, sha = history.frames_of(copy)
    return history.encode_record(event_id or str(uuid.uuid4()), "image", "allow", 1, 1, frames[:1], md5, sha)
