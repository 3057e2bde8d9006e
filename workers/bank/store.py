"""The bank's Redis store: every change is versioned and appended to a change stream.

Layout (prefix `vigil:`):
  banks                HASH  name -> Bank JSON
  bank:<name>:entries  HASH  entry_id -> Entry JSON
  version              INT   bumped once per change
  changes              STREAM  {v, op, bank, data}: what matchers replay on top of a snapshot
  audit                STREAM  {v, op, bank, actor, at_ms, detail}: who changed what, kept for review

A change and its version bump are one Lua script, so a matcher that snapshots and then reads the
stream from the id it saw before the snapshot never misses a change (replays are idempotent).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import redis

from workers.bank.model import ACTIONS, Bank, Entry

PREFIX = "vigil:"
BANKS = PREFIX + "banks"
VERSION = PREFIX + "version"
CHANGES = PREFIX + "changes"
AUDIT = PREFIX + "audit"
CHANGES_MAXLEN = 1_000_000  # approximate; a matcher that falls further behind reloads the snapshot


def entries_key(bank: str) -> str:
    return f"{PREFIX}bank:{bank}:entries"


class BankError(Exception):
    """A bank operation the user asked for cannot be done (unknown bank, bad action...)."""


# KEYS: version, changes, audit, target-hash. ARGV: op, bank, data, actor, at_ms, maxlen, then
# field/value pairs to HSET (an empty value means HDEL).
_APPLY = """
local v = redis.call('INCR', KEYS[1])
for i = 7, #ARGV, 2 do
  if ARGV[i+1] == '' then redis.call('HDEL', KEYS[4], ARGV[i])
  else redis.call('HSET', KEYS[4], ARGV[i], ARGV[i+1]) end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'v', v, 'op', ARGV[1], 'bank', ARGV[2], 'data', ARGV[3])
redis.call('XADD', KEYS[3], '*', 'v', v, 'op', ARGV[1], 'bank', ARGV[2], 'actor', ARGV[4], 'at_ms', ARGV[5],
           'detail', string.sub(ARGV[3], 1, 2000))
