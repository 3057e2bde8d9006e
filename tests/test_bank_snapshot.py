"""Binary bank snapshots on a real redis-server: a matcher loading from them (plus the change stream
replayed on top) builds the index an HSCAN load builds, and falls back to HSCAN when it must."""
import json
import logging
import threading

import numpy as np
import pytest

from workers.stack import samples, transforms
from workers.bank import snapshot
from workers.bank.codes import pack_codes, unpack_block
from workers.bank.model import Entry
from workers.bank.store import (
    CHANGES,
    BankError,
    BankStore,
    chunk_key,
    codes_key,
    snap_key,
)
from workers.cli import main as vigil
from workers.signals.hashing import hash_frame, hash_media
from workers.index.matching import BankIndex, IndexRebuilder
from workers.settings import Settings
from workers.signals import SignalValue

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(scope="module")
def photo_signals() -> dict[str, list[SignalValue]]:
    """Bank-side signals (no query variants) of real photos."""
    return {name: hash_frame(samples.photo(name), Settings()) for name in PHOTOS}


@pytest.fixture(scope="module")
def queries() -> list[SignalValue]:
    """Re-encoded copies of the photos, hashed as the hasher hashes uploads."""
    out = []
    for name in PHOTOS:
        out += hash_media(transforms.encode(samples.photo(name), ".jpg", 70), Settings()).signals
    return out


def _fill(store: BankStore, photo_signals: dict[str, list[SignalValue]]) -> None:
    """Two banks: labelled photos, a video entry whose frames are photos, a digest-only entry."""
    store.create_bank("a", "block", label="terror")
    store.create_bank("b", "review", thresholds={"pdq": 40})
    sv = photo_signals
    store.add_entries("a", [
        Entry("astro", "a", tuple(sv["astronaut"]), label="csam"),
        Entry("coffee", "a", tuple(sv["coffee"])),
        Entry("vid", "a", tuple(SignalValue(s.signal, s.value, s.quality, frame_ms=1000 * i)
                                for i, name in enumerate(("chelsea", "rocket", "coffee"))
                                for s in sv[name] if s.signal == "pdq") + (SignalValue("md5", "ab" * 16),),
              label="ncii", media_type="video"),
        Entry("digest", "a", (SignalValue("sha256", "cd" * 32),), label="ncii"),
    ])
    store.add_entries("b", [Entry("astro", "b", tuple(sv["astronaut"]), label="deepfake")])


def _state(index: BankIndex, queries: list[SignalValue]) -> tuple:
    hits = sorted((m.bank, m.entry_id, m.signal, m.distance, m.threshold, m.action, m.label, m.entry_frame_ms,
                   m.frame_ms, m.variant) for m in index.search(queries + [SignalValue("sha256", "cd" * 32)]))
    return hits, dict(index.video_frames), index.counts(), {n: b.to_json() for n, b in index.banks.items()}


def _load(store: BankStore, snapshots: bool = True) -> BankIndex:
    index = BankIndex(Settings())
    index.load(store, snapshots=snapshots)
    return index


def _built(caplog) -> dict:
    rec = [r for r in caplog.records if r.getMessage() == "bank index built"][-1]
    return {k: getattr(rec, k) for k in ("source", "snapshots", "replayed_changes", "replayed_since_version")}


def test_chunk_round_trips_to_the_hscan_block(photo_signals):
    """One entry per row and video entries with several rows: the same CodeBlock as HSCAN's."""
    entries = [Entry(f"e{i}", "a", tuple(photo_signals[PHOTOS[i % 4]])) for i in range(5)]
    entries.append(Entry("v-long-id-" + "x" * 30, "a", tuple(SignalValue("pdq", s.value, 90, frame_ms=i)
                                                               for i, s in enumerate(entries[0].signals[:1] * 3)),
                         media_type="video", label="l"))
    for subset in (entries[:5], entries):
        found = {e.entry_id.encode(): pack_codes(e, "pdq") for e in subset}
        hscan = unpack_block("pdq", found)
        snap = snapshot.parse_chunk("pdq", snapshot.pack_chunk("pdq", list(found), list(found.values())))
        assert [bytes(i) for i in snap.entries] == hscan.entries
        assert (snap.per_entry is None) == (hscan.per_entry is None) == (subset is not entries)
        for a, b in zip(snap[1:], hscan[1:]):
            assert a is None and b is None or np.array_equal(a, b)
    raw = snapshot.pack_chunk("pdq", list(found), list(found.values()))
    for bad in (raw[:10], b"XXXX" + raw[4:], raw[:-1]):
        with pytest.raises(snapshot.SnapshotError):
            snapshot.parse_chunk("pdq", bad)


