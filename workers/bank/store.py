"""The bank's Redis store: every change is versioned and appended to a change stream.

Layout (prefix `vigil:`):
  banks                HASH  name -> Bank JSON
  bank:<name>:entries  HASH  entry_id -> Entry JSON
  bank:<name>:codes:<signal>  HASH  entry_id -> that entry's <signal> values, packed binary (see
                       workers.bank.codes): enabled entries only, written in the same script as the
                       JSON, so a matcher cold-starts from raw bytes instead of parsing 10M JSONs
  bank:<name>:labels   HASH  label id -> label, for the ids in the packed codes
  bank:<name>:snap     HASH  signal -> snapshot meta JSON {gen, version, stream_id, chunks, entries,
                       rows, bytes, at_ms} (workers.bank.snapshot.SnapshotMeta); no field: no snapshot
  bank:<name>:snap:<signal>:<gen>:<i>  STRING  chunk i (0..chunks-1) of that snapshot of the codes
                       hash: ~100k entries / <= ~8 MB each, binary (format in workers.bank.snapshot)
  layout               HASH  bank -> "codes-v2" once the bank's codes hashes are complete
  version              INT   bumped once per change
  changes              STREAM  {v, op, bank, data}: what matchers replay on top of a snapshot. A
                       change of more than INLINE_CHANGE entries (an import batch) is op entries_ref
                       with only their ids: readers HMGET the JSON (read_changes does), so a 10M-line
                       import adds ~25 bytes an entry here, not the ~260 of its JSON again
  audit                STREAM  {v, op, bank, actor, at_ms, detail}: who changed what, kept for review
  policy               HASH  policy name -> rules JSON (`provenance`: workers/policy/provenance.py), set
                       like a bank (`vigil policy provenance`): versioned, audited, in the change
                       stream as op policy_put (the index ignores it; matchers re-read the hash when
                       the version moves, and the bump invalidates cached decisions)

A change and its version bump are one Lua script, so a matcher that snapshots and then reads the
stream from the id it saw before the snapshot never misses a change (replays are idempotent).

Binary snapshots (`write_snapshot`, `vigil bank snapshot`) exist because HSCAN of a 10M-field codes
hash costs Redis ~26 s; GETting the same bytes as ~100 strings costs well under a second. They are
consistent by the same argument: the writer reads the version V0 and stream id S0 *before* scanning,
so every change the scan may have missed or half-seen is in the stream after S0. A matcher that loads
a snapshot replays the stream from S0 (in version order, an entry's last change wins, and applying a
change twice is harmless), which leaves each entry as the stream's last word on it, or as the scan saw
it if the stream says nothing after S0. A snapshot is only used while the stream still holds every
version after V0 (it is trimmed at ~CHANGES_MAXLEN), so operators re-run `vigil bank snapshot --all`
periodically; an older one is ignored and the matcher HSCANs as before. Writing a snapshot also trims
the stream to what is still needed: changes after the oldest snapshot, and the last CHANGES_KEEP_S
seconds for matchers tailing it (one further behind reloads).

Reading an entries_ref change's JSON later than it was written is safe by the same argument: the
entries hash then holds that change's state or a later one, and every later change is itself in the
stream after it, so the entry still ends as the stream's last word on it.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Iterable, Iterator

import numpy as np
import redis

from workers.bank.change_stream import Change, ChangeStreamReads, Snapshot  # noqa: F401  (re-exported)
from workers.bank.codes import (  # noqa: F401  (NO_FRAME re-exported: callers' layout name)
    CODE_SIGNALS,
    CODES_LAYOUT,
    NO_FRAME,
    CodeBlock,
    label_id,
    pack_codes,
    unpack_block,
)
from workers.bank.keys import (  # noqa: F401  (re-exported: callers import the key names from here)
    AUDIT,
    BANKS,
    CHANGES,
    CHANGES_MAXLEN,
    INLINE_CHANGE,
    LAYOUT,
    POLICY,
    PREFIX,
    VERSION,
    chunk_key,
    codes_key,
    entries_key,
    labels_key,
    snap_key,
    stream_pos,
)
from workers.bank.model import ACTIONS, Bank, BankError, Entry  # noqa: F401  (BankError re-exported)
from workers.bank.snapshot_store import SnapshotWrites


def _codes_pairs(bank: str, entries: list[Entry], new: bool = False) -> list[tuple[str, str, bytes | str]]:
    """(key, field, value) that bring the codes hashes in line with these entries ('' deletes).
    new: the entries are absent from the bank, so there is nothing of theirs to delete."""
    out: list[tuple[str, str, bytes | str]] = []
    for e in entries:
        present = {sv.signal for sv in e.signals} if not e.disabled else set()
        for signal in CODE_SIGNALS:
            if signal in present:
                out.append((codes_key(bank, signal), e.entry_id, pack_codes(e, signal)))
            elif not new:
                out.append((codes_key(bank, signal), e.entry_id, ""))
        # (HDEL of an absent field is a no-op, so every signal is listed: a replaced entry that
        # lost a signal leaves nothing behind.)
    for label in {e.label for e in entries if e.label is not None and not e.disabled}:
        out.append((labels_key(bank), str(label_id(label)), label))
    return out


def default_dihedral(action: str) -> bool:
    """Flipped and rotated (by 90°) copies match `block` and `review` banks unless the bank opts out:
    a mirrored copy is the first edit an uploader tries, and at the default thresholds the 7 variants
    added no false match against 5,000+ real distractors (benchmarks/bench_accuracy.py). Allowlists
    stay exact: a mirrored logo is not the logo."""
    return action in ("block", "review")


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


class BankStore(SnapshotWrites, ChangeStreamReads):
    """Reads and writes banks. Writers are the bank CLI; workers only read (see README: ACLs)."""

    def __init__(self, client: redis.Redis, actor: str = "unknown"):
        self.r = client
        self.actor = actor
        self._apply = self.r.register_script(_APPLY)
        self._register_snapshot_scripts()
        self._raw_client: redis.Redis | None = None
        self.last_version = 0  # the version this store's last write created (what a writer waits for)

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
        self.last_version = int(self._apply(keys=keys, args=argv))
        return self.last_version

    def create_bank(self, name: str, action: str, *, label: str | None = None, exist_ok: bool = False,
                    thresholds: dict[str, int] | None = None, dihedral: bool | None = None, description: str = "",
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
        if dihedral is None:
            dihedral = default_dihedral(action)
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

    def add_entries(self, bank: str, entries: list[Entry], new: bool = False) -> int:
        """Add or replace entries (same id = same content, so re-adding is idempotent). new=True
        when the caller just saw none of these ids in the bank (the importer, whose ids are the
        hash itself): their codes need no clean-up of signals an older version had."""
        self.require_bank(bank)
        if not entries:
            return self.version()
        self._check_labels(bank, {e.label for e in entries if e.label is not None})
        payload = [e.to_json() for e in entries]
        blobs = [json.dumps(p, separators=(",", ":")) for p in payload]
        op, data = ("entries_ref", [e.entry_id for e in entries]) if len(entries) > INLINE_CHANGE \
            else ("entries_put", payload)
        return self._write(op, bank, data, entries_key(bank), [(e.entry_id, b) for e, b in zip(entries, blobs)],
                           _codes_pairs(bank, entries, new))

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

    def delete_bank(self, name: str, batch: int = 1000) -> int:
        """Remove a bank and everything in it; returns the version. Entries go first, as ordinary
        removals in the change stream, so a matcher tailing it drops them from its index (a bank
        created later under the same name starts empty); then the bank itself and its snapshots."""
        self.require_bank(name)
        while ids := [e.entry_id for e in _take(self.iter_entries(name), batch)]:
            self.remove_entries(name, ids)
        version = self._write("bank_delete", name, None, BANKS, [(name, "")], [(LAYOUT, name, "")])
        for key in self.r.scan_iter(match=f"{PREFIX}bank:{name}:*", count=1000):
            self.r.delete(key)
        return version

    def existing_ids(self, bank: str, entry_ids: list[str]) -> set[str]:
        if not entry_ids:
            return set()
        found = self.r.hmget(entries_key(bank), entry_ids)
        return {e for e, v in zip(entry_ids, found) if v is not None}

    def set_policy(self, name: str, rules: dict[str, Any] | None) -> int:
        """Store (None: remove) a policy's rules, as one versioned, audited change."""
        value = "" if rules is None else json.dumps(rules, sort_keys=True, separators=(",", ":"))
        return self._write("policy_put", f"policy:{name}", rules, POLICY, [(name, value)])

    def get_policy(self, name: str) -> dict[str, Any] | None:
        raw = self.r.hget(POLICY, name)
        return json.loads(raw) if raw else None

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
    def raw(self) -> redis.Redis:
        """The bytes-in, bytes-out client (packed codes are binary)."""
        return self._raw

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

def _take(it: Iterator[Entry], n: int) -> list[Entry]:
    out = []
    for e in it:
        out.append(e)
        if len(out) >= n:
            break
    return out


def _check_name(name: str) -> None:
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise BankError(f"bank names use letters, digits, '-', '_' and '.', up to 100 characters: {name!r}")
