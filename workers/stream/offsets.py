"""Offsets and delivery shared by every confluent-kafka worker: commit only what is done, so a
crash or a rebalance replays work and never skips it."""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from workers.ops import metrics

log = logging.getLogger("vigil.offsets")


class OffsetTracker:
    """Per partition, the offsets handed out and which are done; the commit point is the first
    offset not yet done, so a crash replays (never skips) unfinished work."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], deque[list]] = {}
        self._commit: dict[tuple[str, int], int] = {}
        self._dirty: set[tuple[str, int]] = set()

    def started(self, topic: str, partition: int, offset: int) -> list:
        cell = [offset, False]
        self._pending.setdefault((topic, partition), deque()).append(cell)
        return cell

    def done(self, tp: tuple[str, int], cell: list) -> None:
        cell[1] = True
        queue = self._pending.get(tp)
        while queue and queue[0][1]:
            self._commit[tp] = queue.popleft()[0] + 1
            self._dirty.add(tp)

    def take_commits(self) -> list[TopicPartition]:
        out = [TopicPartition(t, p, self._commit[(t, p)]) for t, p in self._dirty if (t, p) in self._commit]
        self._dirty.clear()
        return out

    def commit(self, consumer: Consumer, asynchronous: bool) -> None:
        """Commit what is done; a failed commit only means work is replayed, never skipped."""
        offsets = self.take_commits()
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except Exception as exc:
                log.warning("commit failed; work will be replayed, never skipped", extra={"error": str(exc)})

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)
            self._commit.pop((tp.topic, tp.partition), None)
            self._dirty.discard((tp.topic, tp.partition))


def consumer_error(msg: Message) -> bool:
    """True (and logged, unless it is only the end of a partition) when `msg` carries an error."""
    if not msg.error():
        return False
    if msg.error().code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error", extra={"error": str(msg.error())})
    return True


def take_batch(consumer: Consumer, max_messages: int, wait_s: float) -> list[Message]:
    """What is waiting, up to `max_messages`, waiting at most `wait_s` for the first message.
    consume(n, timeout) alone would wait out the whole timeout for n messages; a poll returns on
    the first, and a zero-timeout consume then takes what is already buffered."""
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first] + consumer.consume(num_messages=max_messages - 1, timeout=0) if max_messages > 1 else [first]


Cell = tuple[tuple[str, int], list]  # (topic, partition) and the tracker's cell for one offset


class Delivery:
    """Produces an output whose delivery completes the offsets it covers. A failed delivery is
    retried; after the last attempt `fatal` is set and the worker stops loudly (its offsets stay
    uncommitted, so the work is replayed elsewhere)."""

    ATTEMPTS = 5
    COMMIT_EVERY_S = 0.5

    def __init__(self, producer: Producer, tracker: OffsetTracker):
        self.producer = producer
        self.tracker = tracker
        self.fatal: Exception | None = None
        self._committed_at = time.monotonic()

    def serve(self, consumer: Consumer) -> bool:
        """Once per turn of a worker's loop: run delivery callbacks, raise a delivery that failed for
        good, and commit what is done every COMMIT_EVERY_S. True when it committed."""
        self.producer.poll(0)
        if self.fatal:
            raise self.fatal
        if time.monotonic() - self._committed_at < self.COMMIT_EVERY_S:
            return False
        self.tracker.commit(consumer, asynchronous=True)
        self._committed_at = time.monotonic()
        return True

    def send(self, topic: str, key: bytes | None, value: bytes | None, covers: list[Cell],
             then: Callable[[], None] | None = None, attempt: int = 1, partition: int | None = None) -> None:
        """`covers` are done once delivered; `then` runs after that (on the producer's poll thread).
        `partition` pins the partition instead of hashing the key (a changelog follows its input)."""
        started = time.perf_counter()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                metrics.STAGE_DURATION.labels("produce").observe(time.perf_counter() - started)
                for tp, cell in covers:
                    self.tracker.done(tp, cell)
                if then is not None:
                    then()
            elif attempt < self.ATTEMPTS:
                log.warning("delivery failed, retrying", extra={"error": str(err), "attempt": attempt})
                self.send(topic, key, value, covers, then, attempt + 1, partition)
            else:
                self.fatal = RuntimeError(f"cannot deliver to {topic} after {attempt} attempts: {err}")

        where = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=delivered, **where)
                return
            except BufferError:  # local queue full: serve callbacks, then retry
                self.producer.poll(0.1)


def lag_stats_callback(group: str):
    """Consumer lag per partition from librdkafka's statistics, as a Prometheus gauge."""

    def on_stats(raw: str) -> None:
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        for topic, tstats in stats.get("topics", {}).items():
            for pid, pstats in tstats.get("partitions", {}).items():
                lag = pstats.get("consumer_lag", -1)
                if pid != "-1" and lag is not None and lag >= 0:
                    metrics.CONSUMER_LAG.labels(group, topic, pid).set(lag)

    return on_stats
