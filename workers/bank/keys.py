"""The bank's Redis key names (the layout is in workers/bank/store.py's docstring), in one place so
the store, its change stream and its snapshots agree on them."""
from __future__ import annotations

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