def test_snapshot_load_equals_hscan_load(store: BankStore, photo_signals, queries, caplog):
    _fill(store, photo_signals)
    written = store.write_snapshot("a")
    assert written["pdq"]["entries"] == 3 and written["pdq"]["rows"] == 5  # the video: one row per frame
    assert written["pdq"]["rows"] == sum(1 for e in ("astro", "coffee", "vid") for s in store.get_entry("a", e).signals
                                         if s.signal == "pdq")
    assert written["sha256"]["entries"] == 1 and written["md5"]["entries"] == 1 and written["phash"]["entries"] == 2
    in_use = sum(r["entries"] > 0 for r in written.values()) + sum(r["entries"] > 0 for r in store.write_snapshot("b").values())
    caplog.set_level(logging.INFO, logger="workers.index.matching")
    snap = _load(store)
    assert _built(caplog) == {"source": "snapshots", "snapshots": in_use, "replayed_changes": 0,
                              "replayed_since_version": None}
    hscan = _load(store, snapshots=False)
    assert _built(caplog)["source"] == "hscan"
    assert _state(snap, queries) == _state(hscan, queries)
    hits, frames, _, _ = _state(snap, queries)
    assert frames == {("a", "vid"): 3}
    assert {(h[0], h[1], h[6]) for h in hits if h[2] == "pdq"} >= {
        ("a", "astro", "csam"), ("b", "astro", "deepfake"), ("a", "coffee", "terror"), ("a", "vid", "ncii")}
    assert {h[7] for h in hits if h[1] == "vid"} >= {0, 1000, 2000}  # every banked frame matched its photo


def test_changes_after_the_snapshot_are_replayed(store: BankStore, photo_signals, queries, caplog):
    _fill(store, photo_signals)
    v_snap = store.version()
    store.write_snapshot("a")
    store.write_snapshot("b")
    store.add_entries("a", [Entry("rocket", "a", tuple(photo_signals["rocket"]), label="new")])
    store.remove_entries("a", ["coffee"])
    store.set_entry_disabled("a", "digest", True)
    store.update_bank("a", action="review", thresholds={"pdq": 10})
    store.update_bank("b", enabled=False)
    caplog.set_level(logging.INFO, logger="workers.index.matching")
    snap = _load(store)
    built = _built(caplog)
    assert built["source"] == "snapshots" and built["snapshots"] > 2
    assert built["replayed_changes"] == 5 and built["replayed_since_version"] == v_snap
    assert _state(snap, queries) == _state(_load(store, snapshots=False), queries)
    hits, _, _, banks = _state(snap, queries)
    ids = {(h[0], h[1]) for h in hits}
    assert ("a", "rocket") in ids and ("a", "coffee") not in ids and ("a", "digest") not in ids
    assert not any(h[0] == "b" for h in hits)  # bank disabled
    assert all(h[5] == "review" for h in hits) and banks["a"]["thresholds"] == {"pdq": 10}
    assert snap.version == store.version()
    store.update_bank("b", enabled=True)  # and the matcher tails on from where the load ended
    snap.apply(store.read_changes(snap.stream_id))
    assert any(h[0] == "b" for h in _state(snap, queries)[0])


def test_a_snapshot_older_than_the_trimmed_stream_is_not_used(store: BankStore, photo_signals, queries, caplog):
    _fill(store, photo_signals)
    store.write_snapshot("a")
    store.remove_entries("a", ["astro"])
    store.add_entries("a", [Entry("rocket", "a", tuple(photo_signals["rocket"]))])
    store.r.xtrim(CHANGES, maxlen=1, approximate=False)  # the stream no longer holds the remove
    caplog.set_level(logging.INFO, logger="workers.index.matching")
    index = _load(store)
    assert _built(caplog)["source"] == "hscan"
    assert _state(index, queries) == _state(_load(store, snapshots=False), queries)
    ids = {(h[0], h[1]) for h in _state(index, queries)[0]}
    assert ("a", "rocket") in ids and ("a", "astro") not in ids


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_chunk_gone_or_damaged_under_the_reader_falls_back(store: BankStore, photo_signals, queries, caplog,
                                                              monkeypatch, damage):
    monkeypatch.setattr(snapshot, "CHUNK_ENTRIES", 1)
    import workers.bank.snapshot_store as store_module

    monkeypatch.setattr(store_module, "CHUNK_ENTRIES", 1)
    _fill(store, photo_signals)
    store.write_snapshot("a")
    meta = store.snapshot_metas("a")["pdq"]
    assert meta.chunks == 3
    store.add_entries("a", [Entry("rocket", "a", tuple(photo_signals["rocket"]))])
    key = chunk_key("a", "pdq", meta.gen, 1)
    store.r.delete(key) if damage == "delete" else store.r.setrange(key, 0, "JUNK")
    caplog.set_level(logging.INFO, logger="workers.index.matching")
    index = _load(store)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "snapshot unusable" in r.getMessage()]
    assert warned and _built(caplog)["source"] == "hscan"
    assert _state(index, queries) == _state(_load(store, snapshots=False), queries)
    assert ("a", "rocket") in {(h[0], h[1]) for h in _state(index, queries)[0]}


