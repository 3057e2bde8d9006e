"""Outages on real processes: Redis stopped and restarted under a running matcher; the broker
restarted under running workers."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

import topics
from tests.pipeline_helpers import submit_and_wait, write_photo
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.stream.kafka import create_topics
from workers.stack.cluster import Cluster
from workers.settings import Settings
from workers.stack.embedded import EmbeddedBroker, EmbeddedRedis

pytestmark = pytest.mark.integration


def _ready(url: str) -> dict:
    try:
        with urllib.request.urlopen(url.replace("/metrics", "/readyz"), timeout=2) as r:
            return json.load(r)
    except urllib.error.HTTPError as err:
        return json.load(err)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_matcher_rides_out_a_redis_outage_and_catches_up(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    servers = [redis_server]
    settings = Settings(redis=redis_server.url, media_roots=(str(media),), data_dir=str(tmp_path / "c"),
                        partitions=2, bank_stale_seconds=3, decision_cache_ttl_s=0)
    try:
        with Cluster(settings) as cluster:
            store = BankStore.from_url(redis_server.url, actor="pytest")
            store.create_bank("outage", "block")
            add_media_file(store, "outage", write_photo(media, "bank-chelsea", "chelsea", ext=".png"), cluster.settings)
            cluster.wait_ready(timeout=120)
            matcher = next(w for w in cluster.workers if w.kind == "matcher")
            copy = write_photo(media, "chelsea-copy", "chelsea", quality=70)
            assert submit_and_wait(cluster.settings, [copy])[copy][1]["decision"] == "block"

            redis_server.stop()
            during = submit_and_wait(cluster.settings, [copy], timeout=60)[copy][1]
            assert during["decision"] == "block"  # matched from the in-memory index
            state = _wait(lambda: (lambda r: None if r["ready"] else r)(_ready(matcher.metrics_url)), 15,
                          "matcher reports not ready while Redis is away")
            assert state["checks"]["bank_fresh"] is False and state["checks"]["bank_loaded"] is True

            servers.append(EmbeddedRedis(tmp_path / "redis", port=redis_server.port).start())  # same port, same AOF
            _wait(lambda: _ready(matcher.metrics_url)["ready"], 30, "matcher ready again after Redis returned")
            store = BankStore.from_url(redis_server.url, actor="pytest")
            add_media_file(store, "outage", write_photo(media, "bank-rocket", "rocket", ext=".png"), cluster.settings)
            late = write_photo(media, "rocket-copy", "rocket", quality=70)
            _wait(lambda: submit_and_wait(cluster.settings, [late])[late][1]["decision"] == "block", 20,
                  "a change made after Redis returned reaches the matcher")
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
def test_workers_reconnect_after_the_broker_restarts(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    broker = EmbeddedBroker(tmp_path, port=None).start()
    settings = Settings(kafka=broker.bootstrap, embedded=True, media_roots=(str(media),),
                        data_dir=str(tmp_path / "c"), partitions=2)
    try:
        with Cluster(settings) as cluster:
            cluster.wait_ready(timeout=120)
            photo = write_photo(media, "before", "coffee")
            assert submit_and_wait(cluster.settings, [photo])[photo][0] == topics.DECISIONS

            broker.stop()
            time.sleep(3)
            # A producer buffers within bounds while the broker is away, then fails loudly.
            from confluent_kafka import Producer

            errors = []
            p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 2000,
                          "queue.buffering.max.messages": 10})
            p.produce(topics.UPLOADS, b"x", on_delivery=lambda err, _m: errors.append(err))
            with pytest.raises(BufferError):
                for _ in range(20):
                    p.produce(topics.UPLOADS, b"x")
            p.flush(10)
            assert errors and errors[0] is not None

            broker = EmbeddedBroker(tmp_path, port=broker.port).start()  # memory-only: topics are gone
            create_topics(cluster.settings)
            after = write_photo(media, "after", "flower.jpg")
            outcome = _wait(lambda: _try(cluster.settings, after), 120, "a decision after the broker restarted")
            assert outcome[0] == topics.DECISIONS and outcome[1]["decision"] == "allow"
            assert all(w.proc.poll() is None for w in cluster.workers), "a worker died with the broker"
    finally:
        broker.stop()


def _try(settings: Settings, path):
    try:
        return submit_and_wait(settings, [path], timeout=20)[path]
    except (AssertionError, RuntimeError, Exception):
        return None
