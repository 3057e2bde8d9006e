"""The bank on a real redis-server: versions, the change stream, snapshots, imports."""
import threading

import pytest

from workers.bank.importer import add_media_file, export_records, import_file
from workers.bank.model import Entry, entry_id_for_hash
from workers.bank.store import BankError, BankStore
from workers.index.matching import BankIndex
from workers.settings import Settings
from workers.signals import SignalValue
from workers.signals.bank_variants import is_bank_variant

PDQ = "f" * 64


def _entry(bank, value=PDQ, eid=None, signal="pdq"):
    return Entry(eid or entry_id_for_hash(signal, value), bank, (SignalValue(signal, value, 100),))


def test_every_change_bumps_the_version_and_is_audited(store: BankStore):
    v0 = store.version()
    store.create_bank("b1", "block", label="csam")
    v1 = store.add_entries("b1", [_entry("b1")])
    v2 = store.remove_entries("b1", [entry_id_for_hash("pdq", PDQ)])
    assert v0 < v1 < v2 == store.version()
    ops = [a["op"] for a in store.audit()]
    assert ops == ["entries_delete", "entries_put", "bank_put"]
    assert all(a["actor"] == "pytest" for a in store.audit())


def test_bad_requests_are_clear(store: BankStore):
    with pytest.raises(BankError, match="action"):
        store.create_bank("b", "delete")
    with pytest.raises(BankError, match="no bank named"):
        store.add_entries("missing", [_entry("missing")])
    store.create_bank("b", "review")
    with pytest.raises(BankError, match="already exists"):
        store.create_bank("b", "review")
    assert store.create_bank("b", "review", exist_ok=True).action == "review"
    with pytest.raises(BankError, match="no entry"):
        store.remove_entries("b", ["nope"])
    with pytest.raises(BankError, match="names"):
        store.create_bank("bad name!", "block")


def test_snapshot_then_stream_misses_nothing(store: BankStore):
    """Writers keep writing while a matcher loads: every entry ends up in its index."""
    store.create_bank("b", "block")
    values = [f"{i:064x}" for i in range(1, 301)]
    for v in values[:100]:
        store.add_entries("b", [_entry("b", v)])
    index = BankIndex(Settings())
    writer = threading.Thread(target=lambda: [store.add_entries("b", [_entry("b", v)]) for v in values[100:]])
    writer.start()
    index.load(store)
    writer.join()
    while True:
        changes = store.read_changes(index.stream_id, block_ms=None)
        if not changes:
            break
        index.apply(changes)
    assert index.counts()["pdq"] == 300 and index.version == store.version()


def test_disable_and_bank_toggle_stop_matches(store: BankStore):
    store.create_bank("b", "block")
    e = _entry("b")
    store.add_entries("b", [e])
    index = BankIndex(Settings())
    index.load(store)
    query = [SignalValue("pdq", PDQ, 100)]
    assert len(index.search(query)) == 1
    store.set_entry_disabled("b", e.entry_id, True)
    index.apply(store.read_changes(index.stream_id))
    assert index.search(query) == [] and store.get_entry("b", e.entry_id).disabled  # kept for audit
    store.set_entry_disabled("b", e.entry_id, False)
    store.update_bank("b", enabled=False)
    index.apply(store.read_changes(index.stream_id))
    assert index.search(query) == []
    store.update_bank("b", enabled=True, action="review")
    index.apply(store.read_changes(index.stream_id))
    assert [m.action for m in index.search(query)] == ["review"]


def test_import_local_list_is_idempotent_and_all_or_nothing(store: BankStore, tmp_path):
    store.create_bank("list", "block")
    good = tmp_path / "list.txt"
    good.write_text(f"pdq {PDQ}\nmd5 {'a' * 32}\nsha256 {'b' * 64}\nphash {'c' * 16}\n")
    r1 = import_file(store, "list", good, progress=False)
    assert r1["loaded"] and r1["added"] == 4 and r1["per_signal"] == {"pdq": 1, "md5": 1, "sha256": 1, "phash": 1}
    r2 = import_file(store, "list", good, progress=False)
    assert r2["added"] == 0 and r2["unchanged"] == 4 and store.entry_count("list") == 4
    bad = tmp_path / "bad.txt"
    bad.write_text(f"pdq {'1' * 64}\npdq 123\nmd5 {'d' * 32}\n")
    r3 = import_file(store, "list", bad, progress=False)
    assert not r3["loaded"] and r3["invalid"][0]["line"] == 2 and store.entry_count("list") == 4
    r4 = import_file(store, "list", bad, skip_invalid=True, progress=False)
    assert r4["loaded"] and r4["added"] == 2 and store.entry_count("list") == 6
    exported = {(r.signal, r.value) for r in export_records(store, "list")}
    assert ("pdq", PDQ) in exported and len(exported) == 6


def test_add_media_file_banks_a_real_photo(store: BankStore, tmp_path):
    from workers.stack import samples, transforms

    store.create_bank("photos", "block")
    f = tmp_path / "astronaut.png"
    f.write_bytes(transforms.encode(samples.photo("astronaut"), ".png"))
    entry, version = add_media_file(store, "photos", f, Settings())
    again, _ = add_media_file(store, "photos", f, Settings())
    assert entry.entry_id == again.entry_id and store.entry_count("photos") == 1
    assert {s.signal for s in entry.signals} >= {"pdq", "phash", "md5", "sha256"}
    # no query variants banked (flips, rotations by 90°): only the photo and its bank-side versions
    assert all(s.variant in (None, "unbordered") or is_bank_variant(s.variant) for s in entry.signals)


def _state(index: BankIndex, queries: list[SignalValue]) -> tuple:
    hits = sorted((m.bank, m.entry_id, m.signal, m.distance, m.label, m.entry_frame_ms, m.frame_ms)
                  for m in index.search(queries))
    return hits, dict(index.video_frames), index.counts()


