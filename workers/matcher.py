"""The matcher: keeps an index of the Redis bank in memory, in step with the bank's change stream,
and turns signals into decisions with their evidence.

Two consumers share the index: uploads (`workers/upload_matcher.py`, confluent-kafka with its own
offset tracking) and live frames (faust-streaming, whose changelog-backed table keeps each
stream's window across restarts). Separate consumers also keep an upload backlog from delaying
live decisions."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import faust
import redis

import topics
from workers import faust_transport, live, logs, metrics, mih_kernel
from workers.bank.store import BankStore
from workers.errors import MediaError
from workers.logs import now_ms
from workers.decisions import DecisionCache
from workers.matching import BankIndex, IndexRebuilder
from workers.messages import Source, dead_letter, encode, parse_json
from workers.upload_matcher import UploadMatcher
from workers.security import faust_broker_options
from workers.settings import Settings
from workers.signals import SignalValue

log = logging.getLogger("vigil.matcher")
LIVE_GROUP = "vigil-matcher-live"  # faust app id: changelog vigil-matcher-live-streams-changelog


class Matcher:
    """Owns the bank index and its sync task, the faust app (live) and the upload consumer thread."""

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
        self.index_lock = threading.Lock()  # the upload thread searches while the loop applies changes
        self.rebuilds = IndexRebuilder(self.index, self.store, self.index_lock)
        self.uploads = UploadMatcher(settings, self.name, self.index, self.index_lock, self.cache, self.store.r)
        self.stop_uploads = threading.Event()
        self.health = metrics.Health()
        self.health.checks["bank_loaded"] = lambda: self.index.loaded
        self.health.checks["bank_fresh"] = lambda: time.time() - self.index.synced_at < settings.bank_stale_seconds
        # both consumers in their groups: uploads (confluent-kafka) and live frames (faust)
        self.health.checks["broker"] = lambda: self._assigned and self.uploads.assigned
        self._assigned = False
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s = self.settings
        faust_transport.set_fetch_wait_ms(s.fetch_wait())
        faust_transport.set_embedded(s.embedded)
        extra: dict[str, Any] = {}
        if s.embedded:
            extra.update(faust_transport.EMBEDDED_OPTIONS)
        app = faust.App(
            LIVE_GROUP,
            broker=[f"{faust_transport.SCHEME}://{h}" for h in s.kafka.split(",")] if s.kafka else None,
            store="memory://",
            web_enabled=False,
            topic_partitions=s.partitions,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # The check guards RocksDB files left from an older run; the store here is memory, rebuilt
            # from the changelog at start. With the embedded broker it fired on rebalances after a
            # SIGKILL (tansu's trailing end offset, see faust_transport) and crashed every matcher
            # (tests/test_chaos.py).
            recovery_consistency_check=False,
            datadir=f"{s.data_dir or '/tmp'}/vigil-matcher-{self.name}",
            **extra,
            **faust_broker_options(s.kafka_config),
        )
        decisions = app.topic(topics.DECISIONS, key_serializer="raw", value_serializer="raw")
        dlq = app.topic(topics.DEAD_LETTER, key_serializer="raw", value_serializer="raw")

        live_hashes = app.topic(topics.LIVE_HASHES, key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw", partitions=s.partitions)
        # Per-stream state, changelog-backed: a restarted matcher recovers every stream's window
        # and status, so it never publishes a second block for the same stream.
        streams = app.Table("streams", default=None, partitions=s.partitions)
        gaps = faust_transport.GapGuard()
        swept = [time.monotonic()]

        async def _start_offset(tp: Any) -> int | None:
            """Where the group resumes a partition: its commit, else (never committed) the log's start."""
            committed = app.consumer.committed_offset(tp)
            return committed if committed is not None else (await app.consumer.earliest_offsets(tp)).get(tp)

        @app.agent(live_hashes, name="live")
        async def live_frames(stream: faust.StreamT) -> None:
            await self.loaded.wait()
            async for event in stream.events():
                msg = event.message
                want = gaps.expected.get(msg.tp)
                if want is None:  # a partition's first message since the assignment
                    want = await _start_offset(msg.tp)
                verdict = gaps.check(msg.tp, msg.offset, start=want)
                if verdict in ("seek", "wait"):
                    faust_transport.refetch(msg)
                    if verdict == "seek":
                        log.warning("live-hashes offsets skipped by the consumer; fetching them again",
                                    extra={"partition": msg.partition, "from": want, "at": msg.offset})
                        metrics.LIVE_REFETCHES.inc()
                        await app.consumer.seek(msg.tp, want)
                    continue
                if verdict == "gap":
                    log.error("live-hashes offsets missing from the log; going on without them",
                              extra={"partition": msg.partition, "from": want, "at": msg.offset})
                metrics.EVENTS.labels("matcher", topics.LIVE_HASHES).inc()
                try:
                    frame = parse_json(msg.value, "live_hashes", s.max_message_bytes)
                except MediaError as exc:
                    metrics.DEAD_LETTERS.labels("matcher", exc.code).inc()
                    src = Source(msg.topic, msg.partition, msg.offset, None, msg.key, msg.value)
                    await dlq.send(key=msg.key, value=encode(dead_letter(src, exc.code, exc.message, "matcher",
                                                                          self.name)))
                    continue
                for out in self.live_step(streams, frame, msg.partition, msg.offset):
                    await decisions.send(key=out["content_id"].encode(), value=encode(out))
                    metrics.observe_decision(out)
                if time.monotonic() - swept[0] > 5:
                    swept[0] = time.monotonic()
                    self._sweep_streams(streams, msg.partition)

        @app.timer(interval=5.0)
        async def nudge_idle_partitions() -> None:
            """A partition silent for 30 s is resumed and sought to its committed offset: harmless
            when it is idle (replays are recognised), and it restarts one faust stopped fetching."""
            if app.rebalancing or not self.loaded.is_set():
                return
            assigned = [tp for tp in app.consumer.assignment() if tp.topic == topics.LIVE_HASHES]
            for tp in gaps.idle(assigned, after_s=30.0):
                committed = app.consumer.committed_offset(tp)
                app.consumer.resume_partitions({tp})
                if committed is not None:
                    await app.consumer.seek(tp, committed)

        @app.task
        async def bank_sync() -> None:
            await self._sync_forever()

        @app.on_partitions_assigned.connect
        async def assigned(_sender: Any, assigned: Any, **_: Any) -> None:
            gaps.reset()
            self._assigned = True

        return app

    def live_step(self, streams: Any, frame: dict[str, Any], partition: int, offset: int) -> list[dict[str, Any]]:
        """Fold one live frame into its stream's state; the decisions to publish (0, 1 or 2).
        A replayed message changes nothing, so summaries count each frame once."""
        sid = frame["stream_id"]
        state = streams.get(sid)
        if live.is_replay(state, partition, offset) or live.is_stale(state, frame["captured_at_ms"]):
            metrics.LIVE_REPLAYS.inc()
            return []
        if state is None or "ended_at_ms" in state:  # a new stream, or one that ended long enough ago
            state = live.new_state(frame["captured_at_ms"])
        state["at"] = [partition, offset]
        out = []
        if frame["signals"]:
            t0 = time.perf_counter()
            with self.index_lock:
                matches = self.index.search([SignalValue.from_json(v) for v in frame["signals"]])
            metrics.STAGE_DURATION.labels("match").observe(time.perf_counter() - t0)
            status, evidence = live.step(state, sid, frame["seq"], frame["captured_at_ms"], frame.get("skipped", 0),
                                         matches, self.index.banks)
            if status:
                out.append(self._live_decision(sid, state, status, evidence, frame))
        if frame["end_of_stream"]:
            out.append(self._live_decision(sid, state, state["status"], [], frame, summary=True))
            streams[sid] = live.tombstone(state, frame["captured_at_ms"], now_ms())
        else:
            streams[sid] = state
        return out

    @staticmethod
    def _sweep_streams(streams: Any, partition: int) -> None:
        """Delete this partition's expired tombstones (in the event's context, so the deletes go to
        the right changelog partition) and count the streams still live."""
        now, live_streams = now_ms(), 0
        for sid, state in list(streams.items()):
            if live.expired(state, partition, now):
                del streams[sid]
            live_streams += "ended_at_ms" not in state
        metrics.LIVE_ACTIVE.set(live_streams)

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

    async def _sync_forever(self) -> None:
        """Load the snapshot, then tail the change stream; reconnect with backoff if Redis goes away."""
        logs.setup(self.settings.log_level)  # faust set up its own logging when the worker started
        loop = asyncio.get_running_loop()
        backoff = 0.2
        block_ms = int(self.settings.bank_poll_seconds * 1000)
        while True:
            try:
                if not self.index.loaded:
                    # Not under the lock: load builds a new index aside and swaps it in when
                    # complete, so searches go on (from the old index) while it reads Redis.
                    await loop.run_in_executor(None, self.index.load, self.store)
                    self._publish_bank_metrics()
                    log.info("bank loaded", extra={"version": self.index.version, "entries": self.index.counts()})
                    self.loaded.set()
                after = self.index.stream_id
                changes = await loop.run_in_executor(None, self.store.read_changes, after, block_ms)
                if changes and changes[0].version > self.index.version + 1 and \
                        (self.store.first_change_version() or 0) > self.index.version + 1:
                    log.warning("change stream trimmed past our version; reloading the snapshot")
                    self.index.loaded = False
                    continue
                with self.index_lock:
                    self.index.apply(changes, after)  # dropped if a rebuild swapped in meanwhile
                if changes:
                    log.info("bank changed", extra={"version": self.index.version, "changes": len(changes)})
                self._publish_bank_metrics()
                self.rebuilds.maybe_start()
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
        mih_kernel.warm()  # compiled or loaded from numba's cache before the first search, not during it
        server = metrics.serve(self.settings.metrics_host, self.settings.metrics_port, self.health)
        log.info("matcher started", extra={"worker": self.name, "metrics": f"http://{self.settings.metrics_host}:"
                                           f"{server.server_address[1]}/metrics", "kafka": self.settings.kafka})
        uploads = threading.Thread(target=self.uploads.run, args=(self.stop_uploads,), name="uploads")
        uploads.start()
        worker = faust.Worker(self.app, loglevel="WARN", quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        finally:
            self.stop_uploads.set()  # finish, deliver and commit the upload path, then leave its group
            uploads.join(45)
            server.shutdown()
