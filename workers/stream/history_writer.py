"""Writes the hash history (workers/stream/history.py) from the matcher's two paths: one record
per decided upload, and one per sampled live frame. Kept apart from the matchers so their hooks
are one call each.

A history record rides the matcher's producer (acks=all) but no offset waits on it: a matcher
killed in the milliseconds between a decision's delivery and its record's can lose that one
record (the decision stands; a rescan would not see that upload). Losing history must never
hold up decisions."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

import topics
from workers.ops import metrics
from workers.signals import SignalValue
from workers.stream import history

log = logging.getLogger("vigil.history")
OPEN_VIDEOS = 2000  # videos whose parts are kept for their record; the oldest is dropped past this


def _delivered(err: KafkaError | None, _msg: Message) -> None:
    if err is not None:
        metrics.HISTORY_RECORDS.labels("lost").inc()
        log.warning("history record not delivered; a rescan will not see this content", extra={"error": str(err)})


class HistoryWriter:
    """Folds an upload's parts (a video's frames come in several hashes messages) until its
    decision, then writes one record. Bounded: at most OPEN_VIDEOS open videos of at most
    history.MAX_FRAMES frames each."""

    def __init__(self, producer: Producer, live_every: int = 10):
        self.producer = producer
        self.live_every = live_every
        self.open: OrderedDict[str, list[SignalValue]] = OrderedDict()

    def saw(self, event: dict[str, Any]) -> None:
        """A hashes message's signals, before its decision."""
        signals = self.open.setdefault(event["event_id"], [])
        if len(signals) < 4 * history.MAX_FRAMES:
            signals.extend(SignalValue.from_json(s) for s in event["signals"])
        while len(self.open) > OPEN_VIDEOS:
            self.open.popitem(last=False)

    def decided(self, decision: dict[str, Any]) -> None:
        """The upload's first decision writes its record (a video's early block: the frames so far)."""
        signals = self.open.pop(decision["event_id"], None)
        if signals is None:
            return
        frames, md5, sha256 = history.frames_of(signals)
        self._write(decision["content_id"], history.encode_record(
            decision["event_id"], decision.get("media_type", "image"), decision["decision"],
            decision["bank_version"], decision["decided_at_ms"], frames, md5, sha256))

    def live_frame(self, frame: dict[str, Any], status: str, bank_version: int, decided_at_ms: int) -> None:
        """Every live_every-th frame of a stream (by seq; 0 turns live history off)."""
        if self.live_every <= 0 or frame["seq"] % self.live_every or not frame["signals"]:
            return
        frames, _, _ = history.frames_of(SignalValue.from_json(s) for s in frame["signals"])
        if not frames:
            return
        first = frames[0]  # one frame; its frame_ms holds the frame's seq
        frames = [history.Frame(frame["seq"] & 0xFFFFFFFF, first.pdq, first.pdq_quality, first.phash,
                                first.phash_quality)]
        sid = frame["stream_id"]
        self._write(sid, history.encode_record(f"{sid}#{frame['seq']}", "live", status, bank_version,
                                               decided_at_ms, frames))

    def _write(self, key: str, value: bytes) -> None:
        try:
            self.producer.produce(topics.HASH_HISTORY, key=key.encode(), value=value, on_delivery=_delivered)
            metrics.HISTORY_RECORDS.labels("written").inc()
        except BufferError:  # the producer's queue is full: decisions come first
            _delivered(KafkaError(KafkaError._QUEUE_FULL), None)  # type: ignore[arg-type]
