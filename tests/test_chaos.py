"""Chaos on real processes: 2 hashers and 2 matchers, 2,000 uploads of real photos, workers
SIGKILLed at random moments and restarted. Every event must get a decision, no event two
different decisions, and every banked copy must be blocked. The counts are printed
(`pytest -s tests/test_chaos.py`)."""
from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import defaultdict

import pytest

import topics
from tests.pipeline_helpers import write_photo
from workers.stack import samples, transforms
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
from workers.live.streams import LiveFrameProducer
from workers.stack.cluster import Cluster
from workers.settings import Settings

pytestmark = pytest.mark.integration
EVENTS = 2000
BANKED = ("astronaut", "chelsea", "rocket", "coffee")
UNRELATED = ("china.jpg", "flower.jpg", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle", "retina")


@pytest.mark.slow
def test_no_event_lost_or_decided_twice_differently_under_sigkill(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    settings = Settings(media_roots=(str(media),), data_dir=str(tmp_path / "cluster"), partitions=6,
                        decision_cache_ttl_s=0)  # every event goes through a matcher
    rng = random.Random(7)
    with Cluster(settings, hashers=2, matchers=2) as cluster:
        store = BankStore.from_url(cluster.settings.redis, actor="chaos")
        store.create_bank("chaos", "block")
        files: list[tuple[object, str]] = []
        for name in BANKED:
            add_media_file(store, "chaos", write_photo(media, f"bank-{name}", name, ext=".png"), cluster.settings)
            for q in (60, 75, 90):
                files.append((write_photo(media, f"{name}-q{q}", name, quality=q), "block"))
            files.append((write_photo(media, f"{name}-half", name, edit=lambda im: transforms.resize(im, 0.5)), "block"))
        for name in UNRELATED:
            for q in (60, 85):
                files.append((write_photo(media, f"{name.split('.')[0]}-q{q}", name, quality=q), "allow"))
        cluster.wait_ready(timeout=120)
        watcher = OutcomeWatcher(cluster.settings, from_beginning=True)
        producer = UploadProducer(cluster.settings)
        expected: dict[str, str] = {}

        def submit() -> None:
            for i in range(EVENTS):
                path, want = files[i % len(files)]
                event = upload_event(path)
                expected[event["event_id"]] = want
                producer.submit(event)
                if i % 50 == 49:
                    time.sleep(0.25)  # about 200 uploads a second, for ~10 s
            producer.flush()

        submitter = threading.Thread(target=submit)
        submitter.start()
        kills = _kill_and_restart(cluster, ("hasher", "matcher", "hasher", "matcher"), rng, (2.0, 6.0))
        submitter.join()
        outcomes: dict[str, list[tuple[str, str]]] = defaultdict(list)
        deadline = time.monotonic() + 240
        last_new = time.monotonic()
        # until all are decided, or nothing new has come for 30 s
        while time.monotonic() < deadline and len(outcomes) < len(expected) and time.monotonic() - last_new < 30:
            for topic, msg in watcher.messages(2.0):
                eid = msg.get("event_id")
                if eid in expected:
                    outcomes[eid].append((topic, msg.get("decision") or msg.get("code")))
                    last_new = time.monotonic()
        watcher.close()
        alive = [w.name for w in cluster.workers if w.proc.poll() is None]
        lost = [e for e in expected if e not in outcomes]
        on_hashes = _on_topic(cluster.settings, topics.HASHES, set(lost)) if lost else set()

    missing = [e for e in expected if e not in outcomes]
    dead = [e for e, outs in outcomes.items() if any(t == topics.DEAD_LETTER for t, _ in outs)]
    conflicting = [e for e, outs in outcomes.items() if len({d for _, d in outs}) > 1]
    wrong = [e for e, outs in outcomes.items() if outs[0][1] != expected[e]]
    duplicates = sum(len(o) - 1 for o in outcomes.values())
    report = {"events": len(expected), "decided": len(outcomes), "missing": len(missing), "dead_letters": len(dead),
              "duplicate_decisions": duplicates, "conflicting": len(conflicting), "wrong": len(wrong),
              "blocked": sum(1 for e in outcomes if outcomes[e][0][1] == "block"), "killed": kills,
              "missing_but_on_hashes_topic": len(on_hashes),
              "workers_alive_at_end": alive}
    print("chaos report:", json.dumps(report))
    assert len(expected) == EVENTS and len(kills) == 4
    assert not missing and not dead and not conflicting and not wrong, report


def _kill_and_restart(cluster: Cluster, kinds: tuple[str, ...], rng: random.Random,
                      pause: tuple[float, float]) -> list[str]:
    """SIGKILL a random worker of each kind in turn, after a random pause, and start a new one.
    Run from the main thread: a child's PR_SET_PDEATHSIG follows the thread that spawned it, so
    workers started from a short-lived thread would die with it."""
    kills = []
    for kind in kinds:
        time.sleep(rng.uniform(*pause))
        victim = rng.choice([w for w in cluster.workers if w.kind == kind])
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        cluster.workers.remove(victim)
        kills.append(victim.name)
        cluster.start_worker(kind)
    return kills


def _on_topic(settings: Settings, topic: str, event_ids: set[str]) -> set[str]:
    """Which of these events have a message on `topic` (to tell a lost hash from an unconsumed one)."""
    watcher = OutcomeWatcher(settings, watch=(topic,), from_beginning=True)
    found = {msg.get("event_id") for _t, msg in watcher.messages(10.0)} & event_ids
    watcher.close()
    return found


LIVE_STREAMS = 40
LIVE_FRAMES = 24


@pytest.mark.slow
def test_live_streams_keep_their_blocks_and_summaries_under_sigkill(tmp_path):
    """Live frames through 2 hashers and 2 matchers while a hasher and a matcher are SIGKILLed
    and restarted. Half the streams turn to banked content part-way and stay on it, as abuse on a
    stream does: every one of them is blocked (one block event, however often it is replayed),
    no other stream is, every stream ends with its summary, and every frame sent is counted in
    it exactly once, as hashed or skipped (behind a backlog the hasher skips to each stream's
    newest frame; after a hasher crash the next one hashes some frames again)."""
    media = tmp_path / "media"
    media.mkdir()
    settings = Settings(media_roots=(str(media),), data_dir=str(tmp_path / "cluster"), partitions=6)
    rng = random.Random(11)
    frames = [transforms.encode(samples.photo(n), ".jpg", 85) for n in UNRELATED]
    banked = transforms.encode(samples.photo("astronaut"), ".jpg", 75)
    with Cluster(settings, hashers=2, matchers=2) as cluster:
        store = BankStore.from_url(cluster.settings.redis, actor="chaos")
        store.create_bank("live-chaos", "block")
        add_media_file(store, "live-chaos", write_photo(media, "bank-astronaut", "astronaut", ext=".png"),
                       cluster.settings)
        cluster.wait_ready(timeout=120)
        watcher = OutcomeWatcher(cluster.settings, watch=(topics.DECISIONS,), from_beginning=True)
        producer = LiveFrameProducer(cluster.settings)
        run = time.time_ns()
        probes = {f"live-{run}-{i}": rng.randrange(2, LIVE_FRAMES - 8) for i in range(0, LIVE_STREAMS, 2)}
        streams = [f"live-{run}-{i}" for i in range(LIVE_STREAMS)]

        def push() -> None:
            for seq in range(LIVE_FRAMES):  # 4 frames a second per stream, for about 6 s
                for sid in streams:
                    data = banked if seq >= probes.get(sid, LIVE_FRAMES) else frames[(seq + len(sid)) % len(frames)]
                    producer.send_frame(sid, seq, data)
                producer.producer.poll(0)
                time.sleep(0.25)
            for sid in streams:
                producer.end_stream(sid, LIVE_FRAMES)
            producer.flush()

        pusher = threading.Thread(target=push)
        pusher.start()
        kills = _kill_and_restart(cluster, ("matcher", "hasher"), rng, (1.0, 2.5))
        pusher.join()
        got: dict[str, list[dict]] = defaultdict(list)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(1 for s in streams if any("summary" in d for d in got[s])) < len(streams):
            for _t, msg in watcher.messages(2.0):
                if msg.get("stream_id") in probes or msg.get("stream_id") in streams:
                    got[msg["stream_id"]].append(msg)
        watcher.close()

    blocked = {s for s in streams if any(d["decision"] == "block" and "summary" not in d for d in got[s])}
    block_ids = {s: {d["event_id"] for d in got[s] if d["decision"] == "block" and "summary" not in d} for s in blocked}
    summaries = {s: next(d["summary"] for d in got[s] if "summary" in d) for s in streams
                 if any("summary" in d for d in got[s])}
    miscounted = {s: v for s, v in summaries.items() if v["frames"] + v["skipped_frames"] != LIVE_FRAMES}
    report = {"streams": len(streams), "banked_streams": len(probes), "blocked": len(blocked & set(probes)),
              "blocked_unbanked": len(blocked - set(probes)), "summaries": len(summaries), "killed": kills,
              "frames_hashed": sum(v["frames"] for v in summaries.values()),
              "frames_skipped": sum(v["skipped_frames"] for v in summaries.values()),
              "frames_sent": LIVE_STREAMS * LIVE_FRAMES, "miscounted_streams": len(miscounted),
              "miscounted_frames": sum(abs(LIVE_FRAMES - v["frames"] - v["skipped_frames"]) for v in miscounted.values()),
              "decision_messages": sum(len(v) for v in got.values())}
    print("live chaos report:", json.dumps(report))
    assert blocked == set(probes), report
    assert all(len(ids) == 1 for ids in block_ids.values()), block_ids
    assert set(summaries) == set(streams) and not miscounted, (report, miscounted)
