"""What the matcher's two consumer threads (uploads, live frames) share: wait for the bank, serve
until stopped, then deliver what is done, commit it and leave the group."""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

import topics
from workers.ops import metrics
from workers.stream.kafka import consumer_config, producer_config
from workers.index.matching import BankIndex
from workers.stream.messages import Source, dead_letter, encode
from workers.stream.offsets import Cell, Delivery, OffsetTracker, consumer_error, lag_stats_callback
from workers.settings import Settings

log = logging.getLogger("vigil.matcher")


class MatcherPath(ABC):
    """One consumer group's thread in the matcher. The bank index is shared with the other path
    and the bank sync loop: every search and every change applied holds `lock` (a reload builds
    a new index aside and swaps it in whole)."""

    topic: str

    def __init__(self, settings: Settings, name: str, index: BankIndex, lock: threading.Lock, group: str,
                 **producer: Any):
        self.settings = settings
        self.name = name
        self.index = index
        self.lock = lock
        self.consumer = Consumer({**consumer_config(settings, group), "stats_cb": lag_stats_callback(group)})
        self.producer = Producer({**producer_config(settings), **producer})
        self.tracker = OffsetTracker()
        self.delivery = Delivery(self.producer, self.tracker)
        self.assigned = False  # in the group (health): set on the first assignment, even an empty one

    def run(self, stop: threading.Event) -> None:
        """Wait for the bank, then serve until `stop`; deliver and commit what is done on the way out."""
        while not self.index.loaded and not stop.wait(0.1):
            pass
        if stop.is_set():
            self.consumer.close()
            return
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                self._turn()
        finally:
            self._settle(30)
            self.tracker.commit(self.consumer, asynchronous=False)
            self.consumer.close()

    def _messages(self, most: int = 200, wait_s: float = 0.05) -> Iterator[Message]:
        """What is waiting, one poll at a time, each message handled before the next poll. A
        rebalance callback runs inside a poll, so a message is never handled after its partition
        was revoked (by then it is the next owner's), as it could be from a batch taken before.
        Before each poll, waits (boundedly: BankIndex.catch_up_gate) while the bank sync loop applies
        changes it has seen, so what is polled next is decided with them."""
        for n in range(most):
            self.index.catch_up_gate.wait()
            msg = self.consumer.poll(wait_s if n == 0 else 0)
            if msg is None:
                return
            if not consumer_error(msg):
                yield msg

    @abstractmethod
    def _turn(self) -> None:
        """One turn of the loop: take what is waiting, handle it, serve deliveries and commits."""

    @abstractmethod
    def _settle(self, timeout_s: float) -> None:
        """Deliver everything produced so far, so its offsets can be committed."""

    def _assigned(self, partitions: list[int]) -> None:
        """Partitions given to this consumer, before any of their messages is polled."""

    def _revoked(self, partitions: list[int]) -> None:
        """Partitions taken away, after what was done on them is delivered and committed."""

    def _dead(self, src: Source, code: str, message: str, event: dict | None, covers: list[Cell]) -> None:
        """To the dead-letter topic with its code; its delivery completes the offsets it covers."""
        metrics.DEAD_LETTERS.labels("matcher", code).inc()
        log.warning("dead letter", extra={"code": code, "reason": message, "partition": src.partition,
                                          "offset": src.offset, **({"event_id": event.get("event_id")}
                                                                   if isinstance(event, dict) else {})})
        dl = dead_letter(src, code, message, "matcher", self.name, event if isinstance(event, dict) else None)
        self.delivery.send(topics.DEAD_LETTER, src.key, encode(dl), covers)

    # -- librdkafka's rebalance callbacks (they run inside a poll) ------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = True
        self._assigned([p.partition for p in partitions])
        log.info("partitions assigned", extra={"topic": self.topic, "partitions": [p.partition for p in partitions]})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Deliver and commit what is done, so the next owner starts where this one stopped."""
        self._settle(10)
        self.tracker.commit(self.consumer, asynchronous=False)
        self.tracker.forget(partitions)
        self._revoked([p.partition for p in partitions])
        log.info("partitions revoked", extra={"topic": self.topic, "partitions": [p.partition for p in partitions]})
