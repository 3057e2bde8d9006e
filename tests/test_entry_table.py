"""EntryTable: (bank, entry_id) <-> handle, through single puts, bulk appends and repeats."""
from __future__ import annotations

import numpy as np

from workers.index.entry_table import EntryTable
from workers.index.mih import MultiIndexHamming


def test_single_puts_and_lookups_across_banks_and_id_widths() -> None:
    t = EntryTable()
    a = t.put("b1", "e1", "csam")
    b = t.put("b2", "e1", None)  # the same id in another bank is another entry
    long = t.put("b1", "an-entry-id-longer-than-eighteen-bytes", "ncii")
    assert len({a, b, long}) == 3 and t.put("b1", "e1", "terror") == a  # re-put keeps the handle
    assert t.find("b1", "e1") == a and t.find("b2", "e1") == b and t.find("b3", "e1") is None
    assert t.find("b1", "an-entry-id-longer-than-eighteen-bytes") == long and t.find("b1", "e2") is None
    assert t.key(long) == ("b1", "an-entry-id-longer-than-eighteen-bytes")
    assert (t.label(a), t.label(b), t.label(long)) == ("terror", None, "ncii")
    for i in range(70_000):  # past the recent dict: into sorted runs
        t.put("b3", f"x{i}", None)
    assert t.find("b1", "e1") == a and t.key(t.find("b3", "x12345")) == ("b3", "x12345")


def test_bulk_append_finds_repeats_and_later_signals_find_handles() -> None:
    t = EntryTable()
    t.put("other", "e0", None)
    ids = [f"e{i}".encode() for i in range(50_000)]
    first = t.append_new("b", ids[:30_000], np.zeros(30_000, np.uint32))
    again = t.append_new("b", ids[29_990:], np.zeros(20_010, np.uint32))  # HSCAN returned 10 twice
    repeats = t.index_appended()
    assert sorted(repeats.tolist()) == again[:10].tolist()
    assert t.find("b", "e29995") == first[29_995] and t.find("b", "e40000") == again[40_000 - 29_990]
    # a second signal of the same bank: handles looked up in bulk, new entries appended
    more = [b"e5", b"e49999", b"new-one"]
    handles = t.put_many("b", more, np.array([t.label_no("l1")] * 3, np.uint32))
    assert handles[:2].tolist() == [first[5], again[-1]] and t.key(int(handles[2])) == ("b", "new-one")
    assert t.label(int(first[5])) == "l1" and t.find("other", "e0") is not None

    idx = MultiIndexHamming(64)
    codes = np.random.default_rng(1).integers(0, 256, (len(first) + len(again), 8), dtype=np.uint8)
    with idx.bulk(len(codes)):
        idx.add_many(np.concatenate([first, again]), codes)
        idx.discard(repeats)
    assert idx.rows == 50_000 and len(idx) == 50_000
    assert idx.search([codes[len(first)].tobytes()], 0) == [[]]  # the repeat's row is gone
