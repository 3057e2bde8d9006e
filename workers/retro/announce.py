"""Retro decisions: built from a history record and its hits, deduplicated in Redis, published on
moderation.decisions with source "retro".

Dedupe (Redis hash vigil:retro:content:<content_id>): one field per (bank, entry) announced, and
`blocked` once a retro block is out. A field is written as `pending:<ms>` before the decision is
produced and `sent` once it is delivered, so a worker killed in between knows, on restart, which
announcements may be on the topic: `resolve_pending` looks for them on the decisions topic from
that moment and marks them sent, or clears them so the replayed rescan announces them once.
Content whose original decision was block, or that a retro decision already blocked, is never
announced again; review content is announced again only to block it.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

import topics
from workers.ops import metrics
from workers.ops.logs import now_ms
from workers.retro.members import PENDING_KEY
from workers.retro.new_entries import Hit
from workers.settings import Settings
from workers.stream import history
from workers.stream.kafka import base_config

log = logging.getLogger("vigil.retro")
CONTENT_KEY = "vigil:retro:content:{content_id}"
BLOCKED = "blocked"
STRENGTH = {"allow": 0, "review": 1, "block": 2}


def entry_field(hit: Hit) -> str:
    return f"e:{hit.bank.name}/{hit.entry.entry_id}"


def evidence(hit: Hit, header: history.Header, raw: bytes) -> dict[str, Any]:
    frame_ms = header.frame_ms(raw, hit.frame) if hit.frame is not None and header.media != "image" else None
    return {"bank": hit.bank.name, "entry_id": hit.entry.entry_id, "signal": hit.signal, "distance": hit.distance,
            "threshold": hit.threshold, "action": hit.bank.action, "label": hit.entry.label or hit.bank.label,
            "frame_ms": frame_ms}


def retro_decision(content_id: str, header: history.Header, raw: bytes, hits: list[Hit], bank_version: int,
                   change_ms: int, rescan: str, worker: str) -> dict[str, Any]:
    """The decision a platform acts on: the original event, the new evidence, the original time."""
    found = now_ms()
    action = "block" if any(h.bank.action == "block" for h in hits) else "review"
    hits = sorted(hits, key=lambda h: (-STRENGTH[h.bank.action], h.distance))
    out: dict[str, Any] = {
        "schema_version": topics.SCHEMA_VERSION, "event_id": header.event_id, "content_id": content_id,
        "source": "retro", "media_type": "video" if header.media == "video" else "image",
        "decision": action, "partial": False,
        "notes": [f"retroactive: originally {header.decision} under bank version {header.bank_version}; "
                  f"matched entries added by bank version {bank_version}"],
        "matches": [evidence(h, header, raw) for h in hits[:50]], "bank_version": bank_version,
        "latency_ms": {"total": max(0, found - change_ms)}, "decided_at_ms": header.decided_at_ms,
        "worker": worker,
        "retro": {"found_at_ms": found, "original_decision": header.decision,
                  "original_bank_version": header.bank_version, "rescan": rescan},
    }
    if header.media == "live":
        out["stream_id"] = content_id
    return out


class Announcer:
    """Publishes retro decisions once per (content, entry); dry_run only counts them."""

    def __init__(self, settings: Settings, r: redis.Redis, producer: Producer | None, worker: str,
                 dry_run: bool = False, pending_key: str = PENDING_KEY):
        self.settings, self.r, self.producer, self.worker, self.dry_run = settings, r, producer, worker, dry_run
        self.pending_key = pending_key  # content ids with a pending field (one set per retro member)
        self.announced = 0
        self.found: list[dict[str, Any]] = []  # dry runs keep what they would publish (bounded)
        self.ttl_s = settings.history_retention_days * 86400
        self._pending: set[str] = set()  # contents this announcer marked pending since the last flush

    def offer(self, content_id: str, raw: bytes, hits: list[Hit], bank_version: int, change_ms: int,
              rescan: str) -> bool:
        """One matched record; True when a decision went out (or would, in a dry run)."""
        header = history.decode_header(raw)
        if header.bank_version >= bank_version or header.decision == "block":
            return False  # decided knowing these entries, or blocked already
        if header.decision == "review" and not any(h.bank.action == "block" for h in hits):
            return False
        key = CONTENT_KEY.format(content_id=content_id)
        seen = self.r.hgetall(key)
        if BLOCKED in seen:
            return False
        new = [h for h in hits if entry_field(h) not in seen]
        if not new:
            return False
        out = retro_decision(content_id, header, raw, new, bank_version, change_ms, rescan, self.worker)
        if self.dry_run:
            if len(self.found) < 10_000:
                self.found.append(out)
            self.announced += 1
            return True
        fields = {entry_field(h): f"pending:{out['retro']['found_at_ms']}" for h in new}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_s)
        pipe.sadd(self.pending_key, content_id)
        pipe.execute()
        self._pending.add(content_id)
        self._produce(key, content_id, out, list(fields))
        self.announced += 1
        return True

    def _produce(self, key: str, content_id: str, out: dict[str, Any], fields: list[str]) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                raise RuntimeError(f"retro decision not delivered: {err}")  # the worker stops; replay redoes it
            done = {f: "sent" for f in fields}
            if out["decision"] == "block":
                done[BLOCKED] = "1"
            self.r.hset(key, mapping=done)
            metrics.RETRO_DECISIONS.labels(out["decision"]).inc()
            log.info("retro decision", extra={"event_id": out["event_id"], "content_id": content_id,
                                              "decision": out["decision"], "matches": len(out["matches"]),
                                              "rescan": out["retro"]["rescan"]})

        while True:
            try:
                self.producer.produce(topics.DECISIONS, key=content_id.encode(),
                                      value=json.dumps(out, separators=(",", ":")).encode(), on_delivery=delivered)
                return
            except BufferError:
                self.producer.poll(0.1)

    def settled(self) -> None:
        """After a flush: this announcer's pending fields are all sent (another process's are its own)."""
        if self._pending:
            self.r.srem(self.pending_key, *self._pending)
            self._pending.clear()


def resolve_pending(settings: Settings, r: redis.Redis, pending_key: str = PENDING_KEY) -> int:
    """After a crash: pending announcements found on the decisions topic become sent; the rest are
    cleared so the replay announces them. Returns how many were cleared. Each retro member has
    its own pending set and resolves only it: another member's pending fields may be in flight."""
    contents = sorted(r.smembers(pending_key))
    if not contents:
        return 0
    pending: dict[str, dict[str, int]] = {}
    for cid in contents:
        for f, v in r.hgetall(CONTENT_KEY.format(content_id=cid)).items():
            if v.startswith("pending:"):
                pending.setdefault(cid, {})[f] = int(v.split(":", 1)[1])
    found = _published(settings, {c for c in pending}, min((ms for p in pending.values() for ms in p.values()),
                                                             default=now_ms()))
    cleared = 0
    for cid, fields in pending.items():
        key = CONTENT_KEY.format(content_id=cid)
        for f in fields:
            if f in found.get(cid, {}):
                r.hset(key, mapping={f: "sent", **({BLOCKED: "1"} if found[cid][f] == "block" else {})})
            else:
                r.hdel(key, f)
                cleared += 1
    r.delete(pending_key)
    log.info("retro pending announcements resolved", extra={"contents": len(pending), "cleared": cleared})
    return cleared


