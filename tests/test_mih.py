"""MultiIndexHamming must return exactly what brute force returns: every live row within the distance."""
from __future__ import annotations

import numpy as np
import pytest

from workers.index.brute import HammingIndex
from workers.index.mih import MultiIndexHamming, chunk_radii, chunk_values, flip_masks, to_words


def _near(rng: np.random.Generator, code: np.ndarray, flips: int) -> np.ndarray:
    bits = np.unpackbits(code)
    bits[rng.choice(len(bits), flips, replace=False)] ^= 1
    return np.packbits(bits)


def _bank(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    """Random codes plus clusters of near-duplicates (as frames of one video are)."""
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    for i in range(0, n // 2, 7):
        codes[i + 1] = _near(rng, codes[i], int(rng.integers(1, nbytes)))
    return codes


def _queries(rng: np.random.Generator, codes: np.ndarray, max_flips: int, k: int) -> list[bytes]:
    picks = rng.integers(0, len(codes), k)
    out = [_near(rng, codes[i], int(rng.integers(0, max_flips + 1))).tobytes() for i in picks]
    return out + [rng.integers(0, 256, codes.shape[1], dtype=np.uint8).tobytes() for _ in range(5)]


def _both(bits: int, keys, codes, frames, tail: int = 256) -> tuple[MultiIndexHamming, HammingIndex]:
    mih, ref = MultiIndexHamming(bits), HammingIndex(bits)
    mih.TAIL = tail  # small, so tails, segments and merges all occur at test sizes
    for k, c, f in zip(keys, codes, frames):
        ref.add(k, c.tobytes(), f)
    return mih, ref


def _same(mih: MultiIndexHamming, ref: HammingIndex, queries: list[bytes], d: int) -> None:
    got, want = mih.search(queries, d), ref.search(queries, d)
    for g, w in zip(got, want):
        assert sorted(g, key=repr) == sorted(w, key=repr)


@pytest.mark.parametrize("bits,distances", [(256, (0, 8, 31, 48, 80)), (64, (0, 4, 8, 12, 20))])
def test_agrees_with_brute_force_bulk_and_incremental(bits: int, distances: tuple[int, ...]) -> None:
    rng = np.random.default_rng(bits)
    n = 6000
    codes = _bank(rng, n, bits // 8)
    keys = [i // 2 for i in range(n)]  # two rows (frames) per key
    frames = [None if i % 3 == 0 else i * 40 for i in range(n)]
    bulk, ref = _both(bits, keys, codes, frames)
    bulk.add_many(keys, codes, frames)
    incremental = MultiIndexHamming(bits)
    incremental.TAIL = 256
    for k, c, f in zip(keys, codes, frames):
        incremental.add(k, c.tobytes(), f)
    assert len(incremental._segments) >= 2  # growth built and merged segments
    queries = _queries(rng, codes, max(distances), 60)
    for d in distances:
        _same(bulk, ref, queries, d)
        _same(incremental, ref, queries, d)
    assert bulk.rows == incremental.rows == ref.rows == n
    assert len(bulk) == len(incremental) == len(ref) == n // 2


def test_planted_near_duplicates_found_at_threshold_in_a_large_segment() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    idx = MultiIndexHamming(256)
    idx.add_many(list(range(n)), codes)
    assert idx._segments and idx._segments[0].rows == n
    assert idx._segments[0].probe_cost(31) * idx.SCAN_ADVANTAGE < n  # really probed, not scanned
    picks = rng.integers(0, n, 300)
    queries = [_near(rng, codes[i], 31 if j % 2 else int(rng.integers(0, 32))).tobytes() for j, i in enumerate(picks)]
    for row, hits in zip(picks, idx.search(queries, 31)):
        assert int(row) in [k for k, _, _ in hits]
        for _, frame, dist in hits:
            assert frame is None and dist <= 31


def test_removal_growth_and_compaction_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    bits = 256
    mih, ref = MultiIndexHamming(bits), HammingIndex(bits)
    mih.TAIL = 128
    live: list[int] = []
    serial = 0
    queries: list[bytes] = []
    for step in range(12):
        batch = _bank(rng, 700, bits // 8)
        keys = [serial + i for i in range(len(batch))]
        serial += len(batch)
        if step % 2:
            mih.add_many(keys, batch, [step] * len(keys))
        else:
            for k, c in zip(keys, batch):
                mih.add(k, c.tobytes(), step)
        for k, c in zip(keys, batch):
            ref.add(k, c.tobytes(), step)
        live += keys
        queries = _queries(rng, batch, 31, 10) + queries[:30]
        for k in [live.pop(int(rng.integers(0, len(live)))) for _ in range(300)]:
            mih.remove(k)
            ref.remove(k)
        mih.remove(10**9)  # never added
        _same(mih, ref, queries, 31)
        assert mih.rows == ref.rows == len(live)
        assert len(mih) == len(live)
    assert mih._n < serial  # compaction dropped dead rows (a quarter dead triggers it) and kept the live ones


def test_readding_a_removed_key_and_duplicate_codes() -> None:
    idx = MultiIndexHamming(64)
    code = bytes.fromhex("00ff00ff00ff00ff")
    a, b = 7, 3
    idx.add(a, code, 5)
    idx.add(b, code, None)
    idx.add(a, code, 9)  # a second row for the same key (another frame)
    assert sorted(idx.search([code], 0)[0], key=repr) == [(3, None, 0), (7, 5, 0), (7, 9, 0)]
    idx.remove(a)
    assert idx.search([code], 3) == [[(b, None, 0)]]
    idx.add(a, bytes.fromhex("00ff00ff00ff00fe"), 1)
    assert sorted(idx.search([code], 1)[0], key=repr) == [(3, None, 0), (7, 1, 1)]
    assert idx.search([], 3) == [] and idx.search([code], -1) == [[]]
    assert len(idx) == 2 and idx.rows == 2


def test_chunk_helpers() -> None:
    # the pigeonhole: some chunk within its radius whenever the whole code is within d
    rng = np.random.default_rng(1)
    for m in (3, 11, 16):
        for d in (0, 5, 31, 40):
            radii = chunk_radii(m, d)
            for _ in range(200):
                dist = rng.multinomial(d, np.ones(m) / m)  # some split of d differing bits
                assert any(x <= r for x, r in zip(dist, radii))
    assert len(flip_masks(16, 1)) == 17 and len(flip_masks(20, 2)) == 1 + 20 + 190
    words = to_words(np.frombuffer(bytes(range(32)), dtype=np.uint8), 4)
    whole = int.from_bytes(bytes(range(32)), "big")
    for lo, w in ((0, 16), (60, 8), (120, 23), (233, 23)):  # inside a word and straddling two
        assert int(chunk_values(words, lo, w)[0]) == (whole >> (256 - lo - w)) & ((1 << w) - 1)


def test_packed_codes_in_redis_follow_every_change_and_cold_start_agrees(tmp_path) -> None:
    from workers.bank.model import Entry
    from workers.bank.store import NO_FRAME, BankStore, codes_key, entries_key
    from workers.signals import SignalValue
    from workers.stack.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path).start()
    try:
        store = BankStore.from_url(server.url, actor="test")
        store.create_bank("b", "block")
        assert store.has_codes("b")
        rng = np.random.default_rng(5)
        hexes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(6)]
        video = Entry("v1", "b", tuple(SignalValue("pdq", h, frame_ms=1000 * i) for i, h in enumerate(hexes[:3]))
                      + (SignalValue("md5", "ab" * 16),))
        photo = Entry("p1", "b", (SignalValue("pdq", hexes[3]), SignalValue("phash", "0123456789abcdef")))
        other = Entry("p2", "b", (SignalValue("pdq", hexes[4]),))
        store.add_entries("b", [video, photo, other])
        store.set_entry_disabled("b", "p2", True)  # disabled: kept as JSON, gone from the codes
        store.remove_entries("b", ["p1"])
        store.add_entries("b", [Entry("v1", "b", (SignalValue("pdq", hexes[5], frame_ms=7),))])  # replaced

        def rows(signal: str) -> list[tuple[str, str, int]]:
            return sorted((i, c.tobytes().hex(), int(f)) for ids, codes, frames in store.iter_codes("b", signal)
                          for i, c, f in zip(ids, codes, frames))

        assert rows("pdq") == [("v1", hexes[5], 7)]
        assert rows("phash") == [] and rows("md5") == []
        store.add_entries("b", [video, photo])
        assert rows("pdq") == sorted([("v1", h, 1000 * i) for i, h in enumerate(hexes[:3])] + [("p1", hexes[3], NO_FRAME)])
        assert rows("md5") == [("v1", "ab" * 16, NO_FRAME)]

        # cold start from the packed codes = index built from the JSON entries
        idx = MultiIndexHamming(256)
        handle: dict[str, int] = {}
        for ids, codes, frames in store.iter_codes("b", "pdq"):
            idx.add_many([handle.setdefault(i, len(handle)) for i in ids], codes, frames)
        ref = HammingIndex(256)
        for e in store.iter_entries("b"):
            for sv in e.signals:
                if sv.signal == "pdq" and not e.disabled:
                    ref.add(handle[e.entry_id], bytes.fromhex(sv.value), sv.frame_ms)
        _same(idx, ref, [bytes.fromhex(h) for h in hexes], 40)

        # a bank from before the packed layout: backfilled from its JSON
        store.r.delete(codes_key("b", "pdq"), codes_key("b", "md5"), codes_key("b", "phash"))
        store.r.hdel("vigil:layout", "b")
        assert not store.has_codes("b") and rows("pdq") == []
        assert store.backfill_codes("b") == store.r.hlen(entries_key("b")) == 3
        assert store.has_codes("b") and len(rows("pdq")) == 4 and rows("phash") == [("p1", "0123456789abcdef", NO_FRAME)]
    finally:
        server.stop()


def test_keys_out_of_order_are_found_for_removal() -> None:
    """Bulk rows not in key order (a second signal of the same entries) are removed by key too."""
    rng = np.random.default_rng(11)
    n = 70_000  # past the recent-rows dict: key lookups go through the sorted permutation
    codes = _bank(rng, n, 8)
    keys = rng.permutation(n // 2).repeat(2)
    mih, ref = MultiIndexHamming(64), HammingIndex(64)
    mih.add_many(keys, codes)
    assert mih._order is not None
    for k, c in zip(keys.tolist(), codes):
        ref.add(k, c.tobytes())
    for k in rng.choice(n // 2, 500, replace=False).tolist():
        mih.remove(k)
        ref.remove(k)
    _same(mih, ref, _queries(rng, codes, 6, 40), 6)
    assert mih.rows == ref.rows == n - 1000 and len(mih) == n // 2 - 500


def test_parallel_segment_build_equals_serial(monkeypatch) -> None:
    import workers.index.mih_segment as mih  # where segments are built

    rng = np.random.default_rng(12)
    codes = _bank(rng, 60_000, 32)
    monkeypatch.setattr(mih, "BUILD_THREADS", 2)
    monkeypatch.setattr(mih, "PARALLEL_BUILD_ROWS", 1)
    parallel = MultiIndexHamming(256)
    parallel.add_many(np.arange(len(codes)), codes)
    monkeypatch.setattr(mih, "BUILD_THREADS", 1)
    serial = MultiIndexHamming(256)
    serial.add_many(np.arange(len(codes)), codes)
    (a,), (b,) = parallel._segments, serial._segments
    assert (a.slots == b.slots).all() and (a.overflow == b.overflow).all()


def test_big_merges_and_compactions_wait_for_a_rebuild_and_stay_exact() -> None:
    """A change must not rebuild a large index while searches wait: merges and compactions above
    INLINE_BUILD_ROWS are deferred, results stay exact meanwhile, and rebuild_due says when a fresh
    index would search markedly faster."""
    rng = np.random.default_rng(8)
    bits = 256
    codes = _bank(rng, 6000, bits // 8)
    mih, ref = MultiIndexHamming(bits), HammingIndex(bits)
    mih.TAIL, mih.INLINE_BUILD_ROWS = 128, 1000
    with mih.bulk(3000):  # a cold start: one segment, however large
        mih.add_many(range(3000), codes[:3000])
    for k in range(3000):
        ref.add(k, codes[k].tobytes())
    assert [s.rows for s in mih._segments] == [3000] and not mih.rebuild_due
    queries = _queries(rng, codes, 31, 40)
    due_at = None
    for k in range(3000, 6000):
        mih.add(k, codes[k].tobytes())
        ref.add(k, codes[k].tobytes())
        if due_at is None and mih.rebuild_due:
            due_at = k
    assert max(s.rows for s in mih._segments[1:]) <= 1000  # never merged into the 3000-row segment
    assert due_at is not None and due_at < 5000  # extra segments make searches dearer: rebuild asked
    _same(mih, ref, queries, 31)
    for k in range(0, 6000, 2):  # half dead: no compaction inline at this size
        mih.remove(k)
        ref.remove(k)
    assert mih._n == 6000 and mih.rebuild_due
    _same(mih, ref, queries, 31)
    assert mih.rows == ref.rows == 3000


def test_more_hits_than_the_kernel_has_room_for_are_all_returned() -> None:
    """Thousands of rows within the distance of one query (a long video banked frame by frame): the
    compiled probe counts past its output and is called again with room for every hit."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, (40_000, 8), dtype=np.uint8)
    same = rng.integers(0, 256, 8, dtype=np.uint8)
    codes[::8] = same  # 5,000 identical rows
    idx = MultiIndexHamming(64)
    idx.add_many(list(range(len(codes))), codes)
    seg = idx._segments[0]
    assert seg.probe_cost(2) * idx.SCAN_ADVANTAGE < seg.rows  # probed, not scanned
    hits = idx.search([same.tobytes()], 2)[0]
    want = [i for i, c in enumerate(codes) if np.unpackbits(c ^ same).sum() <= 2]
    assert len(want) >= 5000
    assert sorted(k for k, _, _ in hits) == want
