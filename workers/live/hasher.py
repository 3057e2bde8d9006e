"""The hasher's live loop: its own consumer group on moderation.live-frames, so a live backlog
never starves uploads and an upload backlog never delays a live decision.

To stay current it takes what is waiting in a batch and hashes only the newest frame of each
stream; the older ones are counted as skipped (vigil_live_frames_skipped_total), never lost
silently. JPEGs are decoded at reduced size (libjpeg scales by 1/2, 1/4 or 1/8 while decoding)
when the frame is large enough for the signals to lose nothing. Frames are decoded and hashed
on a small thread pool (OpenCV and numpy release the GIL), and their outputs produced in order."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from confluent_kafka import Consumer, Message, Producer

import topics
from workers.errors import MediaError
from workers.live.streams import FrameHeaders, parse_headers
from workers.media.fetch import read_media, resolve_uri
from workers.media.image import decode_for_signals
from workers.ops import metrics
from workers.settings import Settings
from workers.signals.hashing import hash_frame
from workers.stream.kafka import consumer_config, producer_config
from workers.stream.messages import Source, dead_letter, encode
from workers.stream.offsets import (
    Cell,
    Delivery,
    OffsetTracker,
    consumer_error,
    lag_stats_callback,
    take_batch,
)

log = logging.getLogger("vigil.live")
GROUP = "vigil-hasher-live"
MIN_SIDE = 256  # the fast PDQ path works from >= 256 px; decode no smaller than this

def decode_frame(data: bytes, content_type: str | None, max_pixels: int, grey: bool = False) -> np.ndarray:
    """RGB frame, or luma when `grey`, at the largest libjpeg reduction that keeps the short side
    >= MIN_SIDE (media.image.decode_for_signals)."""
    return decode_for_signals(data, max_pixels, MIN_SIDE, grey)


def newest_per_stream(msgs: list[Message]) -> tuple[list[Message], list[Message]]:
    """(to hash, to skip): per stream the newest frame and any end-of-stream marker; the rest skip."""
    keep: dict[bytes | None, Message] = {}
    ends: list[Message] = []
    skip: list[Message] = []
    for m in msgs:
        if any(k == "end_of_stream" for k, _ in (m.headers() or ())):
            ends.append(m)
            continue
        old = keep.get(m.key())
        if old is None or m.offset() > old.offset():  # one key, one partition: offsets compare
            if old is not None:
                skip.append(old)
            keep[m.key()] = m
        else:
            skip.append(m)
    return list(keep.values()) + ends, skip


class LiveHasher:
    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name
        # Large fetches: a flooding stream's frames sit in the same partition as other streams',
        # and Kafka cannot skip bytes unread; reading them in a few big fetches (then skipping
        # all but the newest) is what keeps the other streams current. Still bounded in memory.
        self.consumer = Consumer({**consumer_config(settings, GROUP), "stats_cb": lag_stats_callback(GROUP),
                                  "fetch.wait.max.ms": min(10, settings.fetch_wait()),
                                  "max.partition.fetch.bytes": 16 * 2**20, "fetch.max.bytes": 64 * 2**20,
                                  "queued.max.messages.kbytes": 65536})
        self.producer = Producer({**producer_config(settings), "linger.ms": 0})
        self.tracker = OffsetTracker()
        self.delivery = Delivery(self.producer, self.tracker)
        self.threads = max(1, settings.hasher_threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="live")
        self.work: deque[tuple[Future, list[Cell]]] = deque()

    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe([topics.LIVE_FRAMES], on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                wait = 0.005 if self.work else 0.05
                msgs = [m for m in take_batch(self.consumer, 500, wait) if not consumer_error(m)]
                if msgs:
                    self._batch(msgs)
                self._drain(block=False)
                self.delivery.serve(self.consumer)
        finally:
            self._drain(block=True)
            self.producer.flush(10)
            self._commit(asynchronous=False)
            self.pool.shutdown(wait=True)
            self.consumer.close()

    def _batch(self, msgs: list[Message]) -> None:
        """Offsets are tracked in offset order, and a skipped frame's offset completes only with
        the delivery of its stream's newer frame, which carries the skip count: a crash replays
        both, so no frame goes uncounted."""
        metrics.EVENTS.labels("hasher", topics.LIVE_FRAMES).inc(len(msgs))
        todo, skip = newest_per_stream(msgs)
        skipped = {id(m) for m in skip}
        carry: dict[bytes | None, list[Cell]] = {}
        for m in sorted(todo + skip, key=lambda m: (m.partition(), m.offset())):
            tp = (m.topic(), m.partition())
            if id(m) in skipped:
                carry.setdefault(m.key(), []).append((tp, self.tracker.started(tp[0], tp[1], m.offset())))
                metrics.LIVE_SKIPPED.inc()
                continue
            while len(self.work) >= 2 * self.threads:  # bounded: the next batch skips to the newest
                self._drain(block=True, one=True)
            covers = [(tp, self.tracker.started(tp[0], tp[1], m.offset()))] + carry.pop(m.key(), [])
            self.work.append((self.pool.submit(self._process, m, len(covers) - 1), covers))

    def _drain(self, block: bool, one: bool = False) -> None:
        """Produce finished frames' outputs in the order they were consumed."""
        while self.work and (block or self.work[0][0].done()):
            fut, covers = self.work.popleft()
            topic, key, value = fut.result()
            self.delivery.send(topic, key, value, covers)
            if one:
                return

    def _process(self, m: Message, skipped: int = 0) -> tuple[str, bytes | None, bytes]:
        started = time.perf_counter()
        headers: FrameHeaders | None = None
        try:
            headers = parse_headers(m.headers(), m.key())
            signals = []
            t0 = time.perf_counter()
            data = m.value()
            if headers.media_uri and not data:
                data = read_media(resolve_uri(headers.media_uri, self.settings.media_roots),
                                  self.settings.max_media_bytes)
            stages = {"queue": max(0.0, time.time() - headers.captured_at_ms / 1000), "fetch": time.perf_counter() - t0}
            if data:
                t1 = time.perf_counter()
                pixels = decode_frame(data, headers.content_type, self.settings.max_image_pixels,
                                      grey=self.settings.signal_impl == "fast")
                t2 = time.perf_counter()
                signals = hash_frame(pixels, self.settings, dihedral=True)
                stages.update(decode=t2 - t1, hash=time.perf_counter() - t2)
                metrics.FRAMES_HASHED.labels("live").inc()
            elif not headers.end_of_stream:
                raise MediaError("empty_media", "live frame has neither bytes nor a media_uri header")
            for stage, seconds in stages.items():
                metrics.STAGE_DURATION.labels(stage).observe(seconds)
            out = {"schema_version": topics.SCHEMA_VERSION, "stream_id": headers.stream_id, "seq": headers.seq,
                   "captured_at_ms": headers.captured_at_ms, "end_of_stream": headers.end_of_stream,
                   "skipped": skipped,
                   "signals": [sv.to_json() for sv in signals],
                   "hasher": {"worker": self.name,
                              "latency_ms": {k: round(v * 1000, 3) for k, v in stages.items()}}}
            return topics.LIVE_HASHES, headers.stream_id.encode(), encode(out)
        except MediaError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:
            log.exception("internal error on a live frame")
            code, message = "internal_error", f"{type(exc).__name__}: {exc}"
        metrics.DEAD_LETTERS.labels("hasher", code).inc()
        ts_type, ts = m.timestamp()
        # Media bytes never go on any topic but live-frames: the dead letter keeps the headers only.
        src = Source(m.topic(), m.partition(), m.offset(), ts if ts_type else None, m.key(), None)
        dl = dead_letter(src, code, message, "hasher", self.name)
        dl["original"]["value"] = None
        log.warning("live frame dead-lettered", extra={"code": code, "reason": message,
                                                       "stream_id": headers.stream_id if headers else None,
                                                       "ms": round((time.perf_counter() - started) * 1000, 1)})
        return topics.DEAD_LETTER, m.key(), encode(dl)

    def _commit(self, asynchronous: bool) -> None:
        self.tracker.commit(self.consumer, asynchronous)

    def _on_revoke(self, consumer: Consumer, partitions) -> None:
        self._drain(block=True)
        self.producer.flush(10)
        self._commit(asynchronous=False)
        self.tracker.forget(partitions)