def test_writes_during_write_snapshot_are_not_lost(store: BankStore, monkeypatch):
    """Small chunks so the snapshot takes many round trips while a writer adds, removes and disables."""
    import workers.bank.snapshot_store as store_module

    monkeypatch.setattr(store_module, "CHUNK_ENTRIES", 50)
    rng = np.random.default_rng(7)
    hexes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(3000)]
    store.create_bank("big", "block")
    store.add_entries("big", [Entry(f"e{i}", "big", (SignalValue("pdq", h, 100),), label=f"l{i % 3}")
                              for i, h in enumerate(hexes[:2000])])

    def write() -> None:
        for i in range(2000, 3000, 20):
            store.add_entries("big", [Entry(f"e{j}", "big", (SignalValue("pdq", hexes[j], 100),))
                                      for j in range(i, i + 20)])
            store.remove_entries("big", [f"e{i - 2000}", f"e{i - 1999}"])
            store.set_entry_disabled("big", f"e{i - 1990}", True)

    writer = threading.Thread(target=write)
    writer.start()
    for _ in range(3):
        store.write_snapshot("big")
    writer.join()
    queries = [SignalValue("pdq", h, 100) for h in hexes]
    snap, hscan = _load(store), _load(store, snapshots=False)
    assert _state(snap, queries) == _state(hscan, queries)
    assert snap.counts()["pdq"] == 3000 - 100 - 50
    assert len(store.r.keys("vigil:bank:big:snap:pdq:*")) == store.snapshot_metas("big")["pdq"].chunks  # old gens gone


def test_an_older_snapshot_never_replaces_a_newer_one(store: BankStore, photo_signals):
    _fill(store, photo_signals)
    store.write_snapshot("a")
    newer = store.snapshot_metas("a")["pdq"]
    stale = snapshot.SnapshotMeta("0-old", 1, "0-0", 0, 0, 0, 0, 0)
    switched, _ = store._switch(keys=[snap_key("a")], args=["pdq", stale.to_json(), stale.version])
    assert not switched and store.snapshot_metas("a")["pdq"] == newer


def test_write_snapshot_needs_packed_codes(store: BankStore):
    from workers.bank.store import LAYOUT

    store.create_bank("old", "block")
    store.r.hdel(LAYOUT, "old")
    with pytest.raises(BankError, match="vigil bank backfill old"):
        store.write_snapshot("old")


