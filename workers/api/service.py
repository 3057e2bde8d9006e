"""What the routes share: the bank index (kept current in this process), hashing, fetching by
URL, the one decision, and Kafka for `publish=true` and `/v1/uploads`.

Routes are thin: they parse the request, call here, and shape the answer (HMA's or vigil's)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import topics
from workers.bank.store import BankStore
from workers.errors import MediaError
from workers.index.follower import BankFollower
from workers.index.matching import Match
from workers.media.fetch_url import fetch_url
from workers.media.probe import media_kind, probe_limits
from workers.ops.logs import now_ms
from workers.policy import decide
from workers.settings import Settings
from workers.signals import SignalValue, hash_bytes
from workers.signals.hashing import hash_media
from workers.uploads.decisions import MAX_EVIDENCE

log = logging.getLogger("vigil.api")
UPLOAD_SUBDIR = "vigil-api-uploads"


@dataclass
class Hashed:
    """A file's signals, with what it took to get them (for latency_ms and notes)."""
    media_type: str
    signals: list[SignalValue]
    sha256: str
    notes: list[str] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)


class ApiService:
    def __init__(self, settings: Settings, store: BankStore, follower: BankFollower,
                 writer: BankStore | None = None):
        self.settings = settings
        self.store = store  # reads: banks, entries, tokens
        self.writer = writer or store  # bank:write calls only (docs/security.md: the ACL split)
        self.follower = follower
        self.name = settings.worker_name("api")
        self.started_at = time.time()
        self._producer = None
        self._producer_lock = threading.Lock()

    # -- the index -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.follower.index.loaded

    @property
    def fresh(self) -> bool:
        return time.time() - self.follower.index.synced_at < self.settings.bank_stale_seconds

    def search(self, signals: list[SignalValue]) -> tuple[list[Match], int]:
        """Matches and the bank version they were found under."""
        with self.follower.lock:
            return self.follower.index.search(signals), self.follower.index.version

    def writer_as(self, actor: str) -> BankStore:
        """The bank store for one caller's writes: the audit stream names them."""
        return BankStore(self.writer.r, actor=actor)

    # -- media ---------------------------------------------------------------------------------
    def fetch(self, url: str) -> bytes:
        s = self.settings
        data, _ctype = fetch_url(url, s.fetch_allowed_hosts, s.max_media_bytes, s.fetch_timeout_s,
                                 s.fetch_private_cidrs)
        return data

    def hash(self, data: bytes, query: bool = True) -> Hashed:
        """Signals of an image (query=True: with the variants the matcher searches). Videos get
        their digests only here; their frames are hashed by the hasher (POST /v1/uploads)."""
        if not data:
            raise MediaError("empty_media", "the file is zero bytes")
        if len(data) > self.settings.max_media_bytes:
            raise MediaError("media_too_large", f"{len(data)} bytes; the limit is {self.settings.max_media_bytes}")
        digests = hash_bytes(data)
        sha = digests[1].value
        if media_kind(data, probe_limits(self.settings)).kind == "video":
            return Hashed("video", digests, sha, ["video: digests only (md5, sha256); submit it with "
                                                  "POST /v1/uploads for frame matching"])
        r = hash_media(data, self.settings, query=query, digests=digests)
        return Hashed(r.media_type, r.signals, sha, list(r.notes),
                      {k: round(v * 1000, 3) for k, v in r.stage_seconds.items()})

    # -- the decision ------------------------------------------------------------------------------
    def decision(self, signals: list[SignalValue], *, media_type: str = "image", content_id: str | None = None,
                 notes: list[str] | None = None, stage_ms: dict[str, float] | None = None,
                 received_ms: int | None = None, metadata: dict | None = None) -> dict[str, Any]:
        """The decision as the matcher writes it on moderation.decisions (topics/schemas/decision.json),
        with source "api"."""
        received_ms = received_ms or now_ms()
        t0 = time.perf_counter()
        matches, version = self.search(signals)
        verdict, evidence = decide(matches)
        match_ms = round((time.perf_counter() - t0) * 1000, 3)
        if content_id is None:
            sha = next((s.value for s in signals if s.signal == "sha256"), None)
            content_id = f"c-{sha[:16]}" if sha else "c-" + hashlib.sha256(
                "|".join(f"{s.signal}:{s.value}" for s in signals).encode()).hexdigest()[:16]
        decided = now_ms()
        out: dict[str, Any] = {
            "schema_version": topics.SCHEMA_VERSION, "event_id": str(uuid.uuid4()), "content_id": content_id,
            "source": "api", "media_type": media_type, "decision": verdict, "partial": False,
            "notes": list(notes or []), "matches": [m.to_json() for m in evidence[:MAX_EVIDENCE]],
            "bank_version": version,
            "latency_ms": {**(stage_ms or {}), "match": match_ms, "total": max(0, decided - received_ms)},
            "submitted_at_ms": received_ms, "decided_at_ms": decided, "worker": self.name,
        }
        if len(evidence) > MAX_EVIDENCE:
            out["notes"].append(f"{len(evidence) - MAX_EVIDENCE} further matches omitted")
        if metadata:
            out["metadata"] = metadata
        return out

    # -- Kafka -----------------------------------------------------------------------------------
    def producer(self):
        """Created on first use: a lookup-only deployment needs no broker."""
        with self._producer_lock:
            if self._producer is None:
                if not self.settings.kafka:
                    raise MediaError("unsupported_uri", "no Kafka configured (VIGIL_KAFKA): cannot publish")
                from confluent_kafka import Producer

                from workers.stream.kafka import producer_config

                self._producer = Producer(producer_config(self.settings))
            return self._producer

    def produce(self, topic: str, key: str, message: dict[str, Any], timeout_s: float = 10.0) -> None:
        """Deliver one message and wait for the broker's ack (the caller's 2xx means it is there)."""
        import json

        errors: list[Any] = []
        p = self.producer()
        p.produce(topic, key=key.encode(), value=json.dumps(message).encode(),
                  on_delivery=lambda err, _msg: errors.append(err) if err else None)
        left = p.flush(timeout_s)
        if left or errors:
            raise RuntimeError(f"not delivered to {topic}: {errors[0] if errors else 'timed out'}")

    def close(self) -> None:
        self.follower.stop()
        if self._producer is not None:
            self._producer.flush(5)


def upload_dir(settings: Settings) -> str:
    """Where /v1/uploads puts files for the hasher: under the first media root, which the hasher
    reads (file:// only). Files are removed once their decision or dead letter is seen."""
    if not settings.media_roots:
        raise MediaError("outside_media_roots", "no media roots configured (VIGIL_MEDIA_ROOTS): "
                         "the API cannot hand files to the hasher")
    path = os.path.join(settings.media_roots[0], UPLOAD_SUBDIR)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        from workers.api.problems import Problem

        raise Problem(503, f"cannot write uploads under {settings.media_roots[0]} ({exc.strerror}): this deployment "
                           "accepts media_uri only (docs/api.md)", "media-root-read-only") from None
    return path
