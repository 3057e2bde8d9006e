"""Import batches as the matcher applies them: in bulk, from their packed codes.

An import writes 2,000 entries a change (entries_ref: ids only in the stream). Reading their JSON
and putting them into the index entry by entry ran at ~5k entries/s on 2 shared cores, so a
1M-line import took minutes to go live, and a matcher applying it held its index lock throughout
(issue 22). Here a run of such changes on one bank becomes one entries_packed change carrying the
entries' packed codes (binary HMGETs, as a cold start reads them), which
IndexedEntries.put_packed applies with numpy, far under a second for 200k entries."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from workers.bank.codes import CODE_SIGNALS, CodeBlock, label_id, pack_codes, unpack_block
from workers.bank.model import Entry

if TYPE_CHECKING:
    from workers.bank.store import BankStore, Change

HMGET_PAGE = 20_000  # ids per HMGET: bounded replies and Redis time per command


@dataclass(frozen=True)
class PackedEntries:
    """An entries_packed change's data. Every id is replaced: by its rows in `blocks`, or by
    nothing (an id in no codes hash is disabled, or was removed by a later change)."""

    entry_ids: list[bytes]
    blocks: dict[str, CodeBlock]  # signal -> the rows of the entries that have it
    labels: dict[int, str]  # the bank's label ids -> labels


def pack_runs(store: "BankStore", changes: list["Change"]) -> list["Change"]:
    """entries_ref changes of banks with packed codes as entries_packed; a run of them on one bank
    becomes one change with the run's last version and stream id (applying it is the same as
    applying each: the codes are read as they are now, as entries_ref's JSON is)."""
    coded: dict[str, bool] = {}
    out: list["Change"] = []
    run: list["Change"] = []

    def flush() -> None:
        if run:
            ids = list(dict.fromkeys(i for ch in run for i in ch.data))
            out.append(replace(run[-1], op="entries_packed", data=packed_entries(store, run[-1].bank, ids)))
            run.clear()

    for ch in changes:
        if ch.op == "entries_ref" and coded.setdefault(ch.bank, store.has_codes(ch.bank)):
            if run and run[-1].bank != ch.bank:
                flush()
            run.append(ch)
            continue
        flush()
        out.append(ch)
    flush()
    return out


def packed_entries(store: "BankStore", bank: str, entry_ids: list[str]) -> PackedEntries:
    """These entries' packed codes as they are now, one CodeBlock per signal that has any, and the
    bank's labels. Exact by the store's argument for entries_ref: codes and JSON are one write."""
    from workers.bank.store import codes_key

    ids = [i.encode() for i in entry_ids]
    blocks: dict[str, CodeBlock] = {}
    for signal in CODE_SIGNALS:
        found: dict[bytes, bytes] = {}
        for at in range(0, len(ids), HMGET_PAGE):
            part = ids[at: at + HMGET_PAGE]
            found.update((k, v) for k, v in zip(part, store.raw.hmget(codes_key(bank, signal), part)) if v)
        if found:
            blocks[signal] = unpack_block(signal, found)
    labels = store.labels(bank) if any(b.labels.any() for b in blocks.values()) else {}
    return PackedEntries(ids, blocks, labels)


def packed_from_entries(entries: list[Entry]) -> PackedEntries:
    """Entries held in memory only (a `vigil scan --hash-list` file) packed as the store packs them,
    so they take the same bulk path as an import batch (put entry by entry, a 200k-line list took
    ~17 CPU-s and left the index slow to search). One bank's entries; a repeated id keeps its last."""
    live = {e.entry_id.encode(): e for e in entries if not e.disabled}
    blocks: dict[str, CodeBlock] = {}
    for signal in CODE_SIGNALS:
        found = {k: pack_codes(e, signal) for k, e in live.items() if any(sv.signal == signal for sv in e.signals)}
        if found:
            blocks[signal] = unpack_block(signal, found)
    labels = {label_id(e.label): e.label for e in live.values() if e.label is not None}
    return PackedEntries(list(live), blocks, labels)
