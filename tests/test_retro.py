"""Retroactive matching on the real embedded broker and redis-server: content decided before the
bank knew its hash is found by the retro worker, announced once, and a SIGKILL mid-rescan
neither loses nor repeats a retro decision."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import topics
from tests import media_variants as mv
from tests.pipeline_helpers import submit_and_wait
from tests.retro_helpers import RetroWatch, committed_records, history_count, produce_history, wait_history
from workers.bank.importer import add_media_file
from workers.bank.model import Entry
from workers.bank.store import BankStore
from workers.settings import Settings
from workers.signals import SignalValue
from workers.stack import samples, transforms
from workers.stream import history
from workers.stream.kafka import base_config, producer_config

pytestmark = pytest.mark.integration
RETRO_WITHIN_S = 30  # docs/retro.md: a small history's retro decisions within 30 s of the bank change


@pytest.fixture(scope="module")
def retro_cluster(tmp_path_factory):
    from workers.stack.cluster import Cluster

    media = tmp_path_factory.mktemp("retro-media")
    settings = Settings(media_roots=(str(media),), data_dir=str(tmp_path_factory.mktemp("retro-cluster")),
                        partitions=3, retro_settle_s=1.0)
    with Cluster(settings, retros=1) as c:
        c.wait_ready(timeout=120)
        c.media = media
        yield c


def _fifty_photos(media) -> dict:
    """50 distinct real photographs (path -> pixels): quadrants of 17 sample photos."""
    names = samples.colour_photos() + ["camera", "coins", "moon", "brick", "grass", "gravel"]
    paths, seen = {}, set()
    for name in names:
        img = samples.photo(name)
        h, w = img.shape[0] // 2, img.shape[1] // 2
        for q, (y, x) in enumerate(((0, 0), (0, w), (h, 0), (h, w))):
            path = media / f"{name.replace('.', '-')}-q{q}.jpg"
            quadrant = np.ascontiguousarray(img[y:y + h, x:x + w])
            data = transforms.encode(quadrant, ".jpg", 90)
            if data not in seen:  # identical bytes would be decided from the cache, not matched
                seen.add(data)
                path.write_bytes(data)
                paths[path] = quadrant
    return dict(list(paths.items())[:50])



def test_fifty_uploads_then_five_banked_get_exactly_five_retro_blocks(retro_cluster):
    s = retro_cluster.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    store.create_bank("retro-known", "block", label="ncii", exist_ok=True)
    before = history_count(s)
    pixels = _fifty_photos(retro_cluster.media)
    paths = list(pixels)
    outcomes = submit_and_wait(s, paths, timeout=120)
    assert all(m["decision"] == "allow" for _, m in outcomes.values()), [m["matches"] for _, m in outcomes.values()]
    wait_history(s, before + 50)
    original = {p: m for p, (_, m) in outcomes.items()}

    watch = RetroWatch(s)
    chosen = [paths[i] for i in (0, 9, 17, 30, 44)]  # reported later: banked as re-encoded, half-size copies
    entries = {}
    t0 = time.monotonic()
    for p in chosen:
        img = transforms.resize(pixels[p], 0.5)
        copy = retro_cluster.media / f"banked-{p.name}"
        copy.write_bytes(transforms.encode(img, ".jpg", 70))
        entries[p], _ = add_media_file(store, "retro-known", copy, s)
    want = {original[p]["content_id"] for p in chosen}
    seen = watch.collect(RETRO_WITHIN_S, until=lambda d: {x["content_id"] for x in d} >= want)
    took = time.monotonic() - t0
    seen = watch.collect(3)  # and nothing more comes
    watch.close()
    assert sorted(d["content_id"] for d in seen) == sorted(want), [(d["content_id"], d["matches"]) for d in seen]
    assert took < RETRO_WITHIN_S
    for p in chosen:
        d = next(x for x in seen if x["content_id"] == original[p]["content_id"])
        topics.validate("decision", d)
        assert d["decision"] == "block" and d["source"] == "retro"
        assert d["event_id"] == original[p]["event_id"] and d["decided_at_ms"] == original[p]["decided_at_ms"]
        assert d["bank_version"] > original[p]["bank_version"] and d["retro"]["original_decision"] == "allow"
        top = d["matches"][0]
        assert top["entry_id"] == entries[p].entry_id and top["bank"] == "retro-known" and top["label"] == "ncii"
        assert top["signal"] in ("pdq", "phash") and top["distance"] <= top["threshold"]


def test_retro_run_by_hand_finds_them_again_and_announces_nothing_twice(retro_cluster):
    """`vigil retro run` over the same bank: the 5 matches are found, none is announced again."""
    s = retro_cluster.settings
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}, **s.to_env()}
    cmd = [sys.executable, "-m", "workers.cli", "retro", "run", "--bank", "retro-known", "--since", "1d"]
    dry = subprocess.run(cmd + ["--dry-run", "--json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert dry.returncode == 0, dry.stderr[-2000:]
    out = json.loads(dry.stdout)
    assert out["matched"] == 5 and out["announced"] == 0 and out["records"] >= 50 and out["dry_run"], out
    bad = subprocess.run(cmd[:-1] + ["yesterday"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr
    missing = subprocess.run(cmd[:5] + ["no-such-bank"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2, missing.stderr[-500:]


def test_video_whose_middle_frames_match_a_newly_banked_photo_is_found(retro_cluster):
    s = retro_cluster.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    store.create_bank("retro-video", "block", exist_ok=True)
    still = lambda name: transforms.resize(samples.photo(name), 0.5)[:240, :320]
    frames, t = [], 0.0
    for name in ("coffee", "rocket", "china.jpg"):
        img = np.ascontiguousarray(still(name))
        for _ in range(20):  # 4 s at 5 frames/s
            frames.append((img, round(t, 3)))
            t += 0.2
    video = mv.write_video(retro_cluster.media / "three-scenes.mp4", frames, gop_s=1.0)
    before = history_count(s)
    (_, decided), = submit_and_wait(s, [video], timeout=120).values()
    assert decided["decision"] == "allow" and decided["media_type"] == "video"
    wait_history(s, before + 1)
    watch = RetroWatch(s)
    banked = retro_cluster.media / "rocket-banked.png"
    banked.write_bytes(transforms.encode(np.ascontiguousarray(still("rocket")), ".png", 90))
    entry, _ = add_media_file(store, "retro-video", banked, s)
    seen = watch.collect(RETRO_WITHIN_S, until=lambda d: any(x["content_id"] == decided["content_id"] for x in d))
    watch.close()
    d = next(x for x in seen if x["content_id"] == decided["content_id"])
    assert d["decision"] == "block" and d["media_type"] == "video" and d["event_id"] == decided["event_id"]
    top = d["matches"][0]
    assert top["entry_id"] == entry.entry_id and 4000 <= top["frame_ms"] < 8000, top  # the middle scene


def test_sigkill_mid_rescan_resumes_without_duplicate_or_lost_decisions(retro_cluster):
    """400,000 history records with 30 planted copies of new entries' hashes; the retro worker is
    SIGKILLed after its first announcement, restarted, and every planted content gets exactly one."""
    s = retro_cluster.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    store.create_bank("retro-kill", "block", exist_ok=True)
    rng = np.random.default_rng(3)
    codes = [rng.bytes(32) for _ in range(30)]
    planted = {}
    p = Producer({**producer_config(s), "linger.ms": 50, "batch.size": 1_000_000})
    n = 400_000  # long enough to be mid-way when killed, on a quiet machine too (~100k records/s)
    for i in range(n):
        if i % (n // 30) == n // 60 and len(planted) < 30:
            k = len(planted)
            code, cid = codes[k], f"kill-planted-{k}"
            planted[cid] = k
        else:
            code, cid = rng.bytes(32), f"kill-{i}"
        rec = history.encode_record(str(uuid.UUID(int=i)), "image", "allow", 0, 1_000 + i,
                                    [history.Frame(0, code, 90, None, None)])
        produce_history(p, cid, rec)
    assert p.flush(120) == 0
    watch = RetroWatch(s)
    worker = next(w for w in retro_cluster.workers if w.kind == "retro" and w.proc.poll() is None)
    entries = [Entry(f"kill-e{k}", "retro-kill", (SignalValue("pdq", c.hex(), 100),)) for k, c in enumerate(codes)]
    store.add_entries("retro-kill", entries)
    deadline = time.monotonic() + 60
    while True:  # kill once the rescan has committed some progress and announced some matches
        watch.collect(0.2)
        done = committed_records(s, store)
        if done > 0 and any(x["content_id"].startswith("kill-planted") for x in watch.seen):
            break
        assert time.monotonic() < deadline, "the rescan never committed progress"
    worker.proc.kill()  # SIGKILL
    worker.proc.wait(10)
    at_kill = {x["content_id"] for x in watch.seen if x["content_id"].startswith("kill-planted")}
    assert 0 < len(at_kill) < 30, f"{len(at_kill)} announced before the kill: the rescan was not mid-way"
    done = committed_records(s, store)
    assert 0 < done < n, f"{done} records committed at the kill: the restart would not resume mid-way"
    retro_cluster.start_worker("retro")
    watch.collect(120, until=lambda d: len({x["content_id"] for x in d} & set(planted)) == 30)
    watch.collect(5)
    watch.close()
    mine = [x["content_id"] for x in watch.seen if x["content_id"].startswith("kill-")]
    assert sorted(mine) == sorted(planted), (len(mine), len(set(mine)))


def test_history_writer_keeps_sampled_live_frames_and_whole_videos(retro_cluster):
    """The matcher's hook on the real broker: 1 live frame in 10 kept; a video's parts make one record."""
    from workers.stream.history_writer import HistoryWriter

    s = retro_cluster.settings
    writer = HistoryWriter(Producer(producer_config(s)), live_every=10)
    rng = np.random.default_rng(9)
    sid = f"live-{uuid.uuid4()}"
    for seq in range(25):
        frame = {"stream_id": sid, "seq": seq, "captured_at_ms": 1000 + seq,
                 "signals": [{"signal": "pdq", "value": rng.bytes(32).hex(), "quality": 90}]}
        writer.live_frame(frame, "allow", 3, 2000 + seq)
    vid, eid = f"video-{uuid.uuid4()}", str(uuid.uuid4())
    for part in range(3):
        writer.saw({"event_id": eid, "signals": [
            {"signal": sig, "value": rng.bytes(n).hex(), "quality": 80, "frame_ms": (part * 4 + f) * 1000}
            for f in range(4) for sig, n in (("pdq", 32), ("phash", 8))] +
            ([{"signal": "sha256", "value": rng.bytes(32).hex()}] if part == 0 else [])})
    writer.decided({"event_id": eid, "content_id": vid, "media_type": "video", "decision": "allow",
                    "bank_version": 4, "decided_at_ms": 5000})
    assert writer.producer.flush(30) == 0
    got: dict[str, list[bytes]] = {}
    c = Consumer({**base_config(s), "group.id": f"t-{uuid.uuid4()}", "enable.partition.eof": True})
    parts = c.list_topics(topics.HASH_HISTORY, timeout=10).topics[topics.HASH_HISTORY].partitions
    c.assign([TopicPartition(topics.HASH_HISTORY, p, 0) for p in parts])
    left = set(parts)
    while left:
        msg = c.poll(5)
        assert msg is not None
        if msg.error():
            left.discard(msg.partition())
        elif msg.key() in (sid.encode(), vid.encode()):
            got.setdefault(msg.key().decode(), []).append(msg.value())
    c.close()
    live = [history.decode_header(v) for v in got[sid]]
    assert [h.event_id for h in live] == [f"{sid}#0", f"{sid}#10", f"{sid}#20"]
    assert all(h.media == "live" and h.frames == 1 and h.bank_version == 3 for h in live)
    assert [history.decode_header(v).frame_ms(v, 0) for v in got[sid]] == [0, 10, 20]
    (raw,) = got[vid]
    h = history.decode_header(raw)
    assert (h.event_id, h.media, h.frames, h.decided_at_ms) == (eid, "video", 12, 5000)
    assert [h.frame_ms(raw, f) for f in range(12)] == [i * 1000 for i in range(12)]
    assert len(raw) == 64 + 12 * 46 + 16


def test_entries_added_during_a_rescan_are_merged_into_it(retro_cluster):
    """A second batch of entries while a rescan runs: the running one takes them on, a prefix
    segment covers what it had passed, and every planted content of both batches is found once."""
    s = retro_cluster.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    store.create_bank("retro-merge", "block", exist_ok=True)
    rng = np.random.default_rng(21)
    codes = [rng.bytes(32) for _ in range(20)]  # 0-9 banked first, 10-19 during the rescan
    p = Producer({**producer_config(s), "linger.ms": 50, "batch.size": 1_000_000})
    n, planted = 400_000, {}
    for i in range(n):
        k = i // (n // 20) if i % (n // 20) == 7 else None
        code, cid = (codes[k], f"merge-planted-{k}") if k is not None else (rng.bytes(32), f"merge-{i}")
        if k is not None:
            planted[cid] = k
        rec = history.encode_record(str(uuid.UUID(int=10**7 + i)), "image", "allow", 0, 1, [history.Frame(0, code, 90, None, None)])
        produce_history(p, cid, rec)
    assert p.flush(120) == 0 and len(planted) == 20
    watch = RetroWatch(s)
    mk = lambda ks: [Entry(f"merge-e{k}", "retro-merge", (SignalValue("pdq", codes[k].hex(), 100),)) for k in ks]
    store.add_entries("retro-merge", mk(range(10)))
    watch.collect(60, until=lambda d: any(x["content_id"].startswith("merge-planted") for x in d))
    store.add_entries("retro-merge", mk(range(10, 20)))
    merged, deadline = False, time.monotonic() + 30
    while not merged and time.monotonic() < deadline:
        segs = json.loads(store.r.get("vigil:retro:state"))["segments"]
        merged = len(segs) == 2 and not segs[1]["open_end"] and len(segs[0]["entries"]) == 20
        watch.collect(0.1)
    assert merged, "the second batch did not merge into the running rescan"
    watch.collect(120, until=lambda d: len({x["content_id"] for x in d} & set(planted)) == 20)
    watch.collect(3)
    watch.close()
    mine = sorted(x["content_id"] for x in watch.seen if x["content_id"].startswith("merge-"))
    assert mine == sorted(planted), (len(mine), len(set(mine)))
