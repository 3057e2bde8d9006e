"""The compacted aggregate the transparency report reads: per hour, counts by action, bank, label,
source, media type, dead-letter code, verdict and report reason, in one Redis hash per hour.

Why a Redis hash per hour and not a compacted topic: the counts are HINCRBY-able in place, a
report over a year is 8,760 HGETALLs in one pipeline (well under a second), and Redis is already
where vigil keeps its state. A year of hours holds a few thousand small hashes, whatever the
decision volume; the raw decisions can expire with their topic's retention.

Layout (prefix `vigil:reports:`):
  h:<hour>        HASH   field -> count, hour = epoch ms // 3,600,000 (UTC) of the message's own
                         time (decided_at_ms, failed_at_ms, ...), so a late or replayed message
                         lands in the hour it describes
  offsets         HASH   "<topic>:<partition>" -> the next offset to count
  auto:<content>  STRING the automatic decision (block / review) on a content id, for 90 days, so a
                         reviewer's verdict can be counted as confirming or overturning it
  seen:<event_id> STRING a verdict already counted (90 days): the review service publishes a
                         verdict again after a crash with the same event_id

Exactly once: the counts of a batch and the offsets after it are one Lua script, which refuses
the batch if another consumer already counted past its first offset. A crash replays from the
offsets in Redis, not Kafka's committed ones, so nothing is counted twice or skipped.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import redis

PREFIX = "vigil:reports:"
OFFSETS = PREFIX + "offsets"
AUTO_TTL_S = 90 * 24 * 3600
HOUR_MS = 3_600_000
TTB_STEPS = 20  # time-to-block histogram buckets per decade (each ~12% wide)

# KEYS[1] offsets. ARGV: n, then n (field, first offset, next offset); then m, then m (key, field,
# count); then k, then k (key, value) set with EX ARGV[last]; then g groups (seen key, c, then c
# (key, field, count)) counted only if the seen key is new (SET NX, EX ARGV[last]).
_APPLY = """
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
for j = 1, n do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  if stored and tonumber(stored) > tonumber(ARGV[i+1]) then return 0 end
  i = i + 3
end
i = 2
for j = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+2]); i = i + 3
end
local m = tonumber(ARGV[i]); i = i + 1
for j = 1, m do
  redis.call('HINCRBY', ARGV[i], ARGV[i+1], ARGV[i+2]); i = i + 3
