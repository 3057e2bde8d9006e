"""Livestreams: the ingest contract (headers), the producer SDK ingest services use, and the
per-stream state machine that turns matched frames into at most one review and one block.

A frame on `moderation.live-frames` is the encoded image itself (JPEG, PNG or WebP; not base64),
key = stream_id, with headers stream_id, seq, captured_at_ms, content_type and optionally
end_of_stream=1. Instead of bytes a frame may carry a `media_uri` header (file:// under a media root).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

import topics
from workers.bank.model import LIVE_STRICT, Bank
from workers.errors import MediaError
from workers.stream.kafka import producer_config
from workers.index.matching import Match
from workers.policy import STRENGTH, decide
from workers.settings import Settings

CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp")
MAX_WINDOW_FRAMES = 256  # bound on the matched frames kept per stream
# An ended stream leaves a tombstone this long, so a replay of its last frames (after a crash or a
# rebalance, seconds later) is recognised instead of starting a phantom stream with a second block.
ENDED_TTL_MS = 10 * 60 * 1000
# A stream whose ingest stopped without an end-of-stream marker is forgotten after this long
# without a frame, so the state a matcher holds stays bounded by the streams actually live.
IDLE_TTL_MS = 60 * 60 * 1000


# -- ingest ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameHeaders:
    stream_id: str
    seq: int
    captured_at_ms: int
    content_type: str | None
    end_of_stream: bool
    media_uri: str | None


def parse_headers(headers: list[tuple[str, bytes]] | None, key: bytes | None) -> FrameHeaders:
    """Validate a live frame's headers; MediaError('schema_invalid') says which is wrong."""
    h: dict[str, str] = {}
    for name, value in headers or ():
        try:
            h[name] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise MediaError("invalid_utf8", f"header {name!r} is not UTF-8") from None
    stream_id = h.get("stream_id") or (key.decode("utf-8", "replace") if key else "")
    if not stream_id or len(stream_id) > 200:
        raise MediaError("schema_invalid", "live frame needs a stream_id header (or key) of 1-200 characters")
    try:
        seq = int(h["seq"])
        captured = int(h["captured_at_ms"])
    except KeyError as exc:
        raise MediaError("schema_invalid", f"live frame is missing the {exc.args[0]} header") from None
    except ValueError:
        raise MediaError("schema_invalid", "seq and captured_at_ms headers must be integers") from None
    if seq < 0 or captured < 0:
        raise MediaError("schema_invalid", "seq and captured_at_ms must not be negative")
    ctype = h.get("content_type")
    if ctype is not None and ctype not in CONTENT_TYPES:
        raise MediaError("schema_invalid", f"content_type must be one of {', '.join(CONTENT_TYPES)}")
    end = h.get("end_of_stream", "").lower() in ("1", "true", "yes")
    return FrameHeaders(stream_id, seq, captured, ctype, end, h.get("media_uri"))


class LiveFrameProducer:
    """What an ingest sampler calls: one frame per call, bytes as they are."""

    def __init__(self, settings: Settings):
        # Frames are JPEG/PNG/WebP, already compressed: lz4 would only cost CPU at both ends.
        self.producer = Producer({**producer_config(settings), "linger.ms": 0, "compression.type": "none"})

    def send_frame(self, stream_id: str, seq: int, data: bytes | None, content_type: str = "image/jpeg",
                   captured_at_ms: int | None = None, end_of_stream: bool = False,
                   media_uri: str | None = None) -> None:
        headers = [("stream_id", stream_id.encode()), ("seq", str(seq).encode()),
                   ("captured_at_ms", str(captured_at_ms or int(time.time() * 1000)).encode())]
        if data is not None:
            headers.append(("content_type", content_type.encode()))
        if media_uri:
            headers.append(("media_uri", media_uri.encode()))
        if end_of_stream:
            headers.append(("end_of_stream", b"1"))
        self.producer.produce(topics.LIVE_FRAMES, key=stream_id.encode(), value=data, headers=headers)
        self.producer.poll(0)

    def end_stream(self, stream_id: str, seq: int) -> None:
        self.send_frame(stream_id, seq, None, end_of_stream=True)

    def flush(self, timeout: float = 30.0) -> None:
        if self.producer.flush(timeout):
            raise RuntimeError(f"live frames not delivered within {timeout:.0f}s")


# -- per-stream state ----------------------------------------------------------------------------
def new_state(captured_at_ms: int) -> dict[str, Any]:
    """Plain JSON, so it can be written to the changelog (workers/live/matcher.py) and survive a restart.
    `at` is the [partition, offset] of the last message folded in (see `is_replay`), `last` the
    [seq, captured_at_ms] of the last frame (see `is_rehash`)."""
    return {"started_at_ms": captured_at_ms, "frames": 0, "skipped": 0, "matched_frames": 0,
            "window": [], "status": "allow", "first_match": None, "last_match": None, "at": None, "last": None}


