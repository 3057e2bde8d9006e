"""The matcher's upload path, on confluent-kafka: hashes messages in, decisions out, and an offset
committed only once the decision covering it is delivered.

faust's consumer lost events across rebalances (tests/test_chaos.py saw 1 to 17 of 2,000 never
decided while their hashes sat on the topic), so uploads track their own offsets, as the hasher
does. A video's parts are folded in memory and their offsets stay uncommitted until the video's
decision is delivered: a crash or a rebalance replays the whole video from its first part, never
decides on its tail alone.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

import topics
from workers.ops import metrics
from workers.uploads import video_evidence
from workers.uploads.decisions import DecisionCache, decision_message, sha256_of
from workers.errors import MediaError
from workers.uploads.hasher import EARLY_BLOCK_KEY
from workers.bank.store import POLICY
from workers.stream.history_writer import HistoryWriter
from workers.stream.matcher_path import MatcherPath
from workers.index.matching import BankIndex
from workers.stream.messages import Source, encode, parse_json
from workers.stream.offsets import Cell
from workers.policy import decide
from workers.policy.provenance import BANK as PROVENANCE_BANK, ProvenanceRules, apply as provenance_apply
from workers.settings import Settings
from workers.signals import SignalValue

log = logging.getLogger("vigil.matcher")
GROUP = "vigil-matcher"
FINISHED_MEMORY = 10_000  # videos recently decided: late parts from a second hasher are ignored


def build_decision(event: dict[str, Any], index: BankIndex, worker: str,
                   rules: ProvenanceRules | None = None) -> dict[str, Any]:
    """A single-part hashes message (a still image) to its decision."""
    t0 = time.perf_counter()
    decision, evidence = decide(index.search([SignalValue.from_json(s) for s in event["signals"]]))
    decision, evidence_json = _with_provenance(decision, [m.to_json() for m in evidence], event, rules)
    return decision_message(event, decision, evidence_json, [], index, worker, time.perf_counter() - t0)


def _with_provenance(decision: str, evidence: list[dict[str, Any]], event: dict[str, Any],
                     rules: ProvenanceRules | None) -> tuple[str, list[dict[str, Any]]]:
    """The provenance rules folded in after the banks (policy.provenance.apply): a block bank
    match still wins, and the rules' evidence follows the banks'."""
    if rules is None or "provenance" not in event:
        return decision, evidence
    decision, evidence = provenance_apply(decision, evidence, event["provenance"], rules)
    for e in evidence:
        if e.get("bank") == PROVENANCE_BANK:
            metrics.PROVENANCE_RULES.labels(e["entry_id"].split(":")[0], e["action"]).inc()
    return decision, evidence


@dataclass
class OpenVideo:
    """A video being decided: its evidence so far and every offset that carried a part of it."""

    tp: tuple[str, int]
    state: dict[str, Any] = field(default_factory=video_evidence.new_state)
    covers: list[Cell] = field(default_factory=list)
    parts: set[int] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    early_delivered: bool = False  # the early block is on the decisions topic
    closed: bool = False  # the final part has come


class UploadMatcher(MatcherPath):
    """One consumer of moderation.hashes in the matcher process."""

    topic = topics.HASHES

    def __init__(self, settings: Settings, name: str, index: BankIndex, lock: threading.Lock,
                 cache: DecisionCache | None, redis_client: Any):
        super().__init__(settings, name, index, lock, GROUP)
        self.cache = cache
        self.redis = redis_client
        self.videos: dict[str, OpenVideo] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()
        self.rules = ProvenanceRules.from_settings(settings)
        self.rules_version = -1  # the bank version the stored provenance policy was last read at
        self.rules_retry_at = 0.0
        self.history = HistoryWriter(self.producer)  # issue 17: the hash history for rescans

    def _turn(self) -> None:
        for msg in self._messages():
            self._handle(msg)
        if self.delivery.serve(self.consumer):
            self._expire()

    def _settle(self, timeout_s: float) -> None:
        remaining = self.producer.flush(timeout_s)
        if remaining:
            log.error("undelivered decisions; their offsets stay uncommitted", extra={"count": remaining})

    # -- one message ------------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        metrics.EVENTS.labels("matcher", topics.HASHES).inc()
        tp = (msg.topic(), msg.partition())
        cell = self.tracker.started(tp[0], tp[1], msg.offset())
        ts_type, ts = msg.timestamp()
        src = Source(tp[0], tp[1], msg.offset(), ts if ts_type else None, msg.key(), msg.value())
        event = None
        try:
            event = parse_json(msg.value(), "hashes", self.settings.max_message_bytes)
            self.history.saw(event)
            if event["part"] == 0 and event["final"]:
                with self.lock:
                    rules = self._current_rules()
                    decision = build_decision(event, self.index, self.name, rules)
                self._cache(sha256_of(event), decision, rules)
                self._send(decision, [(tp, cell)])
            else:
                self._video_part(event, tp, cell)
        except MediaError as exc:
            self._dead(src, exc.code, exc.message, event, [(tp, cell)])
        except Exception as exc:  # a bug must not stop the worker or lose the event
            log.exception("internal error", extra={"event_id": (event or {}).get("event_id")})
            run = self.videos.pop(event["event_id"], None) if isinstance(event, dict) else None
            self._dead(src, "internal_error", f"{type(exc).__name__}: {exc}", event,
                       (run.covers if run else []) + [(tp, cell)])

    def _video_part(self, event: dict[str, Any], tp: tuple[str, int], cell: Cell) -> None:
        eid = event["event_id"]
        if eid in self.finished:  # a second hasher's late copy of a video already decided
            self.tracker.done(tp, cell)
            return
        run = self.videos.get(eid)
        if run is None:
            run = self.videos[eid] = OpenVideo(tp)
            run.state["sha256"] = sha256_of(event)
        run.covers.append((tp, cell))
        run.last_seen = time.monotonic()
        if event["part"] in run.parts and not event["final"]:
            return  # a hasher's replay resends parts already folded
        run.parts.add(event["part"])
        if event["final"]:
            run.closed = True
        if run.state["decided"]:  # blocked early: the final part only closes the video
            self._close_if_done(eid, run)
            return
        with self.lock:
            t0 = time.perf_counter()
            rules = self._current_rules()
            signals = [SignalValue.from_json(v) for v in event["signals"]]
            video_evidence.fold(run.state, signals, self.index.search(signals), self.index)
            decision, evidence, notes = video_evidence.verdict(run.state, self.index, event["final"])
            match_s = time.perf_counter() - t0
            if not event["final"] and decision != "block":
                return
            evidence_json = [{**m.to_json(), **video_evidence.percents(run.state, self.index, m)} for m in evidence]
            if event["final"]:  # provenance comes with the final part; an early block needs none
                decision, evidence_json = _with_provenance(decision, evidence_json, event, rules)
            out = decision_message(event, decision, evidence_json, notes, self.index, self.name, match_s)
        if event["final"]:
            self._cache(run.state["sha256"], out, rules)
            self._finish(eid)
            self._send(out, run.covers)
            return
        run.state["decided"] = decision
        out["notes"].append(f"blocked after {len(run.state['frames'])} sampled frames, before the end of the video")
        self._mark_early_block(eid)
        self._send(out, [], then=lambda: self._early_delivered(eid, run))

    def _early_delivered(self, eid: str, run: OpenVideo) -> None:
        run.early_delivered = True
        self._close_if_done(eid, run)

    def _close_if_done(self, eid: str, run: OpenVideo) -> None:
        """An early-blocked video's offsets complete once both its block is delivered and its
        final part has come (a replay before then re-decides it from the first part)."""
        if run.closed and run.early_delivered and self.videos.get(eid) is run:
            self._finish(eid)
            for tp, cell in run.covers:
                self.tracker.done(tp, cell)

    def _finish(self, eid: str) -> None:
        self.videos.pop(eid, None)
        self.finished[eid] = None
        while len(self.finished) > FINISHED_MEMORY:
            self.finished.popitem(last=False)

    def _expire(self) -> None:
        """Videos whose parts stopped coming: dead-lettered, so the partition's offsets move on."""
        cutoff = time.monotonic() - self.settings.video_part_timeout_s
        for eid, run in [(e, r) for e, r in self.videos.items() if r.last_seen < cutoff]:
            if run.state["decided"]:  # its block is out; only the tail is missing
                run.closed = True
                self._close_if_done(eid, run)
                continue
            self._finish(eid)
            src = Source(run.tp[0], run.tp[1], run.covers[-1][1][0], None, None, None)
            self._dead(src, "incomplete_video", f"{len(run.parts)} parts came, then none for "
                       f"{self.settings.video_part_timeout_s:.0f} s and no final part",
                       {"event_id": eid, "content_id": None}, run.covers)

    # -- outputs ----------------------------------------------------------------------------------
    def _send(self, decision: dict[str, Any], covers: list[Cell], then: Any = None) -> None:
        self.delivery.send(topics.DECISIONS, decision["content_id"].encode(), encode(decision), covers, then)
        self.history.decided(decision)
        metrics.observe_decision(decision)
        log.info("decided", extra={"event_id": decision["event_id"], "content_id": decision["content_id"],
                                   "decision": decision["decision"], "matches": len(decision["matches"]),
                                   "latency_ms": decision["latency_ms"]["total"]})

    def _cache(self, sha256: str | None, decision: dict[str, Any], rules: ProvenanceRules) -> None:
        if sha256 and self.cache is not None:
            self.cache.put(sha256, decision, rules)

    def _current_rules(self) -> ProvenanceRules:
        """The provenance rules, with the policy stored in Redis re-read whenever the bank version
        moved (a `vigil policy provenance` change bumps it). Called under the index lock, so the
        version a decision states is the one its rules were read at. If Redis cannot be read, the
        last rules stand and the read is tried again on the next decision."""
        version = self.index.version
        if version != self.rules_version and self.redis is not None and time.monotonic() >= self.rules_retry_at:
            try:
                raw = self.redis.hget(POLICY, "provenance")
                self.rules = ProvenanceRules.from_settings(self.settings, json.loads(raw) if raw else None)
                self.rules_version = version
            except Exception as exc:  # Redis down, or a stored policy this version cannot read
                self.rules_retry_at = time.monotonic() + 5.0  # decisions do not wait on Redis meanwhile
                log.warning("cannot read the stored provenance policy; the last rules stand",
                            extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        return self.rules

    def _mark_early_block(self, event_id: str) -> None:
        """Tells the hasher it may stop decoding this video."""
        try:
            self.redis.set(EARLY_BLOCK_KEY.format(event_id=event_id), "1", ex=3600)
        except Exception as exc:  # the hasher then decodes the rest; the decision stands
            log.warning("cannot mark early block in redis", extra={"event_id": event_id, "error": str(exc)})

    # -- group membership -------------------------------------------------------------------------
    def _revoked(self, partitions: list[int]) -> None:
        """Open videos are forgotten: the next owner replays each whole, from its first part."""
        for eid in [e for e, r in self.videos.items() if r.tp[1] in partitions]:
            del self.videos[eid]
