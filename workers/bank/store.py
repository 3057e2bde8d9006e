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
  policy               HASH  policy name -> rules JSON (`provenance`: workers/provenance_policy.py), set
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
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import redis

from workers.bank.codes import (  # noqa: F401  (re-exported: callers' layout names)
    CODE_SIGNALS,
    CODES_LAYOUT,
    NO_FRAME,
    TRAILER,
    CodeBlock,
    code_bytes,
    label_id,
    pack_codes,
    unpack_block,
)
from workers.bank.model import ACTIONS, Bank, Entry
from workers.bank.snapshot import (
    CHUNK_BYTES,
    CHUNK_ENTRIES,
    SnapshotError,
    SnapshotMeta,
    pack_chunk,
    parse_chunk,
)

PREFIX = "vigil:"
BANKS = PREFIX + "banks"
VERSION = PREFIX + "version"
CHANGES = PREFIX + "changes"
AUDIT = PREFIX + "audit"
LAYOUT = PREFIX + "layout"
POLICY = PREFIX + "policy"
CHANGES_MAXLEN = 1_000_000  # approximate; a matcher that falls further behind reloads the snapshot
CHANGES_KEEP_S = 600  # write_snapshot trims no change younger than this
INLINE_CHANGE = 100  # entries a change carries as JSON; larger ones carry ids (entries_ref)


def entries_key(bank: str) -> str:
    return f"{PREFIX}bank:{bank}:entries"


def codes_key(bank: str, signal: str) -> str:
    return f"{PREFIX}bank:{bank}:codes:{signal}"


def labels_key(bank: str) -> str:
    return f"{PREFIX}bank:{bank}:labels"


def snap_key(bank: str) -> str:
    return f"{PREFIX}bank:{bank}:snap"


def chunk_key(bank: str, signal: str, gen: str, i: int) -> str:
    return f"{PREFIX}bank:{bank}:snap:{signal}:{gen}:{i}"


def stream_pos(stream_id: str) -> tuple[int, int]:
    """A stream id as a comparable pair ("1700000000000-3" -> (1700000000000, 3))."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


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


# KEYS: the snapshot meta hash. ARGV: signal, new meta JSON ('' = no snapshot), its version.
# Switches the signal's snapshot unless a newer one is already in place; returns {switched, old meta}.
_SWITCH = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and tonumber(cjson.decode(old)['version']) > tonumber(ARGV[3]) then return {0, old} end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return {1, old or ''}
"""


