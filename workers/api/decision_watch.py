"""`GET /v1/decisions/{event_id}`: the API reads moderation.decisions (and dead letters) itself.

Every API replica reads every partition, with no consumer group (so it never disturbs the
workers), starting RECENT_S back, and keeps the last MAX_KEPT outcomes in memory; a long-poll
waits on a condition until its event's outcome arrives. Files /v1/uploads handed to the hasher
are removed when their outcome arrives (or after ORPHAN_S, whatever happens)."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import topics
from workers.settings import Settings

log = logging.getLogger("vigil.api")
MAX_KEPT = 20_000
RECENT_S = 600
ORPHAN_S = 3600


class DecisionWatch:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.outcomes: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self.files: dict[str, str] = {}  # event_id -> file to remove once decided
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.assigned = False

    def start(self) -> "DecisionWatch":
        self.thread = threading.Thread(target=self._run, name="decision-watch", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10)

    def track_file(self, event_id: str, path: str) -> None:
        with self.cond:
            self.files[event_id] = path

    def get(self, event_id: str, wait_s: float) -> tuple[str, dict[str, Any]] | None:
        deadline = time.monotonic() + wait_s
        with self.cond:
            while event_id not in self.outcomes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.outcomes[event_id]

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from workers.stream.kafka import base_config

        consumer = Consumer({**base_config(self.settings), "group.id": f"vigil-api-watch-{uuid.uuid4()}",
                             "enable.auto.commit": False, "enable.partition.eof": False})
        try:
            while not self.stop_event.is_set() and not self.assigned:
                try:
                    since = int((time.time() - RECENT_S) * 1000)
                    wanted = []
                    for topic in (topics.DECISIONS, topics.DEAD_LETTER):
                        meta = consumer.list_topics(topic, timeout=10).topics[topic]
                        wanted += [TopicPartition(topic, p, since) for p in meta.partitions]
                    consumer.assign(consumer.offsets_for_times(wanted, timeout=10))
                    self.assigned = True
                except Exception as exc:  # noqa: BLE001  (the broker may be starting; keep trying)
                    log.warning("decision watch cannot assign yet", extra={"error": str(exc)})
                    self.stop_event.wait(2)
            last_sweep = 0.0
            while not self.stop_event.is_set():
                msg = consumer.poll(0.2)
                if time.monotonic() - last_sweep > 60:
                    self._sweep()
                    last_sweep = time.monotonic()
                if msg is None or msg.error():
                    continue
                try:
                    value = json.loads(msg.value())
                except (ValueError, TypeError):
                    continue
                eid = value.get("event_id") if isinstance(value, dict) else None
                if isinstance(eid, str):
                    self._record(eid, msg.topic(), value)
        finally:
            consumer.close()

    def _record(self, eid: str, topic: str, value: dict[str, Any]) -> None:
        with self.cond:
            if topic == topics.DECISIONS or eid not in self.outcomes:
                self.outcomes[eid] = (topic, value)
                self.outcomes.move_to_end(eid)
            while len(self.outcomes) > MAX_KEPT:
                self.outcomes.popitem(last=False)
            path = self.files.pop(eid, None)
            self.cond.notify_all()
        if path:
            _unlink(path)

    def _sweep(self) -> None:
        """Upload files whose outcome never came (a hasher down for an hour, a lost event)."""
        from workers.api.service import UPLOAD_SUBDIR

        if not self.settings.media_roots:
            return
        folder = os.path.join(self.settings.media_roots[0], UPLOAD_SUBDIR)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        cutoff = time.time() - ORPHAN_S
        for name in names:
            path = os.path.join(folder, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    _unlink(path)
            except OSError:
                pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
