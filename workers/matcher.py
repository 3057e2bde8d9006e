"""The matcher (faust-streaming): keeps an index of the Redis bank in memory, in step with the
bank's change stream, and turns each content's signals into a decision with its evidence."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import redis

import topics
from workers import faust_transport, live, logs, metrics, video_evidence
from workers.hasher import EARLY_BLOCK_KEY
from workers.bank.store import BankStore
from workers.errors import MediaError
from workers.logs import now_ms
from workers.decisions import DecisionCache, decision_message, sha256_of
from workers.matching import BankIndex
from workers.messages import Source, dead_letter, encode, parse_json
from workers.policy import decide
from workers.security import faust_broker_options
from workers.settings import Settings
from workers.signals import SignalValue

log = logging.getLogger("vigil.matcher")
GROUP = "vigil-matcher"


def build_decision(event: dict[str, Any], index: BankIndex, worker: str) -> dict[str, Any]:
    """A single-part hashes message (a still image) to its decision."""
    t0 = time.perf_counter()
    decision, evidence = decide(index.search([SignalValue.from_json(s) for s in event["signals"]]))
    return decision_message(event, decision, [m.to_json() for m in evidence], [], index, worker,
                            time.perf_counter() - t0)


class Matcher:
    """Owns the faust app, the bank index and the bank-sync task."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.worker_name("matcher")
        self.index = BankIndex(settings)
        self.store = BankStore.from_url(settings.redis, socket_timeout=5, socket_connect_timeout=5,
                                        health_check_interval=10) if settings.redis else None
        if self.store is None:
            raise ValueError("no Redis URL: set VIGIL_REDIS or --redis, or use `vigil up`")
        self.cache = DecisionCache(self.store.r, settings.decision_cache_ttl_s) \
            if settings.decision_cache_ttl_s > 0 else None
        self.loaded = asyncio.Event()
        self.health = metrics.Health()
        self.health.checks["bank_loaded"] = lambda: self.index.loaded
        self.health.checks["bank_fresh"] = lambda: time.time() - self.index.synced_at < settings.bank_stale_seconds
        self.health.checks["broker"] = lambda: self._assigned
        self._assigned = False
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s = self.settings
        faust_transport.set_fetch_wait_ms(s.fetch_wait())
        extra: dict[str, Any] = {}
        if s.embedded:
            extra.update(broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                         broker_max_poll_interval=6.0, broker_rebalance_timeout=6.0)
        app = faust.App(
            GROUP,
            broker=[f"{faust_transport.SCHEME}://{h}" for h in s.kafka.split(",")] if s.kafka else None,
            store="memory://",
            web_enabled=False,
            topic_partitions=s.partitions,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            datadir=f"{s.data_dir or '/tmp'}/vigil-matcher-{self.name}",
            **extra,
            **faust_broker_options(s.kafka_config),
        )
        hashes = app.topic(topics.HASHES, key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw", partitions=s.partitions)
        decisions = app.topic(topics.DECISIONS, key_serializer="raw", value_serializer="raw")
        dlq = app.topic(topics.DEAD_LETTER, key_serializer="raw", value_serializer="raw")

        # A video's parts, folded per event until it is decided (changelog-backed, like live state).
        video_parts = app.Table("video-parts", default=None, partitions=s.partitions)

        @app.agent(hashes, name="match")
        async def match(stream: faust.StreamT) -> None:
            await self.loaded.wait()
            async for event in stream.events():
                self._assigned = True
                metrics.EVENTS.labels("matcher", topics.HASHES).inc()
                msg = event.message
                src = Source(msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000) if msg.timestamp else None,
                             msg.key, msg.value)
                try:
                    parsed = parse_json(msg.value, "hashes", s.max_message_bytes)
                except MediaError as exc:
                    metrics.DEAD_LETTERS.labels("matcher", exc.code).inc()
                    await dlq.send(key=msg.key, value=encode(dead_letter(src, exc.code, exc.message, "matcher",
                                                                          self.name)))
                    continue
                if parsed["part"] == 0 and parsed["final"]:
                    decision = build_decision(parsed, self.index, self.name)
                    self._cache(sha256_of(parsed), decision)
                else:
                    decision = self.video_step(video_parts, parsed)
                    if decision is None:
                        continue
                t0 = time.perf_counter()
                await decisions.send(key=parsed["content_id"].encode(), value=encode(decision))
                metrics.STAGE_DURATION.labels("produce").observe(time.perf_counter() - t0)
                self._observe(decision)
                log.info("decided", extra={"event_id": parsed["event_id"], "content_id": parsed["content_id"],
                                           "decision": decision["decision"], "matches": len(decision["matches"]),
                                           "latency_ms": decision["latency_ms"]["total"]})

        live_hashes = app.topic(topics.LIVE_HASHES, key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw", partitions=s.partitions)
        # Per-stream state, changelog-backed: a restarted matcher recovers every stream's window
        # and status, so it never publishes a second block for the same stream.
        streams = app.Table("live-streams", default=None, partitions=s.partitions)

        @app.agent(live_hashes, name="live")
        async def live_frames(stream: faust.StreamT) -> None:
            await self.loaded.wait()
            async for event in stream.events():
                msg = event.message
                metrics.EVENTS.labels("matcher", topics.LIVE_HASHES).inc()
                try:
                    frame = parse_json(msg.value, "live_hashes", s.max_message_bytes)
                except MediaError as exc:
                    metrics.DEAD_LETTERS.labels("matcher", exc.code).inc()
                    src = Source(msg.topic, msg.partition, msg.offset, None, msg.key, msg.value)
                    await dlq.send(key=msg.key, value=encode(dead_letter(src, exc.code, exc.message, "matcher",
                                                                          self.name)))
                    continue
                for out in self.live_step(streams, frame):
                    await decisions.send(key=out["content_id"].encode(), value=encode(out))
                    self._observe(out)
                metrics.LIVE_ACTIVE.set(len(streams))

        @app.task
        async def bank_sync() -> None:
            await self._sync_forever()

        @app.on_partitions_assigned.connect
        async def assigned(_sender: Any, assigned: Any, **_: Any) -> None:
            self._assigned = True

        return app

    def video_step(self, parts: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one part of a video; the decision once it is certain (early block) or final."""
        eid = event["event_id"]
        state = parts.get(eid) or video_evidence.new_state()
        state["sha256"] = state.get("sha256") or sha256_of(event)
        if state["decided"]:  # blocked early: later parts only close the event
            if event["final"]:
                parts.pop(eid, None)
            return None
        t0 = time.perf_counter()
        signals = [SignalValue.from_json(v) for v in event["signals"]]
        video_evidence.fold(state, signals, self.index.search(signals), self.index)
        decision, evidence, notes = video_evidence.verdict(state, self.index, event["final"])
        match_s = time.perf_counter() - t0
        if not event["final"] and decision != "block":
            parts[eid] = state
            return None
        evidence_json = [{**m.to_json(), **video_evidence.percents(state, self.index, m)} for m in evidence]
        if not event["final"]:
            state["decided"] = decision
            parts[eid] = state
            notes.append(f"blocked after {len(state['frames'])} sampled frames, before the end of the video")
            try:
                self.store.r.set(EARLY_BLOCK_KEY.format(event_id=eid), "1", ex=3600)
            except Exception as exc:  # the hasher then decodes the rest; the decision stands
                log.warning("cannot mark early block in redis", extra={"event_id": eid, "error": str(exc)})
        else:
            parts.pop(eid, None)
        out = decision_message(event, decision, evidence_json, notes, self.index, self.name, match_s)
        if event["final"]:
            self._cache(state["sha256"], out)
        return out

    def _cache(self, sha256: str | None, decision: dict[str, Any]) -> None:
        if sha256 and self.cache is not None:
            self.cache.put(sha256, decision)

    def live_step(self, streams: Any, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """Fold one live frame into its stream's state; the decisions to publish (0, 1 or 2)."""
        sid = frame["stream_id"]
        state = streams.get(sid) or live.new_state(frame["captured_at_ms"])
        out = []
        if frame["signals"]:
            t0 = time.perf_counter()
            matches = self.index.search([SignalValue.from_json(v) for v in frame["signals"]])
            metrics.STAGE_DURATION.labels("match").observe(time.perf_counter() - t0)
            status, evidence = live.step(state, sid, frame["seq"], frame["captured_at_ms"], frame.get("skipped", 0),
                                         matches, self.index.banks)
            if status:
                out.append(self._live_decision(sid, state, status, evidence, frame))
        if frame["end_of_stream"]:
            out.append(self._live_decision(sid, state, state["status"], [], frame, summary=True))
            streams.pop(sid, None)
        else:
            streams[sid] = state
        return out

    def _live_decision(self, sid: str, state: dict[str, Any], status: str, evidence: list[dict],
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

    def _observe(self, decision: dict[str, Any]) -> None:
        if "summary" in decision:
            return  # an end-of-stream summary restates a status; it is not a new decision
        metrics.DECISIONS.labels(decision["source"], decision["decision"]).inc()
        metrics.DECISION_LATENCY.labels(decision["source"], decision["decision"]).observe(
            decision["latency_ms"]["total"] / 1000)

    async def _sync_forever(self) -> None:
        """Load the snapshot, then tail the change stream; reconnect with backoff if Redis goes away."""
        logs.setup(self.settings.log_level)  # faust set up its own logging when the worker started
        loop = asyncio.get_running_loop()
        backoff = 0.2
        block_ms = int(self.settings.bank_poll_seconds * 1000)
        while True:
            try:
                if not self.index.loaded:
                    await loop.run_in_executor(None, self.index.load, self.store)
                    self._publish_bank_metrics()
                    log.info("bank loaded", extra={"version": self.index.version, "entries": self.index.counts()})
                    self.loaded.set()
                changes = await loop.run_in_executor(None, self.store.read_changes, self.index.stream_id, block_ms)
                if changes and changes[0].version > self.index.version + 1 and \
                        (self.store.first_change_version() or 0) > self.index.version + 1:
                    log.warning("change stream trimmed past our version; reloading the snapshot")
                    self.index.loaded = False
                    continue
                self.index.apply(changes)
                if changes:
                    log.info("bank changed", extra={"version": self.index.version, "changes": len(changes)})
                self._publish_bank_metrics()
                backoff = 0.2
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("redis unavailable; matching continues from memory", extra={"error": str(exc),
                                                                                       "retry_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _publish_bank_metrics(self) -> None:
        metrics.BANK_VERSION.set(self.index.version)
        metrics.BANK_SYNC.set(self.index.synced_at)
        for signal, n in self.index.counts().items():
            metrics.BANK_ENTRIES.labels(signal).set(n)

    def run(self) -> None:
        server = metrics.serve(self.settings.metrics_host, self.settings.metrics_port, self.health)
        log.info("matcher started", extra={"worker": self.name, "metrics": f"http://{self.settings.metrics_host}:"
                                           f"{server.server_address[1]}/metrics", "kafka": self.settings.kafka})
        worker = faust.Worker(self.app, loglevel="WARN", quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        finally:
            server.shutdown()
