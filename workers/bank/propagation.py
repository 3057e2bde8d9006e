"""When a bank change is live: each matcher's heartbeat in Redis (the bank version it has applied),
and the wait for every live matcher to reach a version.

A bank write returns as soon as Redis holds it; matchers apply it from the change stream a moment
later (seconds, for a million-entry import). Until then they decide with the bank as it was, so the
writer (`vigil bank import --wait`, the HTTP API's bank writes) waits here before saying "enforced".

Layout (prefix `vigil:`):
  matcher:<name>  STRING  {name, version, head, loaded, catching_up, at_ms, pid, host} JSON, SET with
                  EX HEARTBEAT_TTL_S: a matcher that stops beating (dead, hung) disappears by itself
  matchers        ZSET    name -> last beat (ms): who to look for, without a SCAN of the keyspace
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import redis

PREFIX = "vigil:"
MATCHERS = PREFIX + "matchers"
HEARTBEAT_TTL_S = 10  # a matcher beats every ~1 s; after this long without a beat it is not live
FORGET_AFTER_S = 86_400  # names in MATCHERS whose key expired this long ago are dropped by readers


def heartbeat_key(name: str) -> str:
    return f"{PREFIX}matcher:{name}"


@dataclass(frozen=True)
class MatcherBeat:
    """One matcher's last heartbeat: the bank version its index reflects and the newest it knows of."""

    name: str
    version: int  # applied: decisions are made with at least this bank version
    head: int  # the store's version when it beat (behind = head - version)
    loaded: bool  # False while a cold start loads the bank (no decisions yet)
    catching_up: bool  # reading or applying changes it knows are there
    at_ms: int
    pid: int = 0
    host: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "MatcherBeat":
        return cls(str(obj["name"]), int(obj["version"]), int(obj.get("head", 0)), bool(obj.get("loaded", True)),
                   bool(obj.get("catching_up", False)), int(obj["at_ms"]), int(obj.get("pid", 0)),
                   str(obj.get("host", "")))


def beat(r: redis.Redis, status: MatcherBeat, ttl_s: int = HEARTBEAT_TTL_S) -> None:
    """Write a matcher's heartbeat (the matcher's Redis user may SET its key and ZADD the roster)."""
    pipe = r.pipeline(transaction=False)
    pipe.set(heartbeat_key(status.name), json.dumps(status.to_json(), separators=(",", ":")), ex=ttl_s)
    pipe.zadd(MATCHERS, {status.name: status.at_ms})
    pipe.execute()


def forget(r: redis.Redis, name: str) -> None:
    """A matcher stopping cleanly: gone at once rather than after HEARTBEAT_TTL_S."""
    r.delete(heartbeat_key(name))


def live_matchers(r: redis.Redis) -> list[MatcherBeat]:
    """Every matcher whose heartbeat has not expired, by name. Forgets names long gone."""
    names = sorted(r.zrange(MATCHERS, 0, -1))
    if not names:
        return []
    out = []
    for name, raw in zip(names, r.mget([heartbeat_key(n) for n in names])):
        if raw is None:
            continue
        try:
            out.append(MatcherBeat.from_json(json.loads(raw)))
        except (ValueError, KeyError, TypeError):
            continue  # an unreadable beat: as if that matcher were not there
    try:
        r.zremrangebyscore(MATCHERS, 0, int(time.time() * 1000) - FORGET_AFTER_S * 1000)
    except redis.exceptions.NoPermissionError:
        pass  # a read-only user: the roster stays as it is
    return out


@dataclass
class Propagation:
    """The outcome of waiting for a version: who has it, who is behind, how long it took."""

    version: int
    ok: bool
    seconds: float
    matchers: list[MatcherBeat] = field(default_factory=list)  # live at the end of the wait

    @property
    def behind(self) -> list[MatcherBeat]:
        return [m for m in self.matchers if m.version < self.version]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "ok": self.ok, "seconds": round(self.seconds, 3),
                "matchers": {m.name: m.version for m in self.matchers},
                "behind": [m.name for m in self.behind]}

    def summary(self) -> str:
        if not self.matchers:
            return f"bank version {self.version}: no live matchers to wait for"
        if self.ok:
            return (f"bank version {self.version} live in all {len(self.matchers)} matchers "
                    f"after {self.seconds:.1f} s")
        late = ", ".join(f"{m.name} at {m.version}" + ("" if m.loaded else " (loading)") for m in self.behind)
        return (f"bank version {self.version} NOT yet live after {self.seconds:.1f} s: "
                f"{len(self.behind)} of {len(self.matchers)} matchers behind ({late})")


def wait_for_version(r: redis.Redis, version: int, timeout_s: float,
                     progress: Callable[[int, int], None] | None = None, poll_s: float = 0.2) -> Propagation:
    """Block until every live matcher reports `version` or later, or `timeout_s` passes.

    Live means its heartbeat has not expired: a matcher that dies meanwhile stops counting, one that
    starts meanwhile counts (its cold start loads a version at least as new). `progress(done, live)`
    is called on every poll. With no live matcher it returns at once, ok, with an empty list."""
    t0 = time.monotonic()
    while True:
        matchers = live_matchers(r)
        done = sum(m.version >= version for m in matchers)
        if progress is not None:
            progress(done, len(matchers))
        elapsed = time.monotonic() - t0
        if done == len(matchers):
            return Propagation(version, True, elapsed, matchers)
        if elapsed >= timeout_s:
            return Propagation(version, False, elapsed, matchers)
        time.sleep(min(poll_s, max(timeout_s - elapsed, 0.01)))
