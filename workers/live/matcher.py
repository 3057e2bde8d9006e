"""The matcher's live path, on confluent-kafka: live frame hashes in, at most one review and one
block per stream session out, and each stream's state in a compacted changelog topic
(`moderation.live-state`) that this module writes and restores itself.

Why not faust, the stack's choice for per-stream state: under SIGKILL its consumer dropped
fetched messages around rebalances without acking them, and restored tables only up to the
embedded broker's trailing end offset. Guards for each fault (kept in git history) still left the
live chaos test failing about 1 run in 12 here and twice in CI: blocks missed, summaries short.

Each frame's effects happen in one order: its decisions are delivered, then its stream's state is
written to the changelog, then its offset may be committed. A crash at any point replays the
frame against a state that has not seen it (the same decision again, with the same event_id,
which downstream deduplication removes) or against one that has (`live.is_replay`: skipped). No
block is lost and no frame is counted twice.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

import topics
from workers.live import streams as live
from workers.ops import metrics
from workers.errors import MediaError
from workers.stream.kafka import base_config
from workers.ops.logs import now_ms
from workers.stream.history_writer import HistoryWriter
from workers.stream.matcher_path import MatcherPath
from workers.index.matching import BankIndex
from workers.stream.messages import Source, encode, parse_json
from workers.stream.offsets import consumer_error
from workers.settings import Settings
from workers.signals import SignalValue

log = logging.getLogger("vigil.matcher")
GROUP = "vigil-matcher-live"
# Written to each changelog partition before it is read back: everything before it is the state.
# An end offset would do on Apache Kafka; the embedded broker's trails the log (see restore_states).
BARRIER_KEY = b"\x00vigil-restore-barrier"
SWEEP_EVERY_S = 5.0

Streams = dict[str, dict[str, Any]]  # stream_id -> live state (workers/live/streams.py), one partition's


def restore_states(settings: Settings, producer: Producer, partitions: list[int],
                   timeout_s: float = 60.0) -> dict[int, Streams]:
    """Every stream's last state on these changelog partitions. A barrier record is written to each
    partition and the log read from its start up to that record, so the read is exact whatever
    end offset the broker reports (tansu 0.6 reports a batch's first offset + 1, which trails the
    log and rolled state back a frame when faust restored up to it)."""
    states: dict[int, Streams] = {p: {} for p in partitions}
    if not partitions:
        return states
    token = uuid.uuid4().hex.encode()
    reader = Consumer({**base_config(settings), "group.id": f"vigil-live-restore-{token.decode()}",
                       "enable.auto.commit": False, "enable.partition.eof": False,
                       "fetch.wait.max.ms": min(100, settings.fetch_wait())})
    try:
        reader.assign([TopicPartition(topics.LIVE_STATE, p, OFFSET_BEGINNING) for p in partitions])
        for p in partitions:
            producer.produce(topics.LIVE_STATE, key=BARRIER_KEY, value=token, partition=p)
        if producer.flush(timeout_s):
            raise RuntimeError(f"cannot write to {topics.LIVE_STATE} within {timeout_s:.0f} s: is the broker up, "
                               "and does the topic exist? (`vigil topics create` makes it)")
        waiting = set(partitions)
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topics.LIVE_STATE} partitions {sorted(waiting)} not read back within "
                                   f"{timeout_s:.0f} s")
            for msg in reader.consume(num_messages=1000, timeout=0.2):
                if consumer_error(msg):
                    continue
                p, key, value = msg.partition(), msg.key(), msg.value()
                if key == BARRIER_KEY:
                    if value == token:
                        waiting.discard(p)
                elif p in waiting and key is not None:
                    sid = key.decode("utf-8", "replace")
                    if value is None:  # deleted (an expired tombstone)
                        states[p].pop(sid, None)
                    else:
                        states[p][sid] = json.loads(value)
    finally:
        reader.close()
    return states


@dataclass
class StateWrite:
    """A frame's new stream state, written once the frame's `outstanding` decisions are delivered."""

    tp: tuple[str, int]
    cell: list
    stream_id: str
    value: bytes
    outstanding: int


class OutputsFirst:
    """Per partition, state writes in frame order, each held until its frame's decisions (and every
    earlier frame's) are delivered. A stream's state must never say a frame was folded in while
    the block that frame raised could still be lost in a crash."""

    def __init__(self) -> None:
        self.queues: dict[int, deque[StateWrite]] = {}

    def add(self, write: StateWrite) -> list[StateWrite]:
        self.queues.setdefault(write.tp[1], deque()).append(write)
        return self.ready(write.tp[1])

    def delivered(self, write: StateWrite) -> list[StateWrite]:
        write.outstanding -= 1
        return self.ready(write.tp[1])

    def ready(self, partition: int) -> list[StateWrite]:
        queue, out = self.queues.get(partition), []
        while queue and queue[0].outstanding <= 0:
            out.append(queue.popleft())
        return out

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self.queues.pop(p, None)


class LiveMatcher(MatcherPath):
    """One consumer of moderation.live-hashes in the matcher process. It owns the state of the
    streams on its partitions."""

    topic = topics.LIVE_HASHES

    def __init__(self, settings: Settings, name: str, index: BankIndex, lock: threading.Lock):
        super().__init__(settings, name, index, lock, GROUP, **{"linger.ms": 0})
        self.writes = OutputsFirst()
        self.streams: dict[int, Streams] = {}
        self.to_restore: set[int] = set()
        self._swept = time.monotonic()
        self.history = HistoryWriter(self.producer, settings.history_live_every)  # issue 17

    def _turn(self) -> None:
        for msg in self._messages():
            if self.to_restore:  # assigned in the poll that returned it: restore before folding
                self._restore()
            self._handle(msg)
        self.delivery.serve(self.consumer)
        if time.monotonic() - self._swept > SWEEP_EVERY_S:
            self._sweep()

    # -- one frame --------------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        metrics.EVENTS.labels("matcher", topics.LIVE_HASHES).inc()
        tp, offset = (msg.topic(), msg.partition()), msg.offset()
        cell = self.tracker.started(tp[0], tp[1], offset)
        src = Source(tp[0], tp[1], offset, None, msg.key(), msg.value())
        try:
            frame = parse_json(msg.value(), "live_hashes", self.settings.max_message_bytes)
        except MediaError as exc:
            self._dead(src, exc.code, exc.message, None, [(tp, cell)])
            return
        streams = self.streams.setdefault(tp[1], {})
        try:
            outs = self.step(streams, frame, tp[1], offset)
        except Exception as exc:  # a bug must not stop the live path or lose the frame silently
            log.exception("internal error", extra={"stream_id": frame["stream_id"], "seq": frame["seq"]})
            self._dead(src, "internal_error", f"{type(exc).__name__}: {exc}", frame, [(tp, cell)])
            return
        if outs is None:  # a replay: the state has it already
            self.tracker.done(tp, cell)
            return
        sid = frame["stream_id"]
        write = StateWrite(tp, cell, sid, encode(streams[sid]), len(outs))
        for out in outs:
            self.delivery.send(topics.DECISIONS, out["content_id"].encode(), encode(out), [],
                               then=lambda: self._write(self.writes.delivered(write)))
            metrics.observe_decision(out)
        self._write(self.writes.add(write))

    def step(self, streams: Streams, frame: dict[str, Any], partition: int, offset: int) -> list[dict] | None:
        """Fold one frame into its stream's state: the decisions to publish (0, 1 or 2), or None
        for a frame this state has already counted (delivered again, hashed again, or from
        before the end of a stream that has ended)."""
        sid = frame["stream_id"]
        state = streams.get(sid)
        if live.is_replay(state, partition, offset) or live.is_stale(state, frame["captured_at_ms"]) or \
                (not frame["end_of_stream"] and live.is_rehash(state, frame["seq"], frame["captured_at_ms"])):
            metrics.LIVE_REPLAYS.inc()
            return None
        if state is None or "ended_at_ms" in state:  # a new stream, or a new session after an end
            state = live.new_state(frame["captured_at_ms"])
        state["at"], state["seen_at_ms"] = [partition, offset], now_ms()
        out = []
        if frame["signals"]:
            t0 = time.perf_counter()
            with self.lock:
                matches = self.index.search([SignalValue.from_json(v) for v in frame["signals"]])
            metrics.STAGE_DURATION.labels("match").observe(time.perf_counter() - t0)
            status, evidence = live.step(state, sid, frame["seq"], frame["captured_at_ms"], frame.get("skipped", 0),
                                         matches, self.index.banks)
            if status:
                out.append(self._decision(sid, state, status, evidence, frame))
            self.history.live_frame(frame, state["status"], self.index.version, now_ms())
        if frame["end_of_stream"]:
            out.append(self._decision(sid, state, state["status"], [], frame, summary=True))
            streams[sid] = live.tombstone(state, frame["captured_at_ms"], now_ms())
        else:
            streams[sid] = state
        return out

    def _decision(self, sid: str, state: dict[str, Any], status: str, evidence: list[dict],
                  frame: dict[str, Any], summary: bool = False) -> dict[str, Any]:
        decided = now_ms()
        out: dict[str, Any] = {
            "schema_version": topics.SCHEMA_VERSION,
            "event_id": live.event_id(sid, state, "end" if summary else status),
            "content_id": sid, "stream_id": sid, "source": "live", "media_type": "image",
            "decision": status, "matches": evidence, "bank_version": self.index.version,
            "latency_ms": {**frame["hasher"]["latency_ms"], "total": max(0, decided - frame["captured_at_ms"])},
            "submitted_at_ms": frame["captured_at_ms"], "decided_at_ms": decided, "worker": self.name,
        }
        if summary:
            out["summary"] = {"frames": state["frames"], "matched_frames": state["matched_frames"],
                              "skipped_frames": state["skipped"], "final_status": state["status"],
                              "first_match_seq": (state["first_match"] or {}).get("seq"),
                              "last_match_seq": (state["last_match"] or {}).get("seq")}
        log.info("live decision", extra={"event_id": out["event_id"], "stream_id": sid, "decision": status,
                                         "seq": frame["seq"], "summary": summary})
        return out

    # -- state ------------------------------------------------------------------------------------
    def _write(self, ready: list[StateWrite]) -> None:
        """Changelog writes whose frames' decisions are out; each completes its frame's offset."""
        for w in ready:
            self.delivery.send(topics.LIVE_STATE, w.stream_id.encode(), w.value, [(w.tp, w.cell)],
                               partition=w.tp[1])

    def _sweep(self) -> None:
        """Forget tombstones past their TTL and streams idle past theirs (deleted from the changelog
        too), and count live streams."""
        self._swept = time.monotonic()
        now, active = now_ms(), 0
        for p, streams in self.streams.items():
            for sid, state in list(streams.items()):
                if live.expired(state, now):
                    if "ended_at_ms" not in state:
                        log.warning("live stream idle without an end; forgotten, with no summary",
                                    extra={"stream_id": sid, "frames": state["frames"], "status": state["status"]})
                    del streams[sid]
                    self.delivery.send(topics.LIVE_STATE, sid.encode(), None, [], partition=p)
                else:
                    active += "ended_at_ms" not in state
        metrics.LIVE_ACTIVE.set(active)

    def _restore(self) -> None:
        partitions = sorted(self.to_restore)
        t0 = time.monotonic()
        restored = restore_states(self.settings, self.producer, partitions)
        self.streams.update(restored)
        self.to_restore.clear()
        log.info("live state restored", extra={"partitions": partitions, "streams": sum(map(len, restored.values())),
                                               "seconds": round(time.monotonic() - t0, 3)})

    def _settle(self, timeout_s: float) -> None:
        """Deliver every decision and every state write they release (each delivery can release more)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.producer.flush(max(0.0, deadline - time.monotonic())) == 0:
                if not self.writes.pending():
                    return
                time.sleep(0.01)  # a decision's delivery is being retried
        log.error("undelivered live outputs; their offsets stay uncommitted",
                  extra={"messages": len(self.producer), "state_writes": self.writes.pending()})

    # -- group membership -------------------------------------------------------------------------
    def _assigned(self, partitions: list[int]) -> None:
        self.to_restore.update(partitions)

    def _revoked(self, partitions: list[int]) -> None:
        """The partitions' next owner restores their streams from the changelog."""
        self.writes.forget(partitions)
        for p in partitions:
            self.streams.pop(p, None)
            self.to_restore.discard(p)
