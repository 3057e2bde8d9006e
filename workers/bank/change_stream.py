"""The bank's change stream: what matchers, the retro worker and writers waiting for propagation read.

Every write of workers/bank/store.py is one Lua script that bumps the version and appends the change
here, so a reader that takes `snapshot_start` and then reads the stream after its id never misses a
change (see the store's docstring for why replays are exact).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

from workers.bank.keys import AUDIT, BANKS, CHANGES, CHANGES_KEEP_S, VERSION, entries_key, stream_pos
from workers.bank.model import Bank

if TYPE_CHECKING:
    import redis


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


class ChangeStreamReads:
    """The change-stream half of BankStore (a mixin: it uses the store's Redis client `r`, and
    `banks` and `snapshot_metas` for trimming)."""

    r: "redis.Redis"

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
