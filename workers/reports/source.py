"""Raw messages of a period, read back from their topics (statements of reasons, evidence, a
rebuild of the aggregate). Kafka finds the first offset at a time itself (offsets_for_times), so
a period is read without scanning what came before it; it must still be within the topic's
retention (docs/reports.md says how long that has to be).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Iterator

from confluent_kafka import Consumer, TopicPartition

from workers.settings import Settings
from workers.stream.kafka import base_config

SLACK_MS = 10 * 60 * 1000  # message timestamps (broker time) and decided_at_ms may differ a little


def read_period(settings: Settings, topic: str, start_ms: int | None, end_ms: int | None,
                keep: Callable[[dict[str, Any]], bool] = lambda m: True,
                timeout: float = 60.0, partitions: list[int] | None = None,
                slack_ms: int = SLACK_MS) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, message) of every JSON message of `topic` whose Kafka timestamp is in
    [start - slack, end + slack) and that `keep` accepts, partition by partition. None = no bound;
    `partitions` limits the read to those. A topic that does not exist yields nothing (the review
    service's topics may not)."""
    consumer = Consumer({**base_config(settings), "group.id": f"vigil-report-read-{uuid.uuid4()}",
                         "enable.auto.commit": False, "enable.partition.eof": False,
                         "fetch.wait.max.ms": settings.fetch_wait()})
    try:
        meta = consumer.list_topics(timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return
        for p in sorted(meta.partitions) if partitions is None else [p for p in partitions if p in meta.partitions]:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            begin = low
            if start_ms is not None:
                at = TopicPartition(topic, p, max(0, start_ms - slack_ms))
                found = consumer.offsets_for_times([at], timeout=10)[0]
                begin = high if found.offset < 0 else max(low, found.offset)
            if begin >= high:
                continue
            yield from _read_partition(consumer, topic, p, begin, high, end_ms, keep, timeout, slack_ms)
    finally:
        consumer.close()


def _read_partition(consumer: Consumer, topic: str, p: int, begin: int, high: int, end_ms: int | None,
                    keep: Callable[[dict[str, Any]], bool], timeout: float,
                    slack_ms: int) -> Iterator[tuple[int, int, dict]]:
    """Up to the high watermark and then until a poll comes back empty: the embedded broker
    reports a watermark one past the last *batch* it stored, not the last message."""
    consumer.assign([TopicPartition(topic, p, begin)])
    deadline = time.monotonic() + timeout
    pos = begin
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{p}] stopped at offset {pos} of {high}")
            msgs = [m for m in consumer.consume(500, timeout=0.5 if pos < high else 0.3) if not m.error()]
            if not msgs and pos >= high:
                return
            for msg in msgs:
                pos = msg.offset() + 1
                if end_ms is not None and msg.timestamp()[1] > end_ms + slack_ms:
                    return
                try:
                    value = json.loads(msg.value())
                except (ValueError, TypeError):
                    continue
                if isinstance(value, dict) and keep(value):
                    yield p, msg.offset(), value
    finally:
        consumer.unassign()
