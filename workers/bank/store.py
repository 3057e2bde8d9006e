"""The bank's Redis store: every change is versioned and appended to a change stream.

Layout (prefix `vigil:`):
  banks                HASH  name -> Bank JSON
  bank:<name>:entries  HASH  entry_id -> Entry JSON
  bank:<name>:codes:<signal>  HASH  entry_id -> that entry's <signal> values, packed binary (see
                       workers.bank.codes): enabled entries only, written in the same script as the
                       JSON, so a matcher cold-starts from raw bytes instead of parsing 10M JSONs
  bank:<name>:labels   HASH  label id -> label, for the ids in the packed codes
  layout               HASH  bank -> "codes-v2" once the bank's codes hashes are complete
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

import numpy as np
import redis

from workers.bank.codes import (  # noqa: F401  (re-exported: callers' layout names)
    CODE_SIGNALS,
    CODES_LAYOUT,
    NO_FRAME,
    CodeBlock,
    label_id,
    pack_codes,
    unpack_block,
)
from workers.bank.model import ACTIONS, Bank, Entry

PREFIX = "vigil:"
BANKS = PREFIX + "banks"
VERSION = PREFIX + "version"
CHANGES = PREFIX + "changes"
AUDIT = PREFIX + "audit"
LAYOUT = PREFIX + "layout"
CHANGES_MAXLEN = 1_000_000  # approximate; a matcher that falls further behind reloads the snapshot


def entries_key(bank: str) -> str:
    return f"{PREFIX}bank:{bank}:entries"


def codes_key(bank: str, signal: str) -> str:
    return f"{PREFIX}bank:{bank}:codes:{signal}"


def labels_key(bank: str) -> str:
    return f"{PREFIX}bank:{bank}:labels"


def _codes_pairs(bank: str, entries: list[Entry]) -> list[tuple[str, str, bytes | str]]:
    """(key, field, value) that bring the codes hashes in line with these entries ('' deletes)."""
    out: list[tuple[str, str, bytes | str]] = []
    for e in entries:
        present = {sv.signal for sv in e.signals} if not e.disabled else set()
        for signal in CODE_SIGNALS:
            if signal in present:
                out.append((codes_key(bank, signal), e.entry_id, pack_codes(e, signal)))
            else:
                out.append((codes_key(bank, signal), e.entry_id, ""))
        # (HDEL of an absent field is a no-op, so every signal is listed: a replaced entry that
        # lost a signal leaves nothing behind.)
    for label in {e.label for e in entries if e.label is not None and not e.disabled}:
        out.append((labels_key(bank), str(label_id(label)), label))
    return out


class BankError(Exception):
    """A bank operation the user asked for cannot be done (unknown bank, bad action...)."""


# KEYS: version, changes, audit, then the hashes written. ARGV: op, bank, data, actor, at_ms, maxlen,
# then (key index, field, value) triples to HSET (an empty value means HDEL).
_APPLY = """
local v = redis.call('INCR', KEYS[1])
for i = 7, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  if ARGV[i+2] == '' then redis.call('HDEL', key, ARGV[i+1])
  else redis.call('HSET', key, ARGV[i+1], ARGV[i+2]) end
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
        self._raw_client: redis.Redis | None = None

    @classmethod
    def from_url(cls, url: str, actor: str = "unknown", **kwargs: Any) -> "BankStore":
        return cls(redis.Redis.from_url(url, decode_responses=True, **kwargs), actor)

    # -- writes -------------------------------------------------------------------------------
    def _write(self, op: str, bank: str, data: Any, target: str, pairs: Iterable[tuple[str, str]],
               more: Iterable[tuple[str, str, bytes | str]] = ()) -> int:
        """One atomic change: HSET/HDEL `pairs` in `target` and `more` (key, field, value) elsewhere."""
        argv: list[Any] = [op, bank, json.dumps(data, separators=(",", ":")), self.actor,
                           int(time.time() * 1000), CHANGES_MAXLEN]
        keys = [VERSION, CHANGES, AUDIT, target]
        slot = {target: 4}
        for field, value in pairs:
            argv += [4, field, value]
        for key, field, value in more:
            if key not in slot:
                keys.append(key)
                slot[key] = len(keys)
            argv += [slot[key], field, value]
        return int(self._apply(keys=keys, args=argv))

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
        self._put_bank(bank, [(LAYOUT, name, CODES_LAYOUT)])  # born with complete (empty) codes hashes
        return bank

    def update_bank(self, name: str, **changes: Any) -> Bank:
        bank = self.require_bank(name)
        if "action" in changes and changes["action"] not in ACTIONS:
            raise BankError(f"action must be one of {', '.join(ACTIONS)}")
        bank = replace(bank, **changes)
        self._put_bank(bank)
        return bank

    def _put_bank(self, bank: Bank, more: Iterable[tuple[str, str, str]] = ()) -> int:
        blob = json.dumps(bank.to_json())
        return self._write("bank_put", bank.name, bank.to_json(), BANKS, [(bank.name, blob)], more)

    def add_entries(self, bank: str, entries: list[Entry]) -> int:
        """Add or replace entries (same id = same content, so re-adding is idempotent)."""
        self.require_bank(bank)
        if not entries:
            return self.version()
        self._check_labels(bank, {e.label for e in entries if e.label is not None})
        payload = [e.to_json() for e in entries]
        return self._write("entries_put", bank, payload, entries_key(bank),
                           [(e.entry_id, json.dumps(p, separators=(",", ":"))) for e, p in zip(entries, payload)],
                           _codes_pairs(bank, entries))

    def _check_labels(self, bank: str, labels: set[str]) -> None:
        """Two labels with one id would show the wrong one in decisions: refuse (never seen)."""
        ids = {str(label_id(x)): x for x in labels}
        if len(ids) != len(labels):
            raise BankError(f"labels {sorted(labels)} collide in their packed ids; rename one")
        if ids:
            for i, stored in zip(ids, self.r.hmget(labels_key(bank), list(ids))):
                if stored is not None and stored != ids[i]:
                    raise BankError(f"label {ids[i]!r} collides with {stored!r} in bank {bank!r}; rename it")

    def remove_entries(self, bank: str, entry_ids: list[str]) -> int:
        self.require_bank(bank)
        present = self.existing_ids(bank, entry_ids)  # one HMGET, not a round trip per id
        missing = [e for e in entry_ids if e not in present]
        if missing:
            raise BankError(f"no entry {missing[0]!r} in bank {bank!r}")
        return self._write("entries_delete", bank, entry_ids, entries_key(bank), [(e, "") for e in entry_ids],
                           [(codes_key(bank, s), e, "") for e in entry_ids for s in CODE_SIGNALS])

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

    def has_codes(self, bank: str) -> bool:
        """True when the bank's packed codes are complete, so iter_codes may replace iter_entries."""
        return self.r.hget(LAYOUT, bank) == CODES_LAYOUT

    def iter_codes(self, bank: str, signal: str, count: int = 10_000) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """The bank's enabled `signal` values in blocks: (entry id per row, codes (rows, bytes) uint8,
        frame_ms (rows,) int64 with NO_FRAME for none)."""
        for block in self.iter_code_blocks(bank, signal, count):
            ids = [i.decode() for i in block.entries]
            if block.per_entry is not None:
                ids = [i for i, k in zip(ids, block.per_entry.tolist()) for _ in range(k)]
            yield ids, block.codes, block.frames

    def iter_code_blocks(self, bank: str, signal: str, count: int = 10_000) -> Iterator[CodeBlock]:
        """Every record of the bank's `signal` codes hash, HSCAN batch by batch. Cold start reads
        these, not JSON entries; with hiredis a block of 10k entries parses in a few milliseconds.
        HSCAN may return an entry twice (rehashing): readers keep its first block."""
        cursor = 0
        while True:
            cursor, found = self._raw.hscan(codes_key(bank, signal), cursor, count=count)
            if found:
                yield unpack_block(signal, found)
            if cursor == 0:
                return

    def labels(self, bank: str) -> dict[int, str]:
        """Label id -> label for the bank's packed codes."""
        return {int(k): v for k, v in self.r.hgetall(labels_key(bank)).items()}

    def backfill_codes(self, bank: str, count: int = 2000) -> int:
        """Write the packed codes of a bank created before they existed; returns entries written.
        Run it with the bank's writers stopped (a concurrent change could be overwritten)."""
        n = 0
        batch: list[Entry] = []
        for entry in self.iter_entries(bank, count):
            batch.append(entry)
            if len(batch) >= count:
                n += self._backfill(bank, batch)
                batch = []
        n += self._backfill(bank, batch)
        self.r.hset(LAYOUT, bank, CODES_LAYOUT)
        return n

    def _backfill(self, bank: str, entries: list[Entry]) -> int:
        pipe = self._raw.pipeline(transaction=False)
        for key, field, value in _codes_pairs(bank, entries):
            if value == "":
                pipe.hdel(key, field)
            else:
                pipe.hset(key, field, value)
        pipe.execute()
        return len(entries)

    @property
    def _raw(self) -> redis.Redis:
        """A bytes-in, bytes-out client on the same server (the main one decodes replies as text)."""
        if self._raw_client is None:
            pool = self.r.connection_pool
            kwargs = dict(pool.connection_kwargs, decode_responses=False)
            self._raw_client = redis.Redis(connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, **kwargs))
        return self._raw_client

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
