"""The bank on a real redis-server: versions, the change stream, snapshots, imports."""
import threading

import pytest

from workers.bank.importer import add_media_file, export_records, import_file
from workers.bank.model import Entry, entry_id_for_hash
from workers.bank.store import BankError, BankStore
from workers.matching import BankIndex
from workers.settings import Settings
from workers.signals import SignalValue

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
    from workers import samples, transforms

    store.create_bank("photos", "block")
    f = tmp_path / "astronaut.png"
    f.write_bytes(transforms.encode(samples.photo("astronaut"), ".png"))
    entry, version = add_media_file(store, "photos", f, Settings())
    again, _ = add_media_file(store, "photos", f, Settings())
    assert entry.entry_id == again.entry_id and store.entry_count("photos") == 1
    assert {s.signal for s in entry.signals} >= {"pdq", "phash", "md5", "sha256"}
    assert not any(s.variant and s.variant != "unbordered" for s in entry.signals)  # no query variants banked
