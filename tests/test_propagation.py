"""When a bank change is live in every matcher (issue 22), on a real redis-server: import batches
applied in bulk, matcher heartbeats and the wait for a version, decisions held while a matcher
catches up, and `vigil bank ... --wait`'s exit code."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np

from workers.bank import propagation
from workers.bank.model import Entry
from workers.bank.store import BankStore
from workers.index.matching import BankIndex, CatchUp
from workers.settings import Settings
from workers.signals import SignalValue


def _hexes(n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(n)]


def _state(index: BankIndex, queries: list[SignalValue]) -> tuple:
    hits = sorted((m.bank, m.entry_id, m.signal, m.distance, m.label, m.entry_frame_ms, m.frame_ms)
                  for m in index.search(queries))
    return hits, dict(index.video_frames), index.counts()


def _tail(store: BankStore, index: BankIndex, packed: bool) -> None:
    while changes := store.read_changes(index.stream_id, count=7, packed=packed):
        index.apply(changes)


def test_import_batches_applied_in_bulk_equal_entry_by_entry_and_a_cold_load(store: BankStore):
    """The matcher's bulk path (packed codes, runs of changes merged) leaves the index the JSON
    path and a cold load leave: labels, videos' frames, replaced, disabled and removed entries,
    two banks' runs interleaved, entries a bank already had."""
    hexes = _hexes(900)
    store.create_bank("a", "block", label="csam")
    store.create_bank("b", "review")
    store.add_entries("a", [Entry(f"old{i}", "a", (SignalValue("pdq", hexes[i], 90),), label="ncii")
                            for i in range(150)])
    bulk, by_entry = BankIndex(Settings()), BankIndex(Settings())
    bulk.load(store)
    by_entry.load(store)
    # a replaced (new label, new signal), b new with videos, then a disables some, b again, a removes
    store.add_entries("a", [Entry(f"old{i}", "a", (SignalValue("pdq", hexes[i], 90),
                                                     SignalValue("md5", f"{i:032x}")), label="terror")
                            for i in range(0, 150, 2)])
    videos = [Entry(f"v{i}", "b", tuple(SignalValue("pdq", hexes[200 + 3 * i + k], q, frame_ms=1000 * k)
                                        for k, q in enumerate((90, 10, 80))), label="deepfake", media_type="video")
              for i in range(120)]
    store.add_entries("b", videos)
    store.add_entries("a", [Entry(f"old{i}", "a", (SignalValue("pdq", hexes[i], 90),), disabled=True)
                            for i in range(1, 150, 3)])
    store.add_entries("b", [Entry(f"p{i}", "b", (SignalValue("pdq", hexes[600 + i], 100),)) for i in range(250)])
    store.add_entries("a", [Entry(f"n{i}", "a", (SignalValue("pdq", hexes[600 + i], 100),)) for i in range(0, 250, 5)])
    store.remove_entries("a", [f"old{i}" for i in range(0, 150, 10)])
    _tail(store, bulk, packed=True)
    _tail(store, by_entry, packed=False)
    cold = BankIndex(Settings())
    cold.load(store, snapshots=False)
    queries = [SignalValue("pdq", h, 100) for h in hexes] + [SignalValue("md5", f"{i:032x}") for i in range(150)]
    want = _state(cold, queries)
    assert _state(by_entry, queries) == want
    assert _state(bulk, queries) == want
    assert bulk.version == by_entry.version == store.version()
    assert want[2]["pdq"] == (150 - 50 - 15 + 5) + 120 * 3 + 250 + 50  # old (5 both disabled and removed), frames, p, n


def test_packed_reads_merge_a_run_of_import_batches(store: BankStore):
    store.create_bank("big", "block")
    start = store.snapshot_start().stream_id
    hexes = _hexes(1000, seed=3)
    for at in range(0, 1000, 250):
        store.add_entries("big", [Entry(f"e{i}", "big", (SignalValue("pdq", hexes[i]),)) for i in range(at, at + 250)])
    changes = store.read_changes(start, count=10, packed=True)
    assert [c.op for c in changes] == ["entries_packed"] and changes[0].version == store.version()
    assert len(changes[0].data.entry_ids) == 1000 and len(changes[0].data.blocks["pdq"].entries) == 1000


