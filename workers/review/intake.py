"""The review service's consumer: moderation.decisions and moderation.reports in its own group
(vigil-review). An offset is committed only after the case it feeds is stored, so a crash replays
the message, and the store's input ids make the replay harmless. Unreadable input goes to the
dead-letter topic with a reason; the consumer keeps going.

A report is hashed and matched exactly like an upload (`hash_media` / `hash_video`, `BankIndex`,
`policy.decide`), so its case carries the same kind of evidence a decision would."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer
from sqlalchemy.orm import sessionmaker

import topics
from workers.errors import MediaError
from workers.index.matching import BankIndex
from workers.media.fetch import read_media, resolve_uri
from workers.media.probe import media_kind, probe_limits
from workers.policy import decide
from workers.review import cases, metrics
from workers.settings import Settings
from workers.stream.kafka import consumer_config
from workers.stream.messages import Source, dead_letter, encode, parse_json

log = logging.getLogger("vigil.review")
GROUP = "vigil-review"


def report_intake(report: dict[str, Any], settings: Settings, index: BankIndex) -> cases.Intake:
    """Hash the reported media, match it, and say what the case should carry. Raises MediaError."""
    from workers.signals import file_digests, hash_bytes
    from workers.signals.hashing import hash_media, hash_video

    path = resolve_uri(report["media_uri"], settings.media_roots)
    if media_kind(path, probe_limits(settings)).kind == "video":  # the bytes decide (media/probe.py)
        digests = file_digests(Path(path), settings.max_video_bytes)
        parts, _sampling = hash_video(Path(path), settings)
        signals, media_type = digests + [sv for part in parts for sv in part.signals], "video"
    else:
        data = read_media(path, settings.max_media_bytes)
        result = hash_media(data, settings, digests=hash_bytes(data))
        signals, media_type = result.signals, result.media_type
    decision, evidence = decide(index.search(signals))
    sha = next((sv.value for sv in signals if sv.signal == "sha256"), None)
    return cases.Intake(
        f"report:{report['report_id']}", report["content_id"], "report", "report", decision, report["media_uri"],
        media_type, sha, [m.to_json() for m in evidence][:cases.MAX_EVIDENCE], int(report["reported_at_ms"]),
        signals=[sv.to_json() for sv in signals if sv.signal in ("pdq", "md5", "sha256") and not sv.variant][:64],
        reason=report["reason"], reporter=report["reporter"],
        detail={"report_id": report["report_id"], "metadata": report.get("metadata", {})})


class Intake:
    """Consumes until stopped. `index` is the banks as the matchers see them, for reports."""

    def __init__(self, settings: Settings, sessions: sessionmaker, store: Any, name: str):
        self.settings, self.sessions, self.store, self.name = settings, sessions, store, name
        self.index = BankIndex(settings)
        self.stopping = threading.Event()
        self.assigned = False
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None

    def run(self) -> None:
        from workers.stream.kafka import producer_config

        conf = consumer_config(self.settings, GROUP)
        conf.pop("statistics.interval.ms", None)
        self.consumer = Consumer(conf)
        self.producer = Producer(producer_config(self.settings))
        self.consumer.subscribe([topics.DECISIONS, topics.REPORTS],
                                on_assign=lambda *_: setattr(self, "assigned", True))
        try:
            while not self.stopping.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("consumer error", extra={"error": str(msg.error())})
                    continue
                self._handle_until_stored(msg)
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def stop(self) -> None:
        self.stopping.set()

    def _handle_until_stored(self, msg: Message) -> None:
        """Store the message's case, then commit; a database or Redis outage retries the same
        message (its offset stays uncommitted) rather than skipping it."""
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.handle(msg)
                self.consumer.commit(message=msg, asynchronous=False)
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("storing a case failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}",
                                                                       "topic": msg.topic(), "offset": msg.offset()})
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 4.0)  # under the embedded max.poll.interval (6 s)

    def handle(self, msg: Message) -> int | None:
        """One message to its case (id), None when it needs no person, or a dead letter."""
        ts = msg.timestamp()
        src = Source(msg.topic(), msg.partition(), msg.offset(), ts[1] if ts and ts[0] else None, msg.key(), msg.value())
        schema = "decision" if msg.topic() == topics.DECISIONS else "report"
        try:
            obj = parse_json(src.value, schema, self.settings.max_message_bytes)
            if schema == "decision":
                it = cases.from_decision(obj, self.settings.review_qa_sample)
                if it is not None and it.media_uri:
                    it = replace(it, sha256=self._sha256(it.media_uri))
            else:
                self._sync_index()
                it = report_intake(obj, self.settings, self.index)
        except MediaError as exc:
            self._dead(src, exc.code, exc.message)
            return None
        if it is None:
            return None
        case_id, created = cases.store(self.sessions, it)
        metrics.INPUTS.labels(it.kind, str(created).lower()).inc()
        log.info("case stored", extra={"case_id": case_id, "new_case": created, "kind": it.kind,
                                       "content_id": it.content_id})
        return case_id

    def _sha256(self, media_uri: str) -> str | None:
        """The file's SHA-256, so a decision joins the case of the same bytes under another
        content_id. None when the media is gone: the decision still becomes a case."""
        from workers.signals import file_digests

        try:
            path = resolve_uri(media_uri, self.settings.media_roots)
            return next(d.value for d in file_digests(Path(path), self.settings.max_video_bytes) if d.signal == "sha256")
        except (MediaError, OSError, StopIteration):
            return None

    def _sync_index(self) -> None:
        if not self.index.loaded:
            self.index.load(self.store)
        self.index.catch_up(self.store)

    def _dead(self, src: Source, code: str, message: str) -> None:
        from workers.ops import metrics as ops_metrics

        ops_metrics.DEAD_LETTERS.labels("review", code).inc()
        log.warning("dead letter", extra={"code": code, "reason": message, "topic": src.topic, "offset": src.offset})
        self.producer.produce(topics.DEAD_LETTER, key=src.key, value=encode(dead_letter(src, code, message, "review",
                                                                                        self.name)))
        if self.producer.flush(30):
            raise RuntimeError("dead letter not delivered")


def wait_assigned(intake: Intake, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not intake.assigned and time.monotonic() < deadline:
        time.sleep(0.1)
    return intake.assigned