return v
"""


@dataclass(frozen=True)
class Change:
    stream_id: str
    version: int
    op: str  # bank_put | bank_delete | entries_put | entries_delete
    bank: str
    data: Any


@dataclass(frozen=True)
class Snapshot:
    version: int
    stream_id: str  # read the change stream after this id
    banks: dict[str, Bank]


class BankStore:
    """Reads and writes banks. Writers are the bank CLI; workers only read (see README: ACLs)."""

    def __init__(self, client: redis.Redis, actor: str = "unknown"):
        self.r = client
        self.actor = actor
        self._apply = self.r.register_script(_APPLY)

    @classmethod
    def from_url(cls, url: str, actor: str = "unknown", **kwargs: Any) -> "BankStore":
        return cls(redis.Redis.from_url(url, decode_responses=True, **kwargs), actor)

    # -- writes -------------------------------------------------------------------------------
    def _write(self, op: str, bank: str, data: Any, target: str, pairs: Iterable[tuple[str, str]]) -> int:
        argv: list[Any] = [op, bank, json.dumps(data, separators=(",", ":")), self.actor,
                           int(time.time() * 1000), CHANGES_MAXLEN]
        for field, value in pairs:
            argv += [field, value]
        return int(self._apply(keys=[VERSION, CHANGES, AUDIT, target], args=argv))

    def create_bank(self, name: str, action: str, *, label: str | None = None, exist_ok: bool = False,
                    thresholds: dict[str, int] | None = None, dihedral: bool = False, description: str = "",
                    live_strict: dict[str, int] | None = None, live_frames: int = 2,
                    live_window_s: float = 10.0) -> Bank:
        _check_name(name)
        if action not in ACTIONS:
            raise BankError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        existing = self.get_bank(name)
        if existing is not None:
            if exist_ok and existing.action == action:
                return existing
            raise BankError(f"bank {name!r} already exists (action {existing.action})")
        if live_frames < 1 or live_window_s <= 0:
            raise BankError("live_frames must be >= 1 and live_window_s > 0")
        bank = Bank(name, action, label=label, thresholds=dict(thresholds or {}), dihedral=dihedral,
                    created_at_ms=int(time.time() * 1000), description=description,
                    live_strict=dict(live_strict or {}), live_frames=live_frames, live_window_s=live_window_s)
        self._put_bank(bank)
        return bank

    def update_bank(self, name: str, **changes: Any) -> Bank:
        bank = self.require_bank(name)
        if "action" in changes and changes["action"] not in ACTIONS:
            raise BankError(f"action must be one of {', '.join(ACTIONS)}")
        bank = replace(bank, **changes)
        self._put_bank(bank)
        return bank

    def _put_bank(self, bank: Bank) -> int:
        blob = json.dumps(bank.to_json())
        return self._write("bank_put", bank.name, bank.to_json(), BANKS, [(bank.name, blob)])

    def add_entries(self, bank: str, entries: list[Entry]) -> int:
        """Add or replace entries (same id = same content, so re-adding is idempotent)."""
        self.require_bank(bank)
        if not entries:
            return self.version()
        payload = [e.to_json() for e in entries]
        return self._write("entries_put", bank, payload, entries_key(bank),
                           [(e.entry_id, json.dumps(p, separators=(",", ":"))) for e, p in zip(entries, payload)])

    def remove_entries(self, bank: str, entry_ids: list[str]) -> int:
        self.require_bank(bank)
        missing = [e for e in entry_ids if not self.r.hexists(entries_key(bank), e)]
        if missing:
            raise BankError(f"no entry {missing[0]!r} in bank {bank!r}")
        return self._write("entries_delete", bank, entry_ids, entries_key(bank), [(e, "") for e in entry_ids])

    def set_entry_disabled(self, bank: str, entry_id: str, disabled: bool) -> int:
        """A tombstone: the entry stops matching at once but stays for audit."""
        entry = self.get_entry(bank, entry_id)
        if entry is None:
            raise BankError(f"no entry {entry_id!r} in bank {bank!r}")
        return self.add_entries(bank, [replace(entry, disabled=disabled)])

    def existing_ids(self, bank: str, entry_ids: list[str]) -> set[str]:
        if not entry_ids:
            return set()
        found = self.r.hmget(entries_key(bank), entry_ids)
        return {e for e, v in zip(entry_ids, found) if v is not None}

    # -- reads --------------------------------------------------------------------------------
    def version(self) -> int:
        return int(self.r.get(VERSION) or 0)

    def get_bank(self, name: str) -> Bank | None:
        raw = self.r.hget(BANKS, name)
        return Bank.from_json(json.loads(raw)) if raw else None

    def require_bank(self, name: str) -> Bank:
        bank = self.get_bank(name)
        if bank is None:
            known = ", ".join(sorted(self.banks())) or "none yet"
            raise BankError(f"no bank named {name!r} (banks: {known}); create it with `vigil bank create`")
        return bank

    def banks(self) -> dict[str, Bank]:
        return {n: Bank.from_json(json.loads(v)) for n, v in self.r.hgetall(BANKS).items()}

    def get_entry(self, bank: str, entry_id: str) -> Entry | None:
        raw = self.r.hget(entries_key(bank), entry_id)
        return Entry.from_json(json.loads(raw)) if raw else None

    def iter_entries(self, bank: str, count: int = 2000) -> Iterator[Entry]:
        for _, raw in self.r.hscan_iter(entries_key(bank), count=count):
            yield Entry.from_json(json.loads(raw))

    def entry_count(self, bank: str) -> int:
        return int(self.r.hlen(entries_key(bank)))

    def snapshot_start(self) -> Snapshot:
        """Version, stream position and banks read atomically; entries are then read with iter_entries."""
        pipe = self.r.pipeline(transaction=True)
        pipe.get(VERSION)
        pipe.xrevrange(CHANGES, count=1)
        pipe.hgetall(BANKS)
        version, last, banks = pipe.execute()
        stream_id = last[0][0] if last else "0-0"
        return Snapshot(int(version or 0), stream_id,
                        {n: Bank.from_json(json.loads(v)) for n, v in banks.items()})

    def read_changes(self, after_id: str, block_ms: int | None = None, count: int = 500) -> list[Change]:
        reply = self.r.xread({CHANGES: after_id}, count=count, block=block_ms)
        out = []
        for _stream, items in reply or ():
            for stream_id, fields in items:
                out.append(Change(stream_id, int(fields["v"]), fields["op"], fields["bank"], json.loads(fields["data"])))
        return out

    def first_change_version(self) -> int | None:
        first = self.r.xrange(CHANGES, count=1)
        return int(first[0][1]["v"]) if first else None

    def audit(self, count: int = 50) -> list[dict[str, Any]]:
        return [dict(fields, id=i) for i, fields in self.r.xrevrange(AUDIT, count=count)]


def _check_name(name: str) -> None:
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise BankError(f"bank names use letters, digits, '-', '_' and '.', up to 100 characters: {name!r}")