@dataclass(frozen=True)
class Change:
    stream_id: str
    version: int
    op: str  # bank_put | bank_delete | entries_put | entries_delete | policy_put (| entries_packed: read_changes(packed=True))
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
        self._switch = self.r.register_script(_SWITCH)
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

    # -- binary snapshots (see the module docstring) ------------------------------------------
    def write_snapshot(self, bank: str, progress: Callable[[str, int, int], None] | None = None
                       ) -> dict[str, dict[str, Any]]:
        """Snapshot every code signal of the bank; returns signal -> {entries, rows, bytes, seconds,
        version, switched}. `progress(signal, entries done, entries in the hash)` follows the scan."""
        self.require_bank(bank)
        if not self.has_codes(bank):
            raise BankError(f"bank {bank!r} has no complete packed codes (written before codes-v2) to "
                            f"snapshot; run `vigil bank backfill {bank}` first (with its writers stopped)")
        start = self.snapshot_start()  # FIRST: readers replay from here whatever the scan misses
        out = {signal: self._snapshot_signal(bank, signal, start, progress) for signal in CODE_SIGNALS}
        self.trim_changes()
        return out

    def _snapshot_signal(self, bank: str, signal: str, start: Snapshot,
                         progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        rec = code_bytes(signal) + TRAILER
        gen = f"{start.version}-{secrets.token_hex(4)}"
        total = int(self.r.hlen(codes_key(bank, signal)))
        chunks = entries = rows = nbytes = 0
        ids: list[bytes] = []
        values: list[bytes] = []
        size = 0
        pipe = self._raw.pipeline(transaction=False)

        def flush() -> None:
            nonlocal chunks, entries, rows, nbytes, size, ids, values
            blob = pack_chunk(signal, ids, values)
            pipe.set(chunk_key(bank, signal, gen, chunks), blob)
            if len(pipe) >= 4:
                pipe.execute()
            chunks, entries, nbytes = chunks + 1, entries + len(ids), nbytes + len(blob)
            rows += sum(map(len, values)) // rec
            ids, values, size = [], [], 0
            if progress:
                progress(signal, entries, total)

        cursor = 0
        while True:
            cursor, found = self._raw.hscan(codes_key(bank, signal), cursor, count=10_000)
            for k, v in found.items():  # an entry HSCAN returns twice is kept twice: readers drop repeats
                ids.append(k)
                values.append(v)
                size += len(k) + len(v)
                if len(ids) >= CHUNK_ENTRIES or size >= CHUNK_BYTES:
                    flush()
            if cursor == 0:
                break
        if ids:
            flush()
        pipe.execute()
        meta = SnapshotMeta(gen, start.version, start.stream_id, chunks, entries, rows, nbytes,
                            int(time.time() * 1000))
        switched, old = self._switch(keys=[snap_key(bank)],
                                     args=[signal, meta.to_json() if chunks else "", start.version])
        if switched:
            if old:
                prev = SnapshotMeta.from_json(old)
                self._drop_chunks(bank, signal, prev.gen, prev.chunks)
        else:  # a newer snapshot went in while this one was written: keep it
            self._drop_chunks(bank, signal, gen, chunks)
        return {"entries": entries, "rows": rows, "bytes": nbytes, "chunks": chunks, "version": start.version,
                "switched": bool(switched), "seconds": round(time.perf_counter() - t0, 3)}

    def _drop_chunks(self, bank: str, signal: str, gen: str, chunks: int) -> None:
        keys = [chunk_key(bank, signal, gen, i) for i in range(chunks)]
        for i in range(0, len(keys), 500):
            self.r.unlink(*keys[i: i + 500])

    def snapshot_metas(self, bank: str) -> dict[str, SnapshotMeta]:
        """Signal -> the bank's current snapshot of it (no entry: none)."""
        out = {}
        for signal, raw in self.r.hgetall(snap_key(bank)).items():
            try:
                out[signal] = SnapshotMeta.from_json(raw)
            except (ValueError, KeyError, TypeError):
                continue  # unreadable meta: as if there were no snapshot
        return out

    def iter_snapshot_blocks(self, bank: str, signal: str, meta: SnapshotMeta) -> Iterator[CodeBlock]:
        """The snapshot's chunks as CodeBlocks. SnapshotError if a chunk is gone (a newer snapshot
        replaced this one mid-read) or malformed; the caller then loads from the codes hash."""
        seen = 0
        for i in range(meta.chunks):
            raw = self._raw.get(chunk_key(bank, signal, meta.gen, i))
            if raw is None:
                raise SnapshotError(f"snapshot {bank}/{signal} gen {meta.gen}: chunk {i} is gone")
            block = parse_chunk(signal, raw)
            seen += len(block.entries)
            yield block
        if seen != meta.entries:
            raise SnapshotError(f"snapshot {bank}/{signal} gen {meta.gen}: {seen} entries, meta says {meta.entries}")

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

    def changes_until(self, after_id: str, until_id: str, page: int = 2000) -> Iterator[Change]:
        """Every change after `after_id` up to and including `until_id`, read in pages."""
        stop = stream_pos(until_id)
        while stream_pos(after_id) < stop:
            batch = self.read_changes(after_id, count=page)
            if not batch:
                return
            for ch in batch:
                if stream_pos(ch.stream_id) > stop:
                    return
                yield ch
            after_id = batch[-1].stream_id

    def read_changes(self, after_id: str, block_ms: int | None = None, count: int = 500,
                     packed: bool = False) -> list[Change]:
        """Changes after `after_id`; entries_ref changes come back as entries_put with the entries'
        JSON as the entries hash holds it now (see the module docstring: still exact).

        packed=True (the matcher's sync loop): entries_ref changes of banks with complete packed
        codes come back as op entries_packed (workers.bank.bulk_changes: their codes, read in binary
        as a cold start reads them), which a matcher applies in bulk: parsing an import's JSON entry by
        entry ran at ~5k entries/s, so a 1M-line import took minutes to go live."""
        reply = self.r.xread({CHANGES: after_id}, count=count, block=block_ms)
        out = []
        for _stream, items in reply or ():
            for stream_id, fields in items:
                out.append(Change(stream_id, int(fields["v"]), fields["op"], fields["bank"], json.loads(fields["data"])))
        if packed:
            from workers.bank.bulk_changes import pack_runs  # (it builds on this module)

            out = pack_runs(self, out)
        refs = [i for i, ch in enumerate(out) if ch.op == "entries_ref"]
        if refs:
            pipe = self.r.pipeline(transaction=False)
            for i in refs:
                pipe.hmget(entries_key(out[i].bank), out[i].data)
            for i, blobs in zip(refs, pipe.execute()):
                # an id gone since was removed by a later change, which the stream also holds
                out[i] = replace(out[i], op="entries_put", data=[json.loads(b) for b in blobs if b is not None])
        return out

    def trim_changes(self) -> int:
        """Drop changes no reader needs: older than every bank's oldest snapshot and than
        CHANGES_KEEP_S. Banks without a snapshot load from their hashes, so need no history."""
        floor = stream_pos(f"{int(time.time() * 1000) - CHANGES_KEEP_S * 1000}-0")
        for bank in self.banks():
            for meta in self.snapshot_metas(bank).values():
                floor = min(floor, stream_pos(meta.stream_id))
        if floor <= (0, 0):
            return 0
        return int(self.r.xtrim(CHANGES, minid=f"{floor[0]}-{floor[1]}", approximate=False))

    def first_change_version(self) -> int | None:
        first = self.r.xrange(CHANGES, count=1)
        return int(first[0][1]["v"]) if first else None

    def audit(self, count: int = 50) -> list[dict[str, Any]]:
        return [dict(fields, id=i) for i, fields in self.r.xrevrange(AUDIT, count=count)]


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
