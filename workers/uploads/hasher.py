"""The hasher: consumes upload events, reads and decodes the media, computes signals, and
publishes them (hashes only, never media) for the matcher.

The poll loop never blocks on work: media runs on a thread pool, partitions pause when too much
is in flight, and an offset is committed only after the output it covers has been delivered.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition

import topics
from workers.ops import metrics
from workers.bank.store import BankStore
from workers.index.video_near import VideoNearIndex
from workers.uploads.decisions import DecisionCache
from workers.errors import MediaError
from workers.signals.hashing import NearCheck, hash_media, hash_video
from workers.media.probe import media_kind, probe_limits
from workers.signals import file_digests, hash_bytes
from workers.signals.provenance import check_trust_anchors, read_provenance_file
from workers.stream.kafka import consumer_config, producer_config
from workers.ops.logs import now_ms
from workers.stream.offsets import Delivery, OffsetTracker, consumer_error, lag_stats_callback
from workers.media.fetch import iter_media, read_media, resolve_uri
from workers.stream.messages import Source, dead_letter, encode, parse_json
from workers.settings import Settings

log = logging.getLogger("vigil.hasher")
GROUP = "vigil-hasher"
EARLY_BLOCK_KEY = "vigil:early-block:{event_id}"  # set by the matcher, read by hashers


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


def process_upload(src: Source, settings: Settings, worker: str, emit: Callable[[Output], None] | None = None,
                   stop_early: Callable[[str], bool] | None = None, cache: DecisionCache | None = None,
                   near: NearCheck | None = None) -> Output:
    """One upload event to its output: hashes (the final part), or a dead letter saying why not.

    A video's earlier parts go out through `emit` as they are hashed, so the matcher can block
    before the end; `stop_early(event_id)` says the matcher already has, and decoding stops.
    `near` (VideoNearIndex.near_frames) turns on adaptive sampling: the seconds around a frame
    near a banked video are decoded densely (hash_video)."""
    event = None
    started_ms = now_ms()
    try:
        event = parse_json(src.value, "upload", settings.max_message_bytes)
        submitted = int(event.get("submitted_at_ms") or src.timestamp_ms or started_ms)
        t0 = time.perf_counter()
        path = resolve_uri(event["media_uri"], settings.media_roots)
        next(iter_media(path, settings.max_video_bytes, chunk=64), b"")  # a regular, non-empty file in the limit
        video = media_kind(path, probe_limits(settings)).kind == "video"  # the bytes decide, not the name
        if video:  # streamed: a video is never held in memory whole
            data, digests = b"", file_digests(path, settings.max_video_bytes)
        else:
            data = read_media(path, settings.max_media_bytes)
            digests = hash_bytes(data)
        stages = {"queue": max(0.0, (started_ms - submitted) / 1000), "fetch": time.perf_counter() - t0}
        if cache is not None:
            cached = cache.get(next(d.value for d in digests if d.signal == "sha256"))
            if cached is not None:
                return _from_cache(event, submitted, cached, stages, worker)
        if video:
            return _video(src, event, submitted, path, digests, stages, settings, worker, emit, stop_early, near)
        result = hash_media(data, settings, event.get("media_type"), digests=digests)
        del data
        stages.update(result.stage_seconds)
        metrics.FRAMES_HASHED.labels(result.media_type).inc(result.frames)
        metrics.observe_provenance(result.provenance)
        out = _hashes(event, submitted, worker, 0, True, result.signals, stages, result.media_type,
                      result.partial, result.notes, result.provenance)
        log.info("hashed", extra={"event_id": event["event_id"], "content_id": event["content_id"],
                                  "signals": len(result.signals), "ms": round(sum(stages.values()) * 1000, 1)})
        return out
    except MediaError as exc:
        return _dead(src, exc.code, exc.message, worker, event)
    except Exception as exc:  # a bug must not stop the worker or lose the event
        log.exception("internal error", extra=_ids(event))
        return _dead(src, "internal_error", f"{type(exc).__name__}: {exc}", worker, event)


def _from_cache(event: dict, submitted: int, cached: dict, stages: dict, worker: str) -> Output:
    """The same bytes were decided under the current bank version: that decision stands."""
    decided = now_ms()
    out = {"schema_version": topics.SCHEMA_VERSION, "event_id": event["event_id"], "content_id": event["content_id"],
           "source": "upload", "media_type": cached["media_type"], "decision": cached["decision"],
           "partial": False, "matches": cached["matches"], "bank_version": cached["bank_version"],
           "notes": [f"decided from the cache: these bytes were decided under bank version {cached['bank_version']}"],
           "latency_ms": {**{k: round(v * 1000, 3) for k, v in stages.items()}, "total": max(0, decided - submitted)},
           "submitted_at_ms": submitted, "decided_at_ms": decided, "worker": worker}
    if "provenance" in cached:
        out["provenance"] = cached["provenance"]
    if "media_uri" in event:
        out["media_uri"] = event["media_uri"]
    if "metadata" in event:
        out["metadata"] = event["metadata"]
    metrics.observe_decision(out)
    metrics.CACHE_HITS.inc()
    log.info("decided from cache", extra={"event_id": event["event_id"], "content_id": event["content_id"],
                                          "decision": out["decision"]})
    return Output(topics.DECISIONS, event["content_id"].encode(), encode(out))


def _video(src: Source, event: dict, submitted: int, path, digests: list, stages: dict, settings: Settings,
           worker: str, emit: Callable[[Output], None] | None, stop_early: Callable[[str], bool] | None,
           near: NearCheck | None = None) -> Output:
    provenance = None
    if settings.provenance_read:  # the container's manifest, where c2pa reads the format (MP4, MOV, AVI)
        t0 = time.perf_counter()
        provenance = read_provenance_file(path, settings.provenance_trust_anchors)
        stages["provenance"] = time.perf_counter() - t0
        metrics.observe_provenance(provenance)
    parts, sampling = hash_video(path, settings, near=near)
    index, pending, frames, notes = 0, list(digests), 0, []
    dense_frames, dense_windows = 0, set()
    for part in parts:
        for stage, seconds in part.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
        frames += part.frames
        if part.dense_windows:
            dense_frames += part.frames
            dense_windows.update(part.dense_windows)
        metrics.FRAMES_HASHED.labels("video").inc(part.frames)
        if pending and emit is not None:  # a part says partial when the file is known cut already
            early = [f"partial: {sampling.partial_reason}", *sampling.notes] if sampling.partial else []
            emit(_hashes(event, submitted, worker, index, False, pending, stages, "video", sampling.partial, early))
            index, pending = index + 1, []
        pending += part.signals
        if stop_early is not None and stop_early(event["event_id"]):
            notes.append(f"decoding stopped after {frames} frames: already blocked")
            break
    partial = sampling.partial and not notes
    if sampling.partial:
        notes.append(f"partial: {sampling.partial_reason}")
    notes.extend(sampling.notes)
    if frames == 0:
        notes.append("no frame could be sampled; decided on the file digests alone")
    if dense_frames:
        seconds = sum(b - a for a, b in dense_windows)
        notes.append(f"adaptive sampling: {dense_frames} frames from {seconds:.1f} s decoded densely "
                     f"around frames near a banked video")
        metrics.DENSE_FRAMES.inc(dense_frames)
    log.info("hashed video", extra={"event_id": event["event_id"], "content_id": event["content_id"],
                                    "frames": frames, "parts": index + 1, "partial": sampling.partial})
    return _hashes(event, submitted, worker, index, True, pending, stages, "video", partial, notes, provenance)


def _hashes(event: dict, submitted: int, worker: str, part: int, final: bool, signals: list, stages: dict,
            media_type: str, partial: bool, notes: list[str], provenance: dict | None = None) -> Output:
    if final:
        for stage, seconds in stages.items():
            metrics.STAGE_DURATION.labels(stage).observe(seconds)
    out = {
        "schema_version": topics.SCHEMA_VERSION,
        "event_id": event["event_id"],
        "content_id": event["content_id"],
        "source": "upload",
        "media_type": media_type,
        "submitted_at_ms": submitted,
        "part": part,
        "final": final,
        "partial": partial,
        "notes": notes,
        "signals": [sv.to_json() for sv in signals],
        "hasher": {"worker": worker, "latency_ms": {k: round(v * 1000, 3) for k, v in stages.items()}},
    }
    if provenance is not None:  # on the final part, which the decision is made from
        out["provenance"] = provenance
    if "media_uri" in event:  # for the review service, which shows and banks the media
        out["media_uri"] = event["media_uri"]
    if "metadata" in event:
        out["metadata"] = event["metadata"]
    return Output(topics.HASHES, event["content_id"].encode(), encode(out))


def _dead(src: Source, code: str, message: str, worker: str, event: dict | None) -> Output:
    metrics.DEAD_LETTERS.labels("hasher", code).inc()
    log.warning("dead letter", extra={"code": code, "reason": message, **_ids(event),
                                      "partition": src.partition, "offset": src.offset})
    return Output(topics.DEAD_LETTER, src.key, encode(dead_letter(src, code, message, "hasher", worker, event)))


def _ids(event: dict | None) -> dict:
    if not isinstance(event, dict):
        return {}
    return {"event_id": event.get("event_id"), "content_id": event.get("content_id")}


class Hasher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.worker_name("hasher")
        check_trust_anchors(settings.provenance_trust_anchors)  # a bad PEM path stops the worker here
        self.consumer = Consumer({**consumer_config(settings, GROUP), "stats_cb": lag_stats_callback(GROUP)})
        self.producer = Producer(producer_config(settings))
        self.pool = ThreadPoolExecutor(max(1, settings.hasher_threads), thread_name_prefix="hash")
        self.tracker = OffsetTracker()
        self.delivery = Delivery(self.producer, self.tracker)
        self.work: deque[tuple[Future, tuple[str, int], list]] = deque()
        self.paused: bool | None = False  # None: assigned, pause state to reset
        self.assigned: list[TopicPartition] = []
        self.stop_event = threading.Event()
        self.broker_ok = False
        self.health = metrics.Health()
        self.health.checks["broker"] = lambda: self.broker_ok
        self.redis = redis.Redis.from_url(settings.redis, socket_timeout=1) if settings.redis else None
        self.cache = DecisionCache(self.redis, settings.decision_cache_ttl_s, settings) \
            if self.redis is not None and settings.decision_cache_ttl_s > 0 else None
        # Adaptive sampling: the bank's video frames, to know which stretches to decode densely.
        self.video_near = VideoNearIndex(settings) if settings.redis and settings.video_near_factor > 0 else None
        self.video_thread = threading.Thread(target=self._follow_videos, name="video-bank", daemon=True)
        from workers.live.hasher import LiveHasher  # the live loop reuses this module's pieces

        self.live = LiveHasher(settings, self.name)
        self.live_thread = threading.Thread(target=self.live.run, args=(self.stop_event,), name="live", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> None:
        server = metrics.serve(self.settings.metrics_host, self.settings.metrics_port, self.health)
        self.metrics_port = server.server_address[1]
        log.info("hasher started", extra={"worker": self.name, "metrics": f"http://{self.settings.metrics_host}:"
                                          f"{self.metrics_port}/metrics", "kafka": self.settings.kafka})
        self.consumer.subscribe([topics.UPLOADS], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.live_thread.start()
        if self.video_near is not None:
            self.video_thread.start()
        try:
            while not self.stop_event.is_set():
                msg = self.consumer.poll(0.05)
                if msg is not None:
                    self._accept(msg)
                self._drain(block=False)
                self._backpressure()
                self.delivery.serve(self.consumer)
        finally:
            self._shutdown()
            server.shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def _shutdown(self) -> None:
        """Finish what is in flight (bounded by the pool), deliver it, commit, leave the group."""
        self._drain(block=True)
        remaining = self.producer.flush(30)
        if remaining:
            log.error("undelivered outputs at shutdown; their offsets stay uncommitted", extra={"count": remaining})
        self._commit(asynchronous=False)
        self.pool.shutdown(wait=True)
        self.consumer.close()
        self.stop_event.set()
        if self.live_thread.is_alive():
            self.live_thread.join(15)
        log.info("hasher stopped", extra={"worker": self.name})

    # -- the loop's steps -----------------------------------------------------------------------
    def _accept(self, msg: Message) -> None:
        if consumer_error(msg):
            return
        self.broker_ok = True
        metrics.EVENTS.labels("hasher", msg.topic()).inc()
        ts_type, ts = msg.timestamp()
        src = Source(msg.topic(), msg.partition(), msg.offset(), ts if ts_type else None, msg.key(), msg.value())
        cell = self.tracker.started(src.topic, src.partition, src.offset)
        fut = self.pool.submit(process_upload, src, self.settings, self.name, self._emit_part, self._blocked,
                               self.cache, self.video_near.near_frames if self.video_near is not None else None)
        self.work.append((fut, (src.topic, src.partition), cell))
        metrics.INFLIGHT.labels(self.name).set(len(self.work))

    def _drain(self, block: bool) -> None:
        """Produce outputs in arrival order as their work completes."""
        while self.work and (block or self.work[0][0].done()):
            fut, tp, cell = self.work.popleft()
            out = fut.result()
            self.delivery.send(out.topic, out.key, out.value, [(tp, cell)])
        metrics.INFLIGHT.labels(self.name).set(len(self.work))

    def _follow_videos(self) -> None:
        store = BankStore.from_url(self.settings.redis, socket_timeout=5, socket_connect_timeout=5)
        try:
            self.video_near.follow(store, self.stop_event)
        except Exception:  # a bug here must not stop hashing: uploads go on, sampled sparsely
            log.exception("video index sync failed; adaptive sampling is off until restart")

    def _emit_part(self, out: Output) -> None:
        """A video's earlier part, from a worker thread (produce is thread-safe). Its offset is
        covered by the final part, which is tracked; a replay after a crash resends the parts."""
        while True:
            try:
                self.producer.produce(out.topic, key=out.key, value=out.value)
                return
            except BufferError:
                time.sleep(0.05)

    def _blocked(self, event_id: str) -> bool:
        """The matcher marks an upload it blocked early, so the rest need not be decoded."""
        if self.redis is None:
            return False
        try:
            return bool(self.redis.exists(EARLY_BLOCK_KEY.format(event_id=event_id)))
        except Exception:
            return False  # Redis trouble only costs decoding the rest

    def _backpressure(self) -> None:
        limit = self.settings.hasher_inflight
        n = len(self.work) + len(self.producer)
        if self.assigned and self.paused is None:  # a new assignment: see _on_assign
            self.consumer.resume(self.consumer.assignment())
            self.paused = False
        if not self.paused and n >= limit and self.assigned:
            self.consumer.pause(self.assigned)
            self.paused = True
        elif self.paused and n < limit // 2:
            self.consumer.resume(self.assigned)
            self.paused = False
        metrics.PAUSED.labels(self.name).set(len(self.assigned) if self.paused else 0)

    def _commit(self, asynchronous: bool) -> None:
        self.tracker.commit(self.consumer, asynchronous)

    # -- group membership -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.broker_ok = True
        self.assigned = list(partitions)
        # librdkafka keeps a partition's pause across a rebalance that hands it back to us: resume
        # all once the assignment is in place (after this callback), or they stay paused for good.
        self.paused = None
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Hand back cleanly: finish and deliver what we hold for these partitions, then commit."""
        self._drain(block=True)
        self.producer.flush(10)
        self._commit(asynchronous=False)
        self.tracker.forget(partitions)
        if self.paused:
            consumer.resume(partitions)  # still assigned here: clear the pause before handing them back
        self.assigned, self.paused = [], False
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})