def is_replay(state: dict[str, Any] | None, partition: int, offset: int) -> bool:
    """A message this state already folded in: at-least-once delivery replays messages after a
    crash or a rebalance, and folding one twice would count its frame twice (or, after the end,
    start the stream again). Offsets order messages within a partition only."""
    at = (state or {}).get("at")
    return bool(at) and at[0] == partition and offset <= at[1]


def is_rehash(state: dict[str, Any] | None, seq: int, captured_at_ms: int) -> bool:
    """A frame this stream has already counted, hashed again by a hasher that took over from one
    that crashed before committing (a new message, so not `is_replay`). Sequence numbers rise
    within a session; a source that restarts its numbering captures later, so it is not caught."""
    last = (state or {}).get("last")
    return bool(last) and seq <= last[0] and captured_at_ms <= last[1]


def tombstone(state: dict[str, Any], end_captured_at_ms: int, ended_at_ms: int) -> dict[str, Any]:
    """What is kept of an ended stream until ENDED_TTL_MS: enough to recognise replays."""
    return {"ended_at_ms": ended_at_ms, "end_captured_at_ms": end_captured_at_ms,
            "started_at_ms": state["started_at_ms"], "at": state["at"]}


def is_stale(state: dict[str, Any] | None, captured_at_ms: int) -> bool:
    """A frame of a stream that has ended, captured before its end: a hasher that crashed re-hashes
    frames it had already sent (new offsets, so not `is_replay`). A new session under the same
    stream_id captures its frames after the end."""
    return bool(state) and "ended_at_ms" in state and captured_at_ms <= state["end_captured_at_ms"]


def expired(state: dict[str, Any], now_ms: int) -> bool:
    """A tombstone past its TTL, or a stream without a frame for IDLE_TTL_MS (by the matcher's
    clock, `seen_at_ms`, which an ingest's skewed clock cannot move)."""
    if "ended_at_ms" in state:
        return now_ms - state["ended_at_ms"] > ENDED_TTL_MS
    return now_ms - state.get("seen_at_ms", now_ms) > IDLE_TTL_MS


def step(state: dict[str, Any], stream_id: str, seq: int, captured_at_ms: int, skipped: int,
         matches: list[Match], banks: dict[str, Bank]) -> tuple[str | None, list[dict]]:
    """Fold one frame into the stream's state (in place). Returns the new status when it rose
    (allow -> review -> block), with the evidence frames, else (None, []). A hasher's skip count
    may include frames counted before it took over: only the sequence numbers since the last
    frame can be new."""
    last = state.get("last")
    if last and seq > last[0]:
        skipped = min(skipped, seq - last[0] - 1)
    state["last"] = [seq, captured_at_ms]
    state["frames"] += 1
    state["skipped"] += skipped
    verdict, evidence = decide(matches)
    if verdict == "allow" or not evidence:
        return None, []
    ev = [dict(m.to_json(), seq=seq, captured_at_ms=captured_at_ms) for m in evidence[:10]]
    state["matched_frames"] += 1
    state["first_match"] = state["first_match"] or {"seq": seq, "captured_at_ms": captured_at_ms}
    state["last_match"] = {"seq": seq, "captured_at_ms": captured_at_ms}
    status = "review"
    window = list(state["window"])
    for m in evidence:
        bank = banks.get(m.bank)
        if m.action != "block" or bank is None:
            continue
        strict = bank.live_strict.get(m.signal, LIVE_STRICT.get(m.signal, 0))
        if m.distance <= strict:
            status = "block"
        window.append({"bank": m.bank, "seq": seq, "at": captured_at_ms,
                       "match": dict(m.to_json(), seq=seq, captured_at_ms=captured_at_ms)})
    # N matched frames of a block bank within its window also block; they are the evidence
    for name in {w["bank"] for w in window}:
        bank = banks.get(name)
        if bank is None:
            continue
        horizon = captured_at_ms - int(bank.live_window_s * 1000)
        recent = [w for w in window if w["bank"] == name and w["at"] >= horizon]
        if len({w["seq"] for w in recent}) >= bank.live_frames:
            status = "block"
            seen = {(e["seq"], e["bank"], e["entry_id"]) for e in ev}
            ev += [w["match"] for w in recent if (w["seq"], w["bank"], w["match"]["entry_id"]) not in seen]
    longest = max((b.live_window_s for b in banks.values()), default=10.0)
    state["window"] = [w for w in window if w["at"] >= captured_at_ms - int(longest * 1000)][-MAX_WINDOW_FRAMES:]
    if STRENGTH[status] > STRENGTH[state["status"]]:
        state["status"] = status
        return status, ev
    return None, []


def event_id(stream_id: str, state: dict[str, Any], what: str) -> str:
    """Deterministic per stream session, so a replay after a crash repeats the same id and
    downstream deduplication by event_id removes it."""
    return f"live:{stream_id}:{state['started_at_ms']}:{what}"
