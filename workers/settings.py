"""One settings object, read from VIGIL_* environment variables and overridden by CLI flags.

Nothing else in the package reads os.environ for configuration.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping


SOR_DEFAULTS = {
    "csam": "STATEMENT_CATEGORY_PROTECTION_OF_MINORS KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL illegal",
    "ncii": "STATEMENT_CATEGORY_NON_CONSENSUAL_BEHAVIOUR KEYWORD_NON_CONSENSUAL_IMAGE_SHARING illegal",
    "terror": "STATEMENT_CATEGORY_RISK_FOR_PUBLIC_SECURITY KEYWORD_TERRORIST_CONTENT illegal",
}


@dataclass(frozen=True)
class Settings:
    # Where the services are. None means "start the embedded one" (vigil up / demo / tests).
    kafka: str | None = None  # VIGIL_KAFKA=host:port[,host:port]
    redis: str | None = None  # VIGIL_REDIS=redis://host:port/0
    # Extra librdkafka settings passed through verbatim (SASL/SSL...), as JSON object.
    kafka_config: dict[str, str] = field(default_factory=dict)  # VIGIL_KAFKA_CONFIG
    # Embedded brokers only complete a group join after max.poll.interval.ms, so it is kept short there.
    embedded: bool = False  # VIGIL_EMBEDDED
    # How long a consumer's fetch may wait for data. Apache Kafka answers as soon as data arrives;
    # the embedded broker waits it out, so embedded mode polls often. 0 = auto (embedded 20, else 500).
    fetch_wait_ms: int = 0  # VIGIL_FETCH_WAIT_MS
    partitions: int = 6  # VIGIL_PARTITIONS: partitions of uploads/hashes/decisions when vigil creates them

    media_roots: tuple[str, ...] = ()  # VIGIL_MEDIA_ROOTS, os.pathsep-separated
    max_media_bytes: int = 64 * 1024 * 1024  # VIGIL_MAX_MEDIA_BYTES: images (read into memory)
    max_video_bytes: int = 4 * 1024**3  # VIGIL_MAX_VIDEO_BYTES: videos (streamed, never held whole)
    max_image_pixels: int = 64_000_000  # VIGIL_MAX_IMAGE_PIXELS (decompression-bomb guard)
    max_message_bytes: int = 1_000_000  # VIGIL_MAX_MESSAGE_BYTES

    hasher_threads: int = 2  # VIGIL_HASHER_THREADS
    hasher_inflight: int = 64  # VIGIL_HASHER_INFLIGHT: partitions pause above this many events in flight
    signal_impl: str = "fast"  # VIGIL_SIGNAL_IMPL: fast | reference
    # Uploads (fast signals): JPEGs decode as luma at the largest libjpeg reduction keeping the
    # short side >= this (PDQ/pHash drift against the full decode: docs/operations.md)
    decode_min_side: int = 512  # VIGIL_DECODE_MIN_SIDE

    pdq_threshold: int = 31  # VIGIL_PDQ_THRESHOLD: default max Hamming distance for PDQ (of 256)
    pdq_min_quality: int = 50  # VIGIL_PDQ_MIN_QUALITY: PDQ hashes below this never match
    # pHash alone: 6 of 64 (was 8: two unrelated real photos met at 8 in benchmarks/bench_accuracy.py).
    phash_threshold: int = 6  # VIGIL_PHASH_THRESHOLD: default max Hamming distance for pHash (of 64)
    # Both signals near at once (an overlay moves each a little past its own threshold): a photo
    # matches when PDQ <= joint_pdq_threshold AND pHash <= joint_phash_threshold for the same query
    # variant and stored version of an entry, in banks that keep the default thresholds. Candidates
    # come from the pHash search alone and PDQ is compared directly (workers/index/joint.py), so the
    # rule costs ~0.3 ms a query at 300k entries (benchmarks/bench_joint_search.py), not the scan
    # that searching PDQ out to 56 bits was. Nearest of 5,000+ distractors: PDQ 82 at pHash <= 12.
    # 0 turns the rule off.
    joint_pdq_threshold: int = 56  # VIGIL_JOINT_PDQ_THRESHOLD
    joint_phash_threshold: int = 12  # VIGIL_JOINT_PHASH_THRESHOLD
    phash_min_quality: int = 10  # VIGIL_PHASH_MIN_QUALITY: pHash detail score (0-100) below this never matches

    # Video: how frames are sampled, and the limits past which a video is decided as partial.
    video_strategy: str = "keyframes"  # VIGIL_VIDEO_STRATEGY: keyframes | fixed | all
    video_fps: float = 1.0  # VIGIL_VIDEO_FPS: fixed rate, and the fill rate where keyframes are sparse
    video_max_seconds: float = 3600.0  # VIGIL_VIDEO_MAX_SECONDS of stream time sampled
    video_max_frames: int = 1200  # VIGIL_VIDEO_MAX_FRAMES sampled per video
    video_max_side: int = 640  # VIGIL_VIDEO_MAX_SIDE: frames are scaled down to this while decoding (PDQ drift
    # from full size: median 4 bits at 640 px, 9-10 at 512; benchmarks/bench_video.py)
    # Opening a file that is not a known image: FFmpeg's probe, bounded (workers/media/probe.py).
    video_probe_bytes: int = 5_000_000  # VIGIL_VIDEO_PROBE_BYTES: FFmpeg probesize
    video_probe_seconds: float = 5.0  # VIGIL_VIDEO_PROBE_SECONDS: FFmpeg analyzeduration, of stream time
    video_open_timeout_s: float = 10.0  # VIGIL_VIDEO_OPEN_TIMEOUT_S: wall clock for opening and probing
    # keyframes: a frame is also taken whenever this long passes without one, so any excerpt at
    # least this long is sampled at least once (a 1 s excerpt between 2 s keyframes is not missed)
    video_max_gap_s: float = 0.8  # VIGIL_VIDEO_MAX_GAP_S
    # Adaptive sampling: a sampled frame within video_near_factor x the PDQ threshold of any video
    # entry of a block/review bank gets the video_dense_window_s seconds each side of it decoded at
    # video_dense_fps, up to video_dense_max_seconds of dense windows per upload.
    video_near_factor: float = 1.5  # VIGIL_VIDEO_NEAR_FACTOR; 0 = no adaptive sampling
    video_dense_fps: float = 10.0  # VIGIL_VIDEO_DENSE_FPS
    video_dense_window_s: float = 2.0  # VIGIL_VIDEO_DENSE_WINDOW_S
    video_dense_max_seconds: float = 120.0  # VIGIL_VIDEO_DENSE_MAX_SECONDS
    # Excerpt rule: a run of upload frames matching one video entry in order that covers this much
    # of the entry's timeline decides as the entry's bank says (block); a shorter run is review.
    video_excerpt_s: float = 1.0  # VIGIL_VIDEO_EXCERPT_S
    video_part_frames: int = 16  # VIGIL_VIDEO_PART_FRAMES: frames per hashes message (early block)
    # A video whose next part has not come for this long is dead-lettered (incomplete_video) so
    # its partition's offsets can move on; the matcher holds them until the video is decided.
    video_part_timeout_s: float = 600.0  # VIGIL_VIDEO_PART_TIMEOUT_S

    decision_cache_ttl_s: int = 3600  # VIGIL_DECISION_CACHE_TTL_S: identical files re-decided from cache; 0 = off

    # Provenance (workers/signals/provenance.py, workers/policy/provenance.py): what the file claims
    # about its origin, and what to do about it. Actions: block | review | allow (label only) | off.
    # Never block on provenance alone by default: a marker is trivially stripped or forged.
    provenance_read: bool = True  # VIGIL_PROVENANCE_READ: read C2PA manifests and AI markers in the hasher
    provenance_ai_generated: str = "allow"  # VIGIL_PROVENANCE_AI_GENERATED: media that says a model made it
    provenance_invalid: str = "off"  # VIGIL_PROVENANCE_INVALID: a C2PA manifest that fails validation
    provenance_label: str = "synthetic"  # VIGIL_PROVENANCE_LABEL: the label the AI-generated rule's evidence carries
    # VIGIL_PROVENANCE_SOURCE_TYPES: JSON {digitalSourceType term: action}, e.g. {"compositeSynthetic": "review"}
    provenance_source_types: dict[str, str] = field(default_factory=dict)
    provenance_trust_anchors: str = ""  # VIGIL_PROVENANCE_TRUST_ANCHORS: PEM file; signers chaining to it are trusted

    bank_poll_seconds: float = 0.5  # VIGIL_BANK_POLL_SECONDS: how long a change-stream read blocks
    bank_stale_seconds: float = 30.0  # VIGIL_BANK_STALE_SECONDS: unsynced this long -> matcher not ready
    # While the matcher applies bank changes it has seen (an import), decisions wait up to this
    # long for them rather than be made with the bank as it was; keep it under the consumer's
    # max.poll.interval (6 s embedded, 300 s otherwise).
    bank_hold_seconds: float = 3.0  # VIGIL_BANK_HOLD_SECONDS
    bank_behind_seconds: float = 10.0  # VIGIL_BANK_BEHIND_SECONDS: behind the store this long -> not ready

    # Hash history and retroactive matching (workers/stream/history.py, workers/retro)
    history_retention_days: int = 365  # VIGIL_HISTORY_RETENTION_DAYS: how far back a rescan can reach
    history_live_every: int = 10  # VIGIL_HISTORY_LIVE_EVERY: keep every n-th live frame (by seq); 0 = none
    retro_settle_s: float = 2.0  # VIGIL_RETRO_SETTLE_S: changes this close together make one rescan
    retro_since_days: float = 30.0  # VIGIL_RETRO_SINCE_DAYS: how far back an automatic rescan reads
    # N retro workers split every rescan: member i reads the history partitions p with p % N == i
    # (workers/retro/members.py). Every member must be given the same N; changing it goes through
    # `vigil retro members N` with the fleet stopped.
    retro_members: int = 1  # VIGIL_RETRO_MEMBERS: retro workers in the fleet (<= history partitions)
    retro_member: int = -1  # VIGIL_RETRO_MEMBER: this worker's index; -1 = the hostname's -<n> (StatefulSet ordinal)

    metrics_port: int = 0  # VIGIL_METRICS_PORT: 0 picks a free port
    metrics_host: str = "127.0.0.1"  # VIGIL_METRICS_HOST
    worker_id: str = ""  # VIGIL_WORKER_ID: defaults to <kind>-<host>-<pid>
    data_dir: str = ""  # VIGIL_DATA_DIR: embedded services' data; a temp dir when empty
    log_level: str = "INFO"  # VIGIL_LOG_LEVEL
    actor: str = ""  # VIGIL_ACTOR: who bank changes are attributed to; defaults to the OS user

    # Reports (workers/reports, docs/reports.md). Preservation is off unless both dir and key are set.
    preserve_dir: str = ""  # VIGIL_PRESERVE_DIR: encrypted copies of blocked media of preserve_labels
    preserve_key: str = ""  # VIGIL_PRESERVE_KEY: Fernet key (`vigil report keygen`); never logged
    preserve_labels: tuple[str, ...] = ("csam",)  # VIGIL_PRESERVE_LABELS, os.pathsep-separated
    # Bank label -> "STATEMENT_CATEGORY_... KEYWORD_... [illegal]" for statements of reasons; a
    # label missing here is reported as unmapped, never guessed. JSON object.
    sor_categories: dict[str, str] = field(default_factory=lambda: dict(SOR_DEFAULTS))  # VIGIL_SOR_CATEGORIES
    sor_terms_url: str = ""  # VIGIL_SOR_TERMS_URL: the terms of service clause the statements cite
    sor_territory: tuple[str, ...] = ("EEA",)  # VIGIL_SOR_TERRITORY: territorial_scope of a restriction
    # HTTP API (`vigil api`, workers/api/): where it listens, and what it accepts.
    api_host: str = "127.0.0.1"  # VIGIL_API_HOST: a non-loopback address needs a token (or api_insecure)
    api_port: int = 8080  # VIGIL_API_PORT
    api_insecure: bool = False  # VIGIL_API_INSECURE: serve a non-loopback address with no token at all
    api_workers: int = 1  # VIGIL_API_WORKERS: uvicorn worker processes (each holds its own bank index)
    api_max_body_bytes: int = 32 * 1024 * 1024  # VIGIL_API_MAX_BODY_BYTES: larger request bodies get 413
    api_rate_per_s: float = 50.0  # VIGIL_API_RATE_PER_S: default per-token sustained rate (token bucket)
    api_burst: int = 100  # VIGIL_API_BURST: default per-token burst
    # A Redis URL (user) with write access, used only for bank:write calls; the API reads through
    # VIGIL_REDIS, which can then be a read-only user (docs/security.md). Empty: VIGIL_REDIS for both.
    api_bank_write_redis: str = ""  # VIGIL_API_BANK_WRITE_REDIS
    # Media by URL (the API's `url` parameters): http(s) to these hosts (and their subdomains) only,
    # never to a private/loopback/link-local address unless it is inside api_fetch_private_cidrs.
    fetch_allowed_hosts: tuple[str, ...] = ()  # VIGIL_FETCH_ALLOWED_HOSTS, os.pathsep-separated
    fetch_private_cidrs: tuple[str, ...] = ()  # VIGIL_FETCH_PRIVATE_CIDRS: e.g. an in-cluster media store
    fetch_timeout_s: float = 10.0  # VIGIL_FETCH_TIMEOUT_S: whole download, redirects included
    # Review service (workers/review, `vigil review`): cases, verdicts and the banks they feed.
    review_db: str = ""  # VIGIL_REVIEW_DB: SQLAlchemy URL (postgresql+psycopg://...); empty = SQLite <data_dir>/review.db
    review_host: str = "127.0.0.1"  # VIGIL_REVIEW_HOST
    review_port: int = 8081  # VIGIL_REVIEW_PORT
    review_qa_sample: float = 0.01  # VIGIL_REVIEW_QA_SAMPLE: share of automatic blocks sent to review as QA
    review_lease_s: float = 300.0  # VIGIL_REVIEW_LEASE_S: how long a claimed case stays with its reviewer
    review_bad_bank: str = "reviewed-bad"  # VIGIL_REVIEW_BAD_BANK: confirmed items' hashes (action block)
    review_ok_bank: str = "reviewed-ok"  # VIGIL_REVIEW_OK_BANK: overturned items' hashes (an allowlist)
    review_identity_header: str = ""  # VIGIL_REVIEW_IDENTITY_HEADER: e.g. X-Forwarded-User behind oauth2-proxy; off when empty
    review_secret: str = ""  # VIGIL_REVIEW_SECRET: signs session cookies; empty = random (sessions end on restart)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"VIGIL_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> "Settings":
        """Apply CLI flags; None means 'flag not given'."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def fetch_wait(self) -> int:
        return self.fetch_wait_ms or (20 if self.embedded else 500)

    def worker_name(self, kind: str) -> str:
        return self.worker_id or f"{kind}-{socket.gethostname()}-{os.getpid()}"

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env, so `vigil up` can hand its settings to worker processes."""
        out = {}
        for key, value in asdict(self).items():
            if value is None or value == "" or value == () or value == {}:
                continue
            if isinstance(value, (list, tuple)):
                value = os.pathsep.join(value)
            elif isinstance(value, dict):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[f"VIGIL_{key.upper()}"] = str(value)
        return out


def _parse(name: str, type_: Any, raw: str) -> Any:
    t = str(type_)
    try:
        if t.startswith("bool"):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if t.startswith("int"):
            return int(raw)
        if t.startswith("float"):
            return float(raw)
        if t.startswith("tuple"):
            return tuple(p for p in raw.split(os.pathsep) if p)
        if t.startswith("dict"):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return {str(k): str(v) for k, v in value.items()}
    except ValueError as exc:
        raise ValueError(f"VIGIL_{name.upper()}={raw!r}: {exc}") from None
    return raw
