"""`vigil status` against a real running pipeline: figures from two scrapes match what happened."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import topics
from workers.stack import samples, transforms
from workers.ops import status
from workers.bank.model import Entry, entry_id_for_file
from workers.bank.store import BankStore
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
from workers.signals.hashing import hash_media
from workers.stack.cluster import Cluster
from workers.settings import Settings
from workers.stack.embedded import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    media = tmp_path_factory.mktemp("status-media")
    with Cluster(Settings(media_roots=(str(media),), actor="test-status"), hashers=1, matchers=1) as c:
        store = BankStore.from_url(c.settings.redis, actor="test-status")
        store.create_bank("known-bad", "block")
        original = media / "bank-coffee.png"
        original.write_bytes(transforms.encode(samples.photo("coffee"), ".png"))
        result = hash_media(original.read_bytes(), c.settings)
        sha = next(v.value for v in result.signals if v.signal == "sha256")
        store.add_entries("known-bad", [Entry(entry_id_for_file(sha), "known-bad", tuple(result.signals),
                                              media_type="image")])
        c.media = media
        c.wait_ready(timeout=90)
        yield c


def _submit(c: Cluster, files: list[Path]) -> dict:
    watcher = OutcomeWatcher(c.settings)
    producer = UploadProducer(c.settings)
    events = [upload_event(f) for f in files]
    for e in events:
        producer.submit(e)
    producer.flush()
    got = watcher.wait_for({e["event_id"] for e in events}, timeout=60)
    watcher.close()
    assert len(got) == len(events)
    return got


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.ops.status", "status", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_snapshot_counts_what_happened_between_scrapes(cluster):
    files = []
    for q in (90, 70, 50):
        p = cluster.media / f"coffee-q{q}.jpg"
        p.write_bytes(transforms.encode(samples.photo("coffee"), ".jpg", q))
        files.append(p)
    for name in ("china.jpg", "flower.jpg", "astronaut", "rocket"):
        p = cluster.media / f"{Path(name).stem}.jpg"
        p.write_bytes(transforms.encode(samples.photo(name), ".jpg", 85))
        files.append(p)
    broken = cluster.media / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    files.append(broken)

    urls = [w.metrics_url for w in cluster.workers]
    before = [status.scrape(u) for u in urls]
    outcomes = _submit(cluster, files)
    time.sleep(0.3)  # the matcher observes latency just after producing the decision
    after = [status.scrape(u) for u in urls]
    snap = status.snapshot(before, after)

    decided = [m["decision"] for t, m in outcomes.values() if t == "moderation.decisions"]
    assert snap["reachable"] == 2
    assert sorted(t["kind"] for t in snap["targets"]) == ["hasher", "matcher"]
    assert all(t["ready"] for t in snap["targets"])
    dt = snap["interval_s"]
    assert dt > 0
    per_s = snap["decisions_per_s"]
    assert {k: round(v * dt) for k, v in per_s.items() if v} == {d: decided.count(d) for d in set(decided)}
    assert decided.count("block") == 3
    assert round(snap["events_per_s"]["moderation.uploads"] * dt) == len(files)
    assert round(snap["events_per_s"]["moderation.hashes"] * dt) == len(decided)
    assert round(sum(snap["dead_letters"]["per_s"].values()) * dt) == 1
    assert sum(snap["dead_letters"]["total"].values()) >= 1

    lat = snap["decision_latency_s"]
    assert lat["window"] == "interval" and lat["count"] == len(decided)
    true_ms = sorted(m["latency_ms"]["total"] for t, m in outcomes.values() if t == "moderation.decisions")
    assert 0 < lat["p50"] <= lat["p99"] < 60
    # Bucket interpolation stays within the histogram bucket holding the true maximum.
    assert lat["p99"] <= 2 * max(true_ms) / 1000 + 0.01
    assert set(lat["by_source"]) == {"upload"}

    assert snap["bank"]["version"] >= 2  # bank created, entry added
    assert snap["bank"]["entries"].get("sha256") == 1 and snap["bank"]["entries"].get("pdq", 0) >= 1
    assert snap["bank"]["matchers"][0]["sync_age_s"] < 30


def test_cli_json_once(cluster):
    urls = [w.metrics_url for w in cluster.workers]
    # librdkafka reports statistics (hence lag) every 5 s, per consumer: wait for the hasher's.
    deadline = time.monotonic() + 15
    while not any(labels.get("topic") == topics.UPLOADS for s in map(status.scrape, urls)
                  for labels, _v in s.series("vigil_consumer_lag_messages")):
        assert time.monotonic() < deadline, "no consumer lag of moderation.uploads exported within 15 s"
        time.sleep(0.5)
    # Accept a bare host:port as well as the full URL.
    bare = urls[0].removeprefix("http://").removesuffix("/metrics")
    proc = _cli("--metrics", bare, "--metrics", urls[1], "--once", "--json", "--interval", "0.5")
    assert proc.returncode == 0, proc.stderr
    snap = json.loads(proc.stdout)
    assert snap["reachable"] == 2
    assert snap["interval_s"] >= 0.5
    lat = snap["decision_latency_s"]
    assert lat["count"] >= 7  # since start when nothing was decided during the interval
    assert 0 < lat["p50"] <= lat["p99"] < 60
    assert any(r["topic"] == "moderation.uploads" and r["lag"] >= 0 for r in snap["consumer_lag"])


def test_cli_table_once(cluster):
    proc = _cli(*sum((["--metrics", w.metrics_url] for w in cluster.workers), []), "--once", "--interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    for word in ("vigil status", "decision latency", "consumer lag", "dead letters", "bank", "matcher", "hasher",
                 "ready"):
        assert word in proc.stdout, proc.stdout


def test_no_reachable_target_exits_3():
    url = f"http://127.0.0.1:{free_port()}/metrics"
    proc = _cli("--metrics", url, "--once", "--json", "--interval", "0")
    assert proc.returncode == 3
    snap = json.loads(proc.stdout)
    assert snap["reachable"] == 0 and snap["targets"][0]["reachable"] is False
    proc = _cli("--metrics", url, "--interval", "0.1")  # live mode gives up at once too
    assert proc.returncode == 3 and "no target reachable" in proc.stderr
