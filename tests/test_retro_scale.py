"""Two retro workers share every rescan (workers/retro/members.py), on the real embedded broker
and redis-server: the history's 3 partitions split 2 + 1, every planted copy of a real photo gets
exactly one retro decision, each worker reads only its partitions, a SIGKILLed member resumes
alone, and configurations that would split the history wrongly are refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer

from tests.retro_helpers import (
    PHOTOS,
    RetroWatch,
    committed_records,
    read_history,
    planted_photos,
    planted_record,
    produce_history,
)
from workers.bank.store import BankStore
from workers.retro import members
from workers.settings import Settings
from workers.stream import history
from workers.stream.kafka import producer_config

pytestmark = pytest.mark.integration
PARTITIONS = 3  # two members: 2 + 1, a count that does not divide the partitions


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from workers.stack.cluster import Cluster

    settings = Settings(data_dir=str(tmp_path_factory.mktemp("retro-fleet")), partitions=PARTITIONS,
                        retro_settle_s=1.0)
    with Cluster(settings, hashers=0, matchers=0, retros=2) as c:
        c.wait_ready(timeout=120)
        yield c


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}")


def _fill(s: Settings, n: int, tag: str, copies: list, seed: int) -> tuple[dict[int, int], dict[str, int]]:
    """n history records of allowed uploads: random hashes, and each edited photo copy planted
    twice (under two content ids) evenly among them. Returns the records per partition and each
    planted content id's partition (the default partitioner hashes the key)."""
    rng = np.random.default_rng(seed)
    p = Producer({**producer_config(s), "linger.ms": 50, "batch.size": 1_000_000})
    plant = {i * n // (2 * len(copies)) + 7: i for i in range(2 * len(copies))}
    for i in range(n):
        if i in plant:
            produce_history(p, f"{tag}-planted-{plant[i]}", planted_record(copies[plant[i] % len(copies)]))
            continue
        rec = history.encode_record(str(uuid.UUID(int=seed * 10**8 + i)), "image", "allow", 0, 1,
                                    [history.Frame(0, rng.bytes(32), 90, rng.bytes(8), 60)])
        produce_history(p, f"{tag}-{i}", rec)
    assert p.flush(120) == 0
    return read_history(s, prefix=f"{tag}-planted-")


def _retros(fleet) -> dict[int, object]:
    return {w.member: w for w in fleet.workers if w.kind == "retro" and w.proc.poll() is None}


def _idle(store: BankStore, timeout: float = 60) -> None:
    """Until both members have no queued rescan."""
    deadline = time.monotonic() + timeout
    while any(json.loads(store.r.get(members.Member(i, 2).state_key) or "{}").get("segments") for i in (0, 1)):
        assert time.monotonic() < deadline, "the rescans did not finish"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_members_split_the_rescan_and_announce_each_copy_once(fleet):
    s = fleet.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    store.create_bank("scale-a", "block", label="csam")
    entries, copies, owner = planted_photos(PHOTOS[:4], bank="scale-a")
    per_partition, where = _fill(s, 120_000, "split", copies, seed=1)
    assert len(where) == 24 and set(where.values()) == {0, 1, 2}, where  # planted on every partition
    workers = _retros(fleet)
    assert sorted(workers) == [0, 1]
    assert _metric(workers[0].metrics_url, "vigil_retro_partitions") == 2  # partitions 0 and 2
    assert _metric(workers[1].metrics_url, "vigil_retro_partitions") == 1  # partition 1
    watch = RetroWatch(s)
    store.add_entries("scale-a", entries)
    watch.collect(60, until=lambda d: {x["content_id"] for x in d} >= set(where))
    _idle(store)
    watch.collect(2)  # and nothing more comes
    watch.close()
    got = sorted(x["content_id"] for x in watch.seen)
    assert got == sorted(where), f"{len(got)} decisions, {len(set(got))} contents of {len(where)} planted"
    for d in watch.seen:
        k = int(d["content_id"].rsplit("-", 1)[1])
        assert d["decision"] == "block" and d["matches"][0]["entry_id"] == owner[k % len(copies)]
        member = where[d["content_id"]] % 2  # member i of 2 owns the partitions p with p % 2 == i
        assert d["worker"] == workers[member].name, (d["content_id"], where[d["content_id"]], d["worker"])
    # each member read exactly its partitions' records, not the others'
    read = {m: _metric(w.metrics_url, "vigil_retro_records_read_total") for m, w in workers.items()}
    assert read == {0: per_partition[0] + per_partition[2], 1: per_partition[1]}, (read, per_partition)
    fleet_status = members.status(store.r)
    assert fleet_status["members"] == 2 and all(m["alive"] and m["queued_rescans"] == 0 for m in fleet_status["fleet"])

    # `vigil retro run` still reads every partition (by hand, alongside the fleet); nothing is announced twice
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}, **s.to_env()}
    out = subprocess.run([sys.executable, "-m", "workers.cli", "retro", "run", "--bank", "scale-a", "--since", "1d",
                          "--json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["records"] == sum(per_partition.values()) and summary["matched"] == 24, summary
    assert summary["announced"] == 0, summary


@pytest.mark.slow
def test_sigkilled_member_resumes_alone_without_duplicate_or_lost_decision(fleet):
    """Member 0 (two of the three partitions) is SIGKILLed mid-rescan; member 1 is left running.
    The restarted member 0 resumes from its committed offsets: one decision per planted copy."""
    s = fleet.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    store.create_bank("scale-b", "block")
    entries, copies, _ = planted_photos(PHOTOS[4:], bank="scale-b")
    per_partition, where = _fill(s, 360_000, "kill", copies, seed=2)
    mine = {c for c, p in where.items() if p % 2 == 0}
    assert len(mine) >= 4, where
    workers = _retros(fleet)
    watch = RetroWatch(s)
    store.add_entries("scale-b", entries)
    state0 = members.Member(0, 2).state_key
    deadline = time.monotonic() + 60
    while True:  # kill member 0 once its rescan has committed progress and announced some, not all
        watch.collect(0.1)
        announced = {x["content_id"] for x in watch.seen} & mine
        if committed_records(s, store, state0) > 0 and announced:
            break
        assert time.monotonic() < deadline, "member 0's rescan never committed progress"
    workers[0].proc.kill()  # SIGKILL
    workers[0].proc.wait(10)
    at_kill = {x["content_id"] for x in watch.seen} & mine
    assert len(at_kill) < len(mine), f"{len(at_kill)}/{len(mine)} announced before the kill: not mid-way"
    assert committed_records(s, store, state0) > 0
    assert workers[1].proc.poll() is None
    restarted = fleet.start_worker("retro")
    assert restarted.member == 0
    watch.collect(90, until=lambda d: {x["content_id"] for x in d} >= set(where))
    _idle(store)
    watch.collect(2)
    watch.close()
    # (tansu under-reports the decisions topic's end, so the watch may also see the previous test's last ones)
    got = sorted(x["content_id"] for x in watch.seen if x["content_id"].startswith("kill-"))
    assert got == sorted(where), f"{len(got)} decisions, {len(set(got))} contents of {len(where)} planted"
    assert {x["worker"] for x in watch.seen if x["content_id"] in set(where) - mine} == {workers[1].name}
    # member 0's copies: some from before the kill, the rest from the restart, which resumed from
    # the committed offsets rather than from the rescan's start
    assert {x["worker"] for x in watch.seen if x["content_id"] in mine} == {workers[0].name, restarted.name}
    share = sum(n for p, n in per_partition.items() if p % 2 == 0)
    assert 0 < _metric(restarted.metrics_url, "vigil_retro_records_read_total") < share


def _worker(s: Settings, **env: str) -> subprocess.CompletedProcess:
    base = {**{k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}, **s.to_env()}
    return subprocess.run([sys.executable, "-m", "workers.cli", "worker", "retro"],
                          env={**base, "VIGIL_METRICS_PORT": "0", **env}, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.slow
def test_configurations_that_would_split_the_history_wrongly_are_refused(fleet):
    s = fleet.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    too_many = _worker(s, VIGIL_RETRO_MEMBERS="4", VIGIL_RETRO_MEMBER="3")
    assert too_many.returncode == 2 and "has 3 partitions" in too_many.stderr, too_many.stderr[-1000:]
    changed = _worker(s, VIGIL_RETRO_MEMBERS="3", VIGIL_RETRO_MEMBER="2")
    assert changed.returncode == 2 and "recorded with 2" in changed.stderr, changed.stderr[-1000:]
    outside = _worker(s, VIGIL_RETRO_MEMBERS="2", VIGIL_RETRO_MEMBER="2")
    assert outside.returncode == 2 and "outside 0..1" in outside.stderr, outside.stderr[-1000:]
    with pytest.raises(members.MembershipError, match="held by a live worker"):  # member 1 is running
        members.join(store.r, Settings(retro_members=2, retro_member=1), PARTITIONS, "intruder", wait_s=1)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}, **s.to_env()}
    busy = subprocess.run([sys.executable, "-m", "workers.cli", "retro", "members", "3"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert busy.returncode == 2 and "are running" in busy.stderr, busy.stderr[-1000:]
    assert members.recorded(store.r) == 2


def test_changing_the_member_count_hands_on_the_earliest_position(store):
    """`vigil retro members N` on a stopped, idle fleet (real redis-server): every new member
    starts at the earliest old change-stream position, with segment numbers past every old one."""
    r = store.r
    r.set(members.MEMBERS_KEY, json.dumps({"members": 2}))
    r.set(members.Member(0, 2).state_key, json.dumps({"stream_id": "1700000000500-0", "segments": [], "seq": 7}))
    r.set(members.Member(1, 2).state_key, json.dumps({"stream_id": "1700000000100-3", "segments": [], "seq": 4}))
    with pytest.raises(members.MembershipError, match="has 3 partitions"):
        members.reconfigure(r, 4, partitions=3)
    r.set(members.ALIVE_KEY.format(index=1), "retro-x", ex=5)
    with pytest.raises(members.MembershipError, match="running"):
        members.reconfigure(r, 3, partitions=3)
    r.delete(members.ALIVE_KEY.format(index=1))
    queued = {"stream_id": "1700000000100-3", "segments": [{"id": "m1of2-v3-4"}], "seq": 4}
    r.set(members.Member(1, 2).state_key, json.dumps(queued))
    with pytest.raises(members.MembershipError, match="queued rescans"):
        members.reconfigure(r, 3, partitions=3)
    r.set(members.Member(1, 2).state_key, json.dumps({**queued, "segments": []}))
    members.reconfigure(r, 3, partitions=3)
    assert members.recorded(r) == 3
    assert sorted(r.keys("vigil:retro:state*")) == [f"{members.STATE_KEY}:{i}" for i in range(3)]
    for i in range(3):
        st = json.loads(r.get(members.Member(i, 3).state_key))
        assert st == {"stream_id": "1700000000100-3", "segments": [], "seq": 7}
    members.reconfigure(r, 1, partitions=3)  # back to a single worker: the key it always had
    assert json.loads(r.get(members.STATE_KEY))["stream_id"] == "1700000000100-3"
    assert [k for k in r.keys("vigil:retro:state*")] == [members.STATE_KEY]


def test_member_index_from_the_statefulset_hostname():
    two = Settings(retro_members=2)
    assert members.member_index(two, hostname="vigil-retro-1") == 1
    assert members.member_index(Settings(retro_members=2, retro_member=0), hostname="vigil-retro-1") == 0
    assert members.member_index(Settings(), hostname="anything") == 0
    with pytest.raises(members.MembershipError, match="VIGIL_RETRO_MEMBER"):
        members.member_index(two, hostname="retro")
    assert members.Member(0, 2).share([0, 1, 2, 3, 4, 5]) == [0, 2, 4]
    assert members.Member(2, 4).share([0, 1, 2, 3, 4, 5]) == [2]  # 6 partitions over 4: 2, 2, 1, 1