end
local k = tonumber(ARGV[i]); i = i + 1
for j = 1, k do
  redis.call('SET', ARGV[i], ARGV[i+1], 'EX', ARGV[#ARGV]); i = i + 2
end
local g = tonumber(ARGV[i]); i = i + 1
for j = 1, g do
  local fresh = redis.call('SET', ARGV[i], '1', 'NX', 'EX', ARGV[#ARGV])
  local c = tonumber(ARGV[i+1]); i = i + 2
  for q = 1, c do
    if fresh then redis.call('HINCRBY', ARGV[i], ARGV[i+1], ARGV[i+2]) end
    i = i + 3
  end
end
return 1
"""


def hour_key(hour: int) -> str:
    return f"{PREFIX}h:{hour}"


def ttb_bucket(ms: float) -> int:
    """Time-to-block histogram bucket: log-spaced, so a median over a year is one small sum."""
    return int(math.floor(math.log10(max(0.0, ms) + 1.0) * TTB_STEPS))


def ttb_value(bucket: int) -> float:
    """The middle of a bucket, in ms (what the report quotes as the median)."""
    return 10 ** ((bucket + 0.5) / TTB_STEPS) - 1.0


@dataclass
class Batch:
    """Counts from a run of messages, not yet written."""

    counts: dict[tuple[int, str], int] = field(default_factory=lambda: defaultdict(int))
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (first, next)
    auto: dict[str, str] = field(default_factory=dict)  # content_id -> block | review
    verdicts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # resolved on write
    once: list[tuple[str, list[tuple[int, str, int]]]] = field(default_factory=list)  # (seen key, counts)

    def seen(self, topic: str, partition: int, offset: int) -> None:
        first, _ = self.offsets.get((topic, partition), (offset, offset))
        self.offsets[(topic, partition)] = (first, offset + 1)

    def add(self, ms: int, name: str, n: int = 1) -> None:
        self.counts[(ms // HOUR_MS, name)] += n



def count_decision(batch: Batch, d: dict[str, Any]) -> None:
    """What one decision adds. Live end-of-stream summaries count as streams, not decisions again."""
    at = int(d.get("decided_at_ms") or 0)
    source, kind = d.get("source", "upload"), d.get("media_type", "image")
    if "summary" in d:
        batch.add(at, "live_streams_ended")
        return
    action = d["decision"]
    batch.add(at, f"decision|{action}|{source}|{kind}")
    for bank, label in sorted({(m.get("bank", "?"), m.get("label") or "-") for m in d.get("matches", ())}):
        batch.add(at, f"match|{bank}|{label}|{action}")
    if action == "block":
        if source == "live":
            batch.add(at, "live_terminated")
        else:
            batch.add(at, f"ttb|{ttb_bucket(float(d.get('latency_ms', {}).get('total', 0)))}")
    if action in ("block", "review") and d.get("content_id"):
        batch.auto[d["content_id"]] = action


def count_dead_letter(batch: Batch, m: dict[str, Any]) -> None:
    batch.add(int(m.get("failed_at_ms") or 0), f"dead|{m.get('code', 'unknown')}")


def count_verdict(batch: Batch, m: dict[str, Any]) -> None:
    """A reviewer's verdict (moderation.actions, issue 16): resolved against the automatic
    decision when the batch is written, so confirm / overturn of automatic blocks is counted."""
    batch.verdicts.append((int(m.get("decided_at_ms") or 0), m))


def count_report(batch: Batch, m: dict[str, Any]) -> None:
    """A user or community report (moderation.reports, issue 16)."""
    batch.add(int(m.get("reported_at_ms") or 0), f"report|{m.get('reason') or 'unspecified'}")


class Aggregate:
    """Reads and writes the hourly counts in Redis."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self._apply = client.register_script(_APPLY)

    def offsets(self) -> dict[tuple[str, int], int]:
        out = {}
        for k, v in self.r.hgetall(OFFSETS).items():
            k = k.decode() if isinstance(k, bytes) else k
            topic, _, part = k.rpartition(":")
            out[(topic, int(part))] = int(v)
        return out

    def write(self, batch: Batch) -> bool:
        """Apply the batch and its offsets atomically; False when another consumer already
        counted some of it (the caller re-reads the offsets and carries on from there)."""
        self._resolve_verdicts(batch)
        args: list[Any] = [len(batch.offsets)]
        for (topic, part), (first, nxt) in batch.offsets.items():
            args += [f"{topic}:{part}", first, nxt]
        args.append(len(batch.counts))
        for (hour, name), n in batch.counts.items():
            args += [hour_key(hour), name, n]
        args.append(len(batch.auto))
        for cid, action in batch.auto.items():
            args += [PREFIX + "auto:" + cid, action]
        args.append(len(batch.once))
        for seen, counts in batch.once:
            args += [seen, len(counts)]
            for hour, name, n in counts:
                args += [hour_key(hour), name, n]
        args.append(AUTO_TTL_S)
        return bool(self._apply(keys=[OFFSETS], args=args))

    def _resolve_verdicts(self, batch: Batch) -> None:
        if not batch.verdicts:
            return
        missing = sorted({m.get("content_id", "") for _, m in batch.verdicts} - set(batch.auto))
        known = dict(batch.auto)
        if missing:
            for cid, v in zip(missing, self.r.mget([PREFIX + "auto:" + c for c in missing])):
                if v is not None:
                    known[cid] = v.decode() if isinstance(v, bytes) else v
        for at, m in batch.verdicts:
            action, label = m.get("action", "?"), m.get("label") or "-"
            # the review service says when a case was a QA sample of an automatic block
            prior = "block" if m.get("kind") == "qa" else known.get(m.get("content_id", ""))
            hour = at // HOUR_MS
            counts = [(hour, f"verdict|{action}|{label}", 1), (hour, f"verdict_on|{prior or 'none'}|{action}", 1)]
            if m.get("event_id"):
                batch.once.append((PREFIX + "seen:" + str(m["event_id"]), counts))
            else:
                for h, name, n in counts:
                    batch.counts[(h, name)] += n
        batch.verdicts.clear()

    def hours(self, first_hour: int, last_hour: int) -> Iterable[tuple[int, dict[str, int]]]:
        """(hour, counts) for every hour in [first_hour, last_hour) that has any, in order."""
        step = 2000
        for start in range(first_hour, last_hour, step):
            span = range(start, min(last_hour, start + step))
            pipe = self.r.pipeline(transaction=False)
            for h in span:
                pipe.hgetall(hour_key(h))
            for h, raw in zip(span, pipe.execute()):
                if raw:
                    yield h, {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    def add_counts(self, hour: int, counts: dict[str, int]) -> None:
        """Write counts directly (the benchmark's synthetic year; a rebuild from an export)."""
        pipe = self.r.pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(hour_key(hour), name, n)
        pipe.execute()

    def clear(self) -> int:
        """Drop the counts, offsets and remembered decisions (before a rebuild from the raw
        topics). The evidence audit stream and anything else under the prefix are kept."""
        removed = 0
        for pattern in ("h:*", "auto:*", "seen:*"):
            keys = list(self.r.scan_iter(match=PREFIX + pattern, count=1000))
            for i in range(0, len(keys), 1000):
                removed += self.r.delete(*keys[i:i + 1000])
        return removed + self.r.delete(OFFSETS)