def _published(settings: Settings, contents: set[str], since_ms: int) -> dict[str, dict[str, str]]:
    """(content -> entry field -> decision) of retro decisions on the topic since since_ms - 5 s."""
    c = Consumer({**base_config(settings), "group.id": f"vigil-retro-check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = c.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS].partitions
        starts = c.offsets_for_times([TopicPartition(topics.DECISIONS, p, since_ms - 5000) for p in parts], timeout=10)
        todo = [tp for tp in starts if tp.offset >= 0]  # -1: nothing that recent on that partition
        c.assign(todo)
        left = {tp.partition for tp in todo}  # read to each partition's end (EOF), not to its high
        out: dict[str, dict[str, str]] = {}  # watermark, which tansu under-reports
        while left:
            msg = c.poll(5)
            if msg is None:
                raise RuntimeError("cannot read the decisions topic to resolve pending retro decisions")
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    left.discard(msg.partition())
                continue
            cid = (msg.key() or b"").decode("utf-8", "replace")
            if cid not in contents:
                continue
            d = json.loads(msg.value())
            if d.get("source") == "retro":
                for m in d.get("matches", []):
                    out.setdefault(cid, {})[f"e:{m['bank']}/{m['entry_id']}"] = d["decision"]
        return out
    finally:
        c.close()
