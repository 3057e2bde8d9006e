"""One settings object, read from VIGIL_* environment variables and overridden by CLI flags.

Nothing else in the package reads os.environ for configuration.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping


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

    pdq_threshold: int = 31  # VIGIL_PDQ_THRESHOLD: default max Hamming distance for PDQ (of 256)
    pdq_min_quality: int = 50  # VIGIL_PDQ_MIN_QUALITY: PDQ hashes below this never match
    phash_threshold: int = 8  # VIGIL_PHASH_THRESHOLD: default max Hamming distance for pHash (of 64)
    phash_min_quality: int = 10  # VIGIL_PHASH_MIN_QUALITY: pHash detail score (0-100) below this never matches

    # Video: how frames are sampled, and the limits past which a video is decided as partial.
    video_strategy: str = "keyframes"  # VIGIL_VIDEO_STRATEGY: keyframes | fixed | all
    video_fps: float = 1.0  # VIGIL_VIDEO_FPS: fixed rate, and the fill rate where keyframes are sparse
    video_max_seconds: float = 3600.0  # VIGIL_VIDEO_MAX_SECONDS of stream time sampled
    video_max_frames: int = 1200  # VIGIL_VIDEO_MAX_FRAMES sampled per video
    video_max_side: int = 640  # VIGIL_VIDEO_MAX_SIDE: frames are scaled down to this while decoding (PDQ drift
    # from full size: median 4 bits at 640 px, 9-10 at 512; benchmarks/bench_video.py)
    video_part_frames: int = 16  # VIGIL_VIDEO_PART_FRAMES: frames per hashes message (early block)
    # A video whose next part has not come for this long is dead-lettered (incomplete_video) so
    # its partition's offsets can move on; the matcher holds them until the video is decided.
    video_part_timeout_s: float = 600.0  # VIGIL_VIDEO_PART_TIMEOUT_S

    decision_cache_ttl_s: int = 3600  # VIGIL_DECISION_CACHE_TTL_S: identical files re-decided from cache; 0 = off

    bank_poll_seconds: float = 0.5  # VIGIL_BANK_POLL_SECONDS: how long a change-stream read blocks
    bank_stale_seconds: float = 30.0  # VIGIL_BANK_STALE_SECONDS: unsynced this long -> matcher not ready

    # Hash history and retroactive matching (workers/stream/history.py, workers/retro)
    history_retention_days: int = 365  # VIGIL_HISTORY_RETENTION_DAYS: how far back a rescan can reach
    history_live_every: int = 10  # VIGIL_HISTORY_LIVE_EVERY: keep every n-th live frame (by seq); 0 = none
    retro_settle_s: float = 2.0  # VIGIL_RETRO_SETTLE_S: changes this close together make one rescan
    retro_since_days: float = 30.0  # VIGIL_RETRO_SINCE_DAYS: how far back an automatic rescan reads

    metrics_port: int = 0  # VIGIL_METRICS_PORT: 0 picks a free port
    metrics_host: str = "127.0.0.1"  # VIGIL_METRICS_HOST
    worker_id: str = ""  # VIGIL_WORKER_ID: defaults to <kind>-<host>-<pid>
    data_dir: str = ""  # VIGIL_DATA_DIR: embedded services' data; a temp dir when empty
    log_level: str = "INFO"  # VIGIL_LOG_LEVEL
    actor: str = ""  # VIGIL_ACTOR: who bank changes are attributed to; defaults to the OS user

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