def test_wait_for_version_names_the_matchers_behind_and_forgets_dead_ones(store: BankStore):
    r = store.r
    now = int(time.time() * 1000)
    assert propagation.wait_for_version(r, 5, timeout_s=1).ok  # no live matcher: nothing to wait for
    propagation.beat(r, propagation.MatcherBeat("m-fast", 5, 5, True, False, now))
    propagation.beat(r, propagation.MatcherBeat("m-slow", 3, 5, True, True, now))
    propagation.beat(r, propagation.MatcherBeat("m-dead", 1, 5, True, False, now), ttl_s=1)
    seen = []
    result = propagation.wait_for_version(r, 5, timeout_s=1.5, progress=lambda done, live: seen.append((done, live)))
    assert not result.ok and [m.name for m in result.behind] == ["m-slow"]  # m-dead expired meanwhile
    assert seen[0] == (1, 3) and seen[-1] == (1, 2) and result.seconds >= 1.5
    assert "m-slow at 3" in result.summary() and result.to_json()["behind"] == ["m-slow"]

    def catch_up() -> None:
        time.sleep(0.5)
        propagation.beat(r, propagation.MatcherBeat("m-slow", 6, 6, True, False, int(time.time() * 1000)))

    threading.Thread(target=catch_up).start()
    result = propagation.wait_for_version(r, 5, timeout_s=10)
    assert result.ok and 0.4 < result.seconds < 5 and {m.name for m in result.matchers} == {"m-fast", "m-slow"}
    propagation.forget(r, "m-fast")
    assert [m.name for m in propagation.live_matchers(r)] == ["m-slow"]


def test_decisions_wait_while_the_matcher_catches_up_but_not_past_the_hold():
    gate = CatchUp(hold_s=5.0)
    assert gate.wait() and not gate.catching_up and gate.behind_for() == 0
    gate.behind(10)
    gate.reached(9)  # applied part of it: still holding
    gate.behind(12)  # a newer version does not extend the hold
    assert gate.catching_up and gate.target == 10
    threading.Timer(0.3, gate.reached, args=(10,)).start()
    t0 = time.monotonic()
    assert gate.wait() and 0.25 < time.monotonic() - t0 < 3 and not gate.catching_up
    short = CatchUp(hold_s=0.3)
    short.behind(5)
    t0 = time.monotonic()
    assert not short.wait() and time.monotonic() - t0 < 2  # a matcher far behind: decisions go on
    assert not short.wait() and short.behind_for() >= 0.3  # at once now; readiness sees the lag


def test_cli_bank_write_prints_its_version_and_exits_5_when_a_matcher_is_behind(store: BankStore, redis_url):
    store.create_bank("w", "block")
    env = {"VIGIL_REDIS": redis_url, "PATH": "/usr/bin:/bin"}

    def vigil(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workers.cli", "bank", *args], capture_output=True,
                              text=True, timeout=60, env=env)

    plain = vigil("update", "w", "--label", "csam")
    assert plain.returncode == 0 and f"bank version {store.version()} written" in plain.stdout
    propagation.beat(store.r, propagation.MatcherBeat("matcher-stuck", 1, 1, True, False, int(time.time() * 1000)),
                     ttl_s=300)  # a matcher stuck at version 1, alive through slow CLI starts
    behind = vigil("update", "w", "--label", "ncii", "--wait", "--wait-timeout", "0.5")
    assert behind.returncode == 5, behind.stderr
    assert "NOT yet live" in behind.stdout and "matcher-stuck at 1" in behind.stdout
    as_json = json.loads(vigil("update", "w", "--label", "x", "--wait", "--wait-timeout", "0.2", "--json").stdout)
    assert as_json["version"] == store.version() and as_json["propagation"]["behind"] == ["matcher-stuck"]
    listing = json.loads(vigil("list", "--json").stdout)
    assert listing["matchers"][0]["name"] == "matcher-stuck" and listing["matchers"][0]["behind"] == store.version() - 1
    assert "matcher matcher-stuck" in vigil("stats").stdout
    propagation.forget(store.r, "matcher-stuck")
    gone = vigil("update", "w", "--label", "y", "--wait")
    assert gone.returncode == 0 and "no live matchers" in gone.stdout
