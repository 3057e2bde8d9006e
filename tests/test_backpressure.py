"""Overload and shutdown on real processes: a hasher flooded with ~10x what it can do keeps its
memory bounded (partitions paused, a bounded in-flight window, bounded prefetch), and a SIGTERM
in the middle of the flood hands work back cleanly: after a restart every event is decided."""
from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from tests.pipeline_helpers import write_photo
from workers.stack import transforms
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
from workers.stack.cluster import Cluster
from workers.settings import Settings

pytestmark = pytest.mark.integration
EVENTS = 1500
RSS_BOUND = 700 * 2**20


@pytest.mark.slow
def test_overload_keeps_memory_bounded_and_sigterm_loses_nothing(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    # 1080p photos: the heaviest stills a hasher sees, so the flood is far beyond its rate
    files = [write_photo(media, f"big-{i}", name, edit=lambda im: transforms.resize(im, 1920 / im.shape[1]),
                         quality=90) for i, name in enumerate(("china.jpg", "flower.jpg", "astronaut", "rocket"))]
    settings = Settings(media_roots=(str(media),), data_dir=str(tmp_path / "c"), partitions=4, decision_cache_ttl_s=0)
    with Cluster(settings) as cluster:
        cluster.wait_ready(timeout=120)
        hasher = next(w for w in cluster.workers if w.kind == "hasher")
        proc = psutil.Process(hasher.proc.pid)
        baseline = proc.memory_info().rss
        watcher = OutcomeWatcher(cluster.settings, from_beginning=True)
        producer = UploadProducer(cluster.settings)
        ids = set()
        started = time.monotonic()
        for i in range(EVENTS):  # all at once: the backlog is ~10x what it drains in the same time
            event = upload_event(files[i % len(files)])
            ids.add(event["event_id"])
            producer.submit(event)
        producer.flush()
        peak = 0
        while time.monotonic() - started < 6:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.1)
        hasher.proc.send_signal(signal.SIGTERM)  # mid-flood: finish what is in flight, commit, leave
        stop_started = time.monotonic()
        hasher.proc.wait(60)
        stop_seconds = time.monotonic() - stop_started
        cluster.workers.remove(hasher)
        cluster.start_worker("hasher")
        decided = set()
        deadline = time.monotonic() + 240
        while len(decided) < len(ids) and time.monotonic() < deadline:
            for _topic, msg in watcher.messages(2.0):
                if msg.get("event_id") in ids:
                    decided.add(msg["event_id"])
        watcher.close()
    report = {"events": EVENTS, "decided": len(decided), "hasher_rss_baseline_mb": round(baseline / 2**20),
              "hasher_rss_peak_mb": round(peak / 2**20), "sigterm_exit_s": round(stop_seconds, 1),
              "exit_code": hasher.proc.returncode}
    print("backpressure report:", json.dumps(report))
    assert hasher.proc.returncode == 0 and stop_seconds < 30, report
    assert peak < RSS_BOUND, report
    assert decided == ids, report
