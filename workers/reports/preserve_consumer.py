"""The preservation step: a small consumer (group `vigil-preserve`) beside the matcher, not in
its hot path. For each `block` whose evidence names a label in VIGIL_PRESERVE_LABELS it finds the
upload event (moderation.uploads, by event_id, near the submit time), reads media_uri under the
media roots with the hasher's own rules (workers/media/fetch.py) and stores it encrypted.

Offsets are committed only after the copy and its custody record are on disk, so a crash
preserves again rather than never (a replayed decision is recognised by event_id). A file that
cannot be read (the platform already deleted it, outside the roots) gets a `failed` custody
record with the reason: never silently dropped. Live streams' frames are not kept anywhere, so
there is nothing to preserve for them; their decisions are recorded as `not_preservable`.

The race to know about: the platform may delete a blocked upload as soon as it sees the
decision; preservation reads the file when it sees the decision (a consumer lag later), so a
platform that preserves should delay its deletion by a few seconds (docs/reports.md).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

import topics
from workers.errors import MediaError
from workers.media.fetch import iter_media, resolve_uri
from workers.ops.logs import now_ms
from workers.reports.preserve import PreserveStore
from workers.reports.source import read_period
from workers.settings import Settings
from workers.stream.kafka import consumer_config

log = logging.getLogger("vigil.preserve")
GROUP = "vigil-preserve"


def enabled(settings: Settings) -> bool:
    return bool(settings.preserve_dir and settings.preserve_key)


def wants(decision: dict[str, Any], settings: Settings) -> bool:
    if decision.get("decision") != "block" or "summary" in decision:
        return False
    return any(m.get("action") == "block" and m.get("label") in settings.preserve_labels
               for m in decision.get("matches", ()))


LOOKUP_SLACK_MS = 60_000  # the upload's Kafka timestamp is its submit time, give or take clocks


def find_upload(settings: Settings, decision: dict[str, Any], partition: int | None = None) -> dict[str, Any] | None:
    """The upload event a decision answers. Uploads and decisions are keyed by content_id and
    vigil creates both topics with the same partition count, so the decision's partition number
    is the upload's: that one partition is read first, over the minutes around the submit time,
    and every partition only if it is not there (topics created by hand with other counts)."""
    at = int(decision.get("submitted_at_ms") or decision.get("decided_at_ms") or 0)
    until = int(decision.get("decided_at_ms") or at)
    eid = decision["event_id"]
    tries = ([[partition]] if partition is not None else []) + [None]
    for parts in tries:
        for _, _, event in read_period(settings, topics.UPLOADS, at, until, keep=lambda m: m.get("event_id") == eid,
                                       partitions=parts, slack_ms=LOOKUP_SLACK_MS):
            return event
    return None


class PreserveStep:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = PreserveStore(settings.preserve_dir, settings.preserve_key)
        self.actor = settings.worker_name("preserve")

    def handle(self, decision: dict[str, Any], partition: int | None = None) -> dict[str, Any] | None:
        """The custody record written for this decision, or None when it is not one to preserve.
        partition: the decision's own, where its upload event is too (find_upload)."""
        if not wants(decision, self.settings):
            return None
        if self.store.preserved(decision["event_id"]):
            return self.store.preserved(decision["event_id"])
        base = {"at_ms": now_ms(), "actor": self.actor, "event_id": decision["event_id"],
                "content_id": decision["content_id"]}
        if decision.get("source") == "live":
            return self.store.append({**base, "action": "not_preservable",
                                      "reason": "live frames are hashed in memory and never stored"})
        upload = find_upload(self.settings, decision, partition)
        if upload is None:
            return self.store.append({**base, "action": "failed", "reason": "upload event not found on "
                                      f"{topics.UPLOADS} (past its retention?)"})
        try:
            path = resolve_uri(upload["media_uri"], self.settings.media_roots)
            chunks = iter_media(path, max(self.settings.max_media_bytes, self.settings.max_video_bytes))
            record = self.store.preserve(chunks, decision, upload["media_uri"], self.actor)
        except MediaError as exc:
            return self.store.append({**base, "action": "failed", "reason": f"{exc.code}: {exc}",
                                      "media_uri": upload["media_uri"]})
        log.info("media preserved", extra={"event_id": decision["event_id"], "record_id": record["record_id"]})
        return record


class PreserveConsumer:
    def __init__(self, settings: Settings):
        self.step = PreserveStep(settings)
        self.settings = settings

    def _loop(self, consumer: Consumer, until, positions: dict[int, int] | None = None) -> int:
        done, idle = 0, False
        while not until(idle):
            msgs = consumer.consume(100, timeout=0.5)
            idle = not msgs
            for msg in msgs:
                if msg.error():
                    continue
                try:
                    decision = json.loads(msg.value())
                except (ValueError, TypeError):
                    decision = None  # the matcher writes these; an unreadable one is not ours to fix
                if isinstance(decision, dict) and self.step.handle(decision, msg.partition()) is not None:
                    done += 1
                consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)],
                                asynchronous=False)
                if positions is not None:
                    positions[msg.partition()] = msg.offset() + 1
        return done

    def run(self, stop: threading.Event) -> None:
        consumer = Consumer(consumer_config(self.settings, GROUP))
        consumer.subscribe([topics.DECISIONS])
        try:
            self._loop(consumer, lambda idle: stop.is_set())
        finally:
            consumer.close()

    def catch_up(self, timeout: float = 120.0) -> int:
        """Handle every decision up to the topic's current end (from the group's committed
        offsets), without waiting for a group join; returns the custody records written."""
        consumer = Consumer(consumer_config(self.settings, GROUP))
        try:
            meta = consumer.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS]
            parts = [TopicPartition(topics.DECISIONS, p) for p in meta.partitions]
            positions, ends = {}, {}
            for tp in consumer.committed(parts, timeout=10):
                low, ends[tp.partition] = consumer.get_watermark_offsets(tp, timeout=10)
                positions[tp.partition] = tp.offset if tp.offset >= 0 else low
            consumer.assign([TopicPartition(topics.DECISIONS, p, o) for p, o in positions.items()])
            deadline = time.monotonic() + timeout

            def caught_up(idle: bool) -> bool:
                if time.monotonic() > deadline:
                    raise TimeoutError("preservation catch-up did not reach the end of the decisions")
                # an empty poll too: the embedded broker's watermark can lag its last batch
                return idle and all(positions[p] >= end for p, end in ends.items())
            return self._loop(consumer, caught_up, positions)
        finally:
            consumer.close()