def test_packed_cold_start_equals_json_load(store: BankStore):
    """Labels, video frame counts, disabled and removed entries, several banks sharing entry ids:
    loading from the packed codes gives the index the JSON load gives, and tails the stream after."""
    import numpy as np

    from workers.bank.store import LAYOUT

    rng = np.random.default_rng(4)
    hexes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(8)]
    store.create_bank("a", "block", label="terror")
    store.create_bank("b", "review")
    video = Entry("v1", "a", tuple(SignalValue("pdq", h, quality=q, frame_ms=1000 * i)
                                   for i, (h, q) in enumerate(zip(hexes[:4], (90, 20, 90, 90))))
                  + (SignalValue("md5", "ab" * 16),), label="csam", media_type="video")
    dark = Entry("v2", "a", (SignalValue("md5", "cd" * 16),), media_type="video")  # no PDQ frames at all
    photo = Entry("p1", "a", (SignalValue("pdq", hexes[4], 100), SignalValue("phash", "0123456789abcdef", 60)))
    gone = Entry("p2", "a", (SignalValue("pdq", hexes[5], 100),), label="ncii")
    off = Entry("p3", "a", (SignalValue("pdq", hexes[6], 100),), label="ncii")
    same_id = Entry("p1", "b", (SignalValue("pdq", hexes[7], 100),), label="ncii")  # same id, other bank
    store.add_entries("a", [video, dark, photo, gone, off])
    store.add_entries("b", [same_id])
    store.remove_entries("a", ["p2"])
    store.set_entry_disabled("a", "p3", True)
    queries = [SignalValue("pdq", h, 100, frame_ms=7) for h in hexes] + [
        SignalValue("md5", "ab" * 16), SignalValue("md5", "cd" * 16), SignalValue("phash", "0123456789abcdef", 60)]

    packed = BankIndex(Settings())
    packed.load(store)
    store.r.hdel(LAYOUT, "a", "b")  # as a bank from before the packed layout: loads from JSON
    from_json = BankIndex(Settings())
    from_json.load(store)
    assert _state(packed, queries) == _state(from_json, queries)
    hits, frames, counts = _state(packed, queries)
    assert frames == {("a", "v1"): 3, ("a", "v2"): 0}  # the quality-20 frame is not usable
    assert ("b", "p1", "pdq", 0, "ncii", None, 7) in hits and ("a", "v1", "md5", 0, "csam", None, None) in hits
    assert ("a", "p1", "pdq", 0, "terror", None, 7) in hits  # no entry label: the bank's
    assert {h[1] for h in hits} == {"v1", "v2", "p1"} and counts["pdq"] == 6

    store.backfill_codes("a")
    store.backfill_codes("b")
    again = BankIndex(Settings())
    again.load(store)
    store.add_entries("a", [Entry("p4", "a", (SignalValue("pdq", hexes[5], 100),), label="new-label")])
    store.remove_entries("a", ["v1"])
    again.apply(store.read_changes(again.stream_id))
    hits, frames, _ = _state(again, queries)
    assert ("a", "p4", "pdq", 0, "new-label", None, 7) in hits and frames == {("a", "v2"): 0}
    assert not any(h[1] == "v1" for h in hits)


def test_large_changes_carry_ids_and_readers_get_the_entries(store: BankStore, monkeypatch):
    """An import-sized change stores ids, not JSON, in the stream; read_changes hands readers the
    entries as the bank holds them, skipping ones a later change removed (that change follows)."""
    import workers.bank.store as store_module

    store.create_bank("big", "block", label="csam")
    start = store.snapshot_start().stream_id
    entries = [Entry(f"e{i}", "big", (SignalValue("pdq", f"{i:064x}"),)) for i in range(300)]
    store.add_entries("big", entries, new=True)
    raw = store.r.xrevrange(store_module.CHANGES, count=1)[0][1]
    assert raw["op"] == "entries_ref" and len(raw["data"]) < 300 * 10
    store.remove_entries("big", ["e1", "e2"])
    changes = store.read_changes(start)
    assert [c.op for c in changes] == ["entries_put", "entries_delete"]
    assert [o["entry_id"] for o in changes[0].data] == [f"e{i}" for i in range(300) if i not in (1, 2)]
    index = BankIndex(Settings())
    index.apply(changes)
    assert index.counts()["pdq"] == 298
    small = [Entry("s", "big", (SignalValue("pdq", "ab" * 32),))]
    store.add_entries("big", small)  # a few entries: inline JSON, applied without a lookup
    assert store.r.xrevrange(store_module.CHANGES, count=1)[0][1]["op"] == "entries_put"


def test_writing_a_snapshot_trims_changes_no_reader_needs(store: BankStore, monkeypatch):
    import workers.bank.change_stream as stream_module
    import workers.bank.store as store_module

    monkeypatch.setattr(stream_module, "CHANGES_KEEP_S", 0)
    store.create_bank("a", "block")
    store.create_bank("b", "block")
    for i in range(5):
        store.add_entries("a", [Entry(f"a{i}", "a", (SignalValue("pdq", f"{i:064x}"),))])
    store.write_snapshot("a")
    assert store.r.xlen(store_module.CHANGES) <= 1  # b has no snapshot: it loads from its hashes
    store.write_snapshot("b")
    for i in range(5):
        store.add_entries("b", [Entry(f"b{i}", "b", (SignalValue("pdq", f"{i + 9:064x}"),))])
    store.write_snapshot("b")  # a's older snapshot still needs the changes since it
    assert store.r.xlen(store_module.CHANGES) >= 5
    index = BankIndex(Settings())
    index.load(store)
    assert index.counts()["pdq"] == 10
