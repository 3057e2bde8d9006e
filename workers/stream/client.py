"""The producer/consumer side a platform's services use: submit uploads, watch decisions."""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from confluent_kafka import Consumer, Producer, TopicPartition

import topics
from workers.stream.kafka import base_config, producer_config
from workers.settings import Settings


def upload_event(path: Path, content_id: str | None = None, metadata: dict | None = None,
                 media_type: str | None = None) -> dict[str, Any]:
    path = path.resolve()
    if content_id is None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        content_id = f"c-{digest}"
    event: dict[str, Any] = {"schema_version": topics.SCHEMA_VERSION, "event_id": str(uuid.uuid4()),
                             "content_id": content_id, "media_uri": path.as_uri(),
                             "submitted_at_ms": int(time.time() * 1000)}
    if media_type:
        event["media_type"] = media_type
    if metadata:
        event["metadata"] = metadata
    topics.validate("upload", event)
    return event


class UploadProducer:
    def __init__(self, settings: Settings):
        self.producer = Producer(producer_config(settings))

    def submit(self, event: dict[str, Any]) -> None:
        self.producer.produce(topics.UPLOADS, key=event["content_id"].encode(), value=json.dumps(event).encode())
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            raise RuntimeError(f"{left} upload events were not delivered to Kafka within {timeout:.0f}s")


class OutcomeWatcher:
    """Reads decisions and dead letters from the current end of those topics (no consumer group,
    so watching never disturbs the workers' offsets). Create it before submitting."""

    def __init__(self, settings: Settings, watch: tuple[str, ...] = (topics.DECISIONS, topics.DEAD_LETTER),
                 from_beginning: bool = False):
        self.consumer = Consumer({**base_config(settings), "group.id": f"vigil-watch-{uuid.uuid4()}",
                                  "enable.auto.commit": False, "enable.partition.eof": False})
        assignment = []
        for topic in watch:
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assignment.append(TopicPartition(topic, p, low if from_beginning else high))
        self.consumer.assign(assignment)

    def messages(self, timeout: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """(topic, message) pairs until timeout passes with nothing new."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            try:
                yield msg.topic(), json.loads(msg.value())
            except (ValueError, TypeError):
                continue

    def wait_for(self, event_ids: set[str], timeout: float) -> dict[str, tuple[str, dict[str, Any]]]:
        """Outcome (topic, message) per event_id; missing ids were not decided in time."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for topic, msg in self.messages(timeout):
            eid = msg.get("event_id")
            if eid in event_ids and eid not in found:
                found[eid] = (topic, msg)
                if len(found) == len(event_ids):
                    break
        return found

    def close(self) -> None:
        self.consumer.close()