# -- the CLI -------------------------------------------------------------------------------------
def _cli(capsys, redis_url: str, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = vigil(["bank", *argv, "--redis", redis_url])
    return code, capsys.readouterr().out


def test_cli_snapshot_backfill_import_and_stats(store: BankStore, redis_url: str, capsys, tmp_path, photo_signals):
    from workers.bank.store import LAYOUT

    _fill(store, photo_signals)
    code, out = _cli(capsys, redis_url, "snapshot", "a", "--json")
    assert code == 0
    got = json.loads(out)
    assert got["banks"]["a"]["pdq"]["entries"] == 3 and got["banks"]["a"]["pdq"]["bytes"] > 0
    assert set(got["banks"]["a"]["pdq"]) >= {"entries", "rows", "bytes", "seconds", "version"}
    assert _cli(capsys, redis_url, "snapshot")[0] == 2  # neither names nor --all

    store.create_bank("legacy", "block")
    store.add_entries("legacy", [Entry("x", "legacy", (SignalValue("md5", "12" * 16),))])
    store.r.hdel(LAYOUT, "legacy")
    store.r.delete(codes_key("legacy", "md5"))
    code, out = _cli(capsys, redis_url, "snapshot", "--all", "--json")
    assert code == 0 and set(json.loads(out)["banks"]) == {"a", "b"} and "legacy" in json.loads(out)["skipped"]
    assert _cli(capsys, redis_url, "snapshot", "legacy")[0] == 2
    code, out = _cli(capsys, redis_url, "backfill", "legacy", "--json")
    assert code == 0 and json.loads(out)["entries"] == 1 and store.has_codes("legacy")
    assert _cli(capsys, redis_url, "snapshot", "legacy")[0] == 0

    listing = tmp_path / "list.txt"
    listing.write_text(f"pdq {'3' * 64}\nmd5 {'4' * 32}\n")
    code, out = _cli(capsys, redis_url, "import", "a", str(listing))
    assert code == 0 and "snapshot of a written" in out
    assert store.snapshot_metas("a")["md5"].version == store.version()
    code, out = _cli(capsys, redis_url, "import", "a", str(listing), "--json", "--no-snapshot")
    assert code == 0 and "snapshot" not in json.loads(out)

    store.set_entry_disabled("a", "coffee", True)
    code, out = _cli(capsys, redis_url, "stats", "--json")
    row = next(r for r in json.loads(out)["banks"] if r["bank"] == "a")
    assert row["entries"] == 6 and row["disabled"] is None and row["packed_codes"]
    assert row["per_signal"]["pdq"] == 3 and row["per_signal"]["md5"] == 2  # enabled entries: coffee is off
    assert row["snapshot"]["pdq"]["behind"] == 1 == row["snapshot_behind"] and row["snapshot"]["pdq"]["age_s"] >= 0
    code, out = _cli(capsys, redis_url, "stats", "--json", "--count-disabled")
    assert next(r for r in json.loads(out)["banks"] if r["bank"] == "a")["disabled"] == 1
    code, out = _cli(capsys, redis_url, "list")
    assert code == 0 and "1 changes behind" in out
    code, out = _cli(capsys, redis_url, "stats")
    assert code == 0 and "snapshot v" in out


def _grown_index(store: BankStore, monkeypatch, inline_rows: int, loaded: int, grown: int, total: int):
    """A bank of `loaded` random PDQ entries (snapshotted), a matcher's index loaded from it, then
    entries up to `grown` added 50 per change and tailed, with merges above `inline_rows` deferred so
    the index asks for a rebuild. Returns (index, the hex values, add(lo, hi))."""
    from workers.index.mih import MultiIndexHamming

    monkeypatch.setattr(MultiIndexHamming, "INLINE_BUILD_ROWS", inline_rows)
    monkeypatch.setattr(MultiIndexHamming, "TAIL", 100)
    rng = np.random.default_rng(total)
    hexes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(total)]

    def add(lo: int, hi: int) -> None:
        store.add_entries("grow", [Entry(f"e{j}", "grow", (SignalValue("pdq", hexes[j], 100),)) for j in range(lo, hi)])

    store.create_bank("grow", "block")
    add(0, loaded)
    store.write_snapshot("grow")
    index = _load(store)
    assert not index.rebuild_due
    for i in range(loaded, grown, 50):  # the tailing matcher applies them one change at a time
        add(i, i + 50)
        index.catch_up(store)
    assert index.rebuild_due
    return index, hexes, add


def test_a_rebuild_swaps_in_a_fresh_index_caught_up_with_changes_made_while_it_built(store: BankStore, monkeypatch):
    """Live adds leave deferred merges (small INLINE_BUILD_ROWS here); rebuild_due asks for a fresh
    index, which BankIndex.rebuild loads aside while a writer keeps changing the bank, then swaps in
    up to date: the same answers as a fresh load, one segment, and the stream position moves on."""
    index, hexes, add = _grown_index(store, monkeypatch, inline_rows=600, loaded=1000, grown=3000, total=4000)
    pdq = index._e.hamming["pdq"]
    assert max(s.rows for s in pdq._segments[1:]) <= 600 and len(pdq._segments) > 2

    def write() -> None:
        for i in range(3000, 4000, 50):
            add(i, i + 50)
            store.remove_entries("grow", [f"e{i - 3000}"])

    writer = threading.Thread(target=write)
    writer.start()
    lock = threading.Lock()
    before = index.stream_id
    rebuilds = IndexRebuilder(index, store, lock)  # what the matcher's sync loop calls after each change
    assert rebuilds.maybe_start()
    assert not rebuilds.maybe_start()  # one at a time
    rebuilds.thread.join(60)
    writer.join()
    assert index.stream_id != before
    assert index._e.hamming["pdq"]._segments[0].rows >= 3000  # all rows loaded before the build: one segment
    assert index.apply([], after=before) is False  # a batch read before the swap is dropped
    index.catch_up(store)
    queries = [SignalValue("pdq", h, 100) for h in hexes[::7]]
    assert _state(index, queries) == _state(_load(store, snapshots=False), queries)
    assert index.counts()["pdq"] == 4000 - 20


def test_a_failed_rebuild_leaves_the_index_serving_and_waits_before_retrying(store: BankStore, monkeypatch, caplog):
    index, hexes, _ = _grown_index(store, monkeypatch, inline_rows=300, loaded=500, grown=2000, total=2000)

    def broken(*_a, **_k):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(BankIndex, "load", broken)
    rebuilds = IndexRebuilder(index, store, threading.Lock())
    assert rebuilds.maybe_start()
    rebuilds.thread.join(30)
    assert "bank index rebuild failed; matching continues from the current index" in caplog.text
    assert not rebuilds.maybe_start()  # waits RETRY_S before the next attempt
    queries = [SignalValue("pdq", h, 100) for h in hexes[::50]]
    assert len(index.search(queries)) == len(queries)  # the old index still answers
