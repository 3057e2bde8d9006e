"""Writing and reading the bank's binary snapshots (the format is in workers/bank/snapshot.py; why
they are consistent is in workers/bank/store.py's docstring). Split from the store so each file holds
one concern: this half only copies the packed codes hashes into chunks and back.
"""
from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from workers.bank.codes import CODE_SIGNALS, TRAILER, CodeBlock, code_bytes
from workers.bank.keys import chunk_key, codes_key, snap_key
from workers.bank.model import BankError
from workers.bank.snapshot import CHUNK_BYTES, CHUNK_ENTRIES, SnapshotError, SnapshotMeta, pack_chunk, parse_chunk

if TYPE_CHECKING:
    import redis

    from workers.bank.change_stream import Snapshot

# KEYS: the snapshot meta hash. ARGV: signal, new meta JSON ('' = no snapshot), its version.
# Switches the signal's snapshot unless a newer one is already in place; returns {switched, old meta}.
_SWITCH = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and tonumber(cjson.decode(old)['version']) > tonumber(ARGV[3]) then return {0, old} end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return {1, old or ''}
"""


class SnapshotWrites:
    """The snapshot half of BankStore (a mixin: it uses the store's clients and checks)."""

    r: "redis.Redis"
    _raw: "redis.Redis"

    def _register_snapshot_scripts(self) -> None:
        self._switch = self.r.register_script(_SWITCH)

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
