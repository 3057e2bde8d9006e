"""The `reports` consumer: keeps the hourly aggregate (aggregate.py) current from the decisions,
the dead letters and, when they exist, the review service's verdicts and user reports.

It has its own consumer group (`vigil-reports`), so it never disturbs the workers' offsets, and
its position lives in Redis beside the counts (see aggregate.py): on assignment it seeks there.
`catch_up` reads every partition to its current end without a group, for `vigil report ...
--catch-up`, the tests and a rebuild; both paths share the same exactly-once write, so running
them at once is safe.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import topics
from workers.reports.aggregate import Aggregate, Batch, count_dead_letter, count_decision, count_report, count_verdict
from workers.settings import Settings
from workers.stream.kafka import base_config, consumer_config

log = logging.getLogger("vigil.reports")

GROUP = "vigil-reports"
# The review service (issue 16) adds these; until its topics/names.py lands, the names are theirs.
ACTIONS = getattr(topics, "ACTIONS", "moderation.actions")
REPORTS = getattr(topics, "REPORTS", "moderation.reports")
COUNTERS: dict[str, Callable[[Batch, dict[str, Any]], None]] = {
    topics.DECISIONS: count_decision,
    topics.DEAD_LETTER: count_dead_letter,
    ACTIONS: count_verdict,
    REPORTS: count_report,
}
BATCH = 2000


def present_topics(consumer: Consumer) -> list[str]:
    """The counted topics that exist: actions and reports appear once the review service runs."""
    existing = set(consumer.list_topics(timeout=10).topics)
    return [t for t in COUNTERS if t in existing]


class ReportsConsumer:
    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.settings = settings
        self.r = client or redis.Redis.from_url(settings.redis)
        self.aggregate = Aggregate(self.r)
        self.counted = 0
        self.unreadable = 0

    def _handle(self, batch: Batch, msg) -> None:
        batch.seen(msg.topic(), msg.partition(), msg.offset())
        try:
            value = json.loads(msg.value())
            if not isinstance(value, dict):
                raise ValueError("not an object")
            COUNTERS[msg.topic()](batch, value)
        except (ValueError, TypeError, KeyError) as exc:
            # Not ours to dead-letter (the workers wrote it): counted as unreadable, and said.
            batch.add(int(time.time() * 1000), f"unreadable|{msg.topic()}")
            self.unreadable += 1
            log.warning("unreadable message counted, not parsed", extra={
                "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "error": str(exc)})

    def _flush(self, consumer: Consumer, batch: Batch) -> bool:
        if not batch.offsets:
            return True
        if self.aggregate.write(batch):
            self.counted += sum(nxt - first for first, nxt in batch.offsets.values())
            return True
        log.info("another reports consumer counted part of this batch; re-seeking")
        stored = self.aggregate.offsets()
        for (topic, part) in batch.offsets:
            consumer.seek(TopicPartition(topic, part, stored.get((topic, part), OFFSET_BEGINNING)))
        return False

    def _start_positions(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        stored = self.aggregate.offsets()
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        return partitions

    def catch_up(self, timeout: float = 120.0) -> int:
        """Count everything up to each partition's end as of now; returns messages counted."""
        consumer = Consumer({**base_config(self.settings), "group.id": "vigil-reports-catch-up",
                             "enable.auto.commit": False, "enable.partition.eof": False,
                             "fetch.wait.max.ms": self.settings.fetch_wait()})
        try:
            ends: dict[tuple[str, int], int] = {}
            lows: dict[tuple[str, int], int] = {}
            parts = []
            for topic in present_topics(consumer):
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                for p in meta.partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    ends[(topic, p)] = high
                    lows[(topic, p)] = low
                    parts.append(TopicPartition(topic, p))
            consumer.assign(self._start_positions(parts))
            stored = self.aggregate.offsets()
            positions = {tp: max(stored.get(tp, 0), lows[tp]) for tp in ends}
            before = self.counted
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("reports catch-up did not reach the end of "
                                       f"{sorted(tp for tp in ends if positions[tp] < ends[tp])}")
                batch = Batch()
                for msg in consumer.consume(BATCH, timeout=0.5):
                    if not msg.error():
                        self._handle(batch, msg)
                if not batch.offsets:
                    # done once at the ends seen at the start and a poll comes back empty (the
                    # embedded broker's watermark can sit before the last messages of a batch)
                    if all(positions[tp] >= high for tp, high in ends.items()):
                        break
                    continue
                if self._flush(consumer, batch):
                    for tp, (_, nxt) in batch.offsets.items():
                        positions[tp] = nxt
                else:
                    positions.update(self.aggregate.offsets())
            return self.counted - before
        finally:
            consumer.close()

    def run(self, stop: threading.Event) -> None:
        """Until stop is set: the long-running consumer (`vigil report aggregate`)."""
        consumer = Consumer(consumer_config(self.settings, GROUP))

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            c.assign(self._start_positions(partitions))

        # A regex subscription picks up the review service's topics when they are created later.
        pattern = "^(" + "|".join(t.replace(".", "\\.") for t in COUNTERS) + ")$"
        consumer.subscribe([pattern], on_assign=on_assign)
        log.info("reports consumer started", extra={"group": GROUP})
        try:
            while not stop.is_set():
                batch = Batch()
                for msg in consumer.consume(BATCH, timeout=0.5):
                    if not msg.error():
                        self._handle(batch, msg)
                self._flush(consumer, batch)
        finally:
            consumer.close()
