"""Topic names and configs: the one place they are defined."""
from __future__ import annotations

from dataclasses import dataclass, field

UPLOADS = "moderation.uploads"
HASHES = "moderation.hashes"  # internal: hasher -> matcher, carries hashes, never media
DECISIONS = "moderation.decisions"
DEAD_LETTER = "moderation.dead-letter"
LIVE_FRAMES = "moderation.live-frames"  # key=stream_id, value=encoded frame bytes, ids in headers
LIVE_HASHES = "moderation.live-hashes"  # internal: hasher -> matcher for live frames, key=stream_id
LIVE_STATE = "moderation.live-state"  # internal: the matcher's per-stream state, key=stream_id, compacted
REPORTS = "moderation.reports"  # user and community reports, key=content_id
ACTIONS = "moderation.actions"  # reviewers' final decisions, key=content_id
HASH_HISTORY = "moderation.hash-history"  # signals of decided uploads and sampled live frames (workers/stream/history.py)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""


def all_topics(partitions: int = 6, history_days: int = 365) -> list[TopicSpec]:
    """Every topic vigil uses. Partition count bounds how many workers of a kind can share work."""
    week_ms = str(7 * 24 * 3600 * 1000)
    return [
        TopicSpec(UPLOADS, partitions, {"retention.ms": week_ms}, "upload events, key=content_id"),
        TopicSpec(HASHES, partitions, {"retention.ms": week_ms}, "signals per upload, key=content_id"),
        TopicSpec(DECISIONS, partitions, {"retention.ms": week_ms}, "decisions, key=content_id"),
        TopicSpec(DEAD_LETTER, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}, "unprocessable input with a code"),
        # Live frames are worthless after minutes; keep them short so a backlog cannot grow for long.
        TopicSpec(LIVE_FRAMES, partitions, {"retention.ms": str(3600 * 1000)}, "live frames, key=stream_id"),
        TopicSpec(LIVE_HASHES, partitions, {"retention.ms": str(3600 * 1000)}, "live frame hashes, key=stream_id"),
        # Partition p holds the state of the streams on live-hashes partition p (same count). A
        # matcher given a partition reads it whole; small segments let compaction keep that short
        # (every frame writes its stream's state, and the active segment is never compacted).
        TopicSpec(LIVE_STATE, partitions, {"cleanup.policy": "compact", "segment.bytes": str(64 * 2**20),
                                           "segment.ms": str(10 * 60 * 1000), "min.cleanable.dirty.ratio": "0.1"},
                  "live stream state, key=stream_id"),
        TopicSpec(REPORTS, partitions, {"retention.ms": week_ms}, "user and community reports, key=content_id"),
        # Reviewers' verdicts are the platform's record of what a person decided: kept a year.
        TopicSpec(ACTIONS, partitions, {"retention.ms": str(365 * 24 * 3600 * 1000)},
                  "reviewers' final decisions, key=content_id"),
        # Time-retained, not compacted: live frames share their stream's key (compaction would keep
        # only a stream's last frame), and a rescan reads "since T", which retention bounds.
        TopicSpec(HASH_HISTORY, partitions, {"retention.ms": str(history_days * 24 * 3600 * 1000),
                                             "segment.ms": str(24 * 3600 * 1000)},
                  "binary hash history, key=content_id (stream_id for live frames)"),
    ]
