"""Video uploads end to end on the real broker and Redis: a banked clip's variants are blocked,
unrelated clips are allowed, a long upload is blocked before it is fully decoded, and a few seconds
of the banked clip inside unrelated footage are found (adaptive sampling, the excerpt rule)."""
from __future__ import annotations

import pytest

import topics
from tests import media_variants as mv
from tests.pipeline_helpers import submit_and_wait
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def video_bank(cluster, media_dir):
    frames = mv.decode_rgb(mv.clip_path("bikes.mp4"), max_seconds=8)
    original = mv.write_video(media_dir / "bank-bikes.mp4", frames)
    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    store.create_bank("videos", "block", label="terror", exist_ok=True)
    entry, _ = add_media_file(store, "videos", original, cluster.settings)
    assert entry.media_type == "video" and sum(s.signal == "pdq" for s in entry.signals) >= 3
    yield frames, entry
    store.update_bank("videos", enabled=False)  # the cluster is shared with other modules


def test_variants_of_a_banked_video_are_blocked(cluster, media_dir, video_bank):
    frames, entry = video_bank
    variants = {
        "reencode-low-bitrate": dict(frames=frames, crf=None, bitrate=150_000),
        "half-scale": dict(frames=mv.scaled(frames, 0.5)),
        "letterbox": dict(frames=mv.letterboxed(frames)),
        "clip-3s": dict(frames=mv.clipped(frames, 2.0, 3.0)),
        "speed-1.25": dict(frames=mv.sped_up(frames, 1.25)),
        "black-frames": dict(frames=mv.with_black(frames, 3.0, 1.0)),
    }
    paths = {}
    for name, kw in variants.items():
        paths[mv.write_video(media_dir / f"bikes-{name}.mp4", kw.pop("frames"), **kw)] = name
    unrelated = mv.write_video(media_dir / "carphone.mp4", mv.decode_rgb(mv.clip_path("carphone_pristine.mp4"),
                                                                         max_seconds=4))
    outcomes = submit_and_wait(cluster.settings, [*paths, unrelated], timeout=120)
    for path, (topic, msg) in outcomes.items():
        assert topic == topics.DECISIONS, (path.name, msg)
        topics.validate("decision", msg)
        assert msg["media_type"] == "video"
        if path == unrelated:
            assert msg["decision"] == "allow" and msg["matches"] == [], msg
            continue
        assert msg["decision"] == "block", (paths[path], msg["notes"], msg["matches"][:2])
        top = msg["matches"][0]
        assert top["entry_id"] == entry.entry_id and top["frame_ms"] is not None
        assert top.get("query_percent", 0) >= 80 or top.get("compared_percent", 0) >= 80, top


def test_long_upload_is_blocked_before_the_end(cluster, media_dir, video_bank):
    frames, entry = video_bank
    filler = mv.decode_rgb(mv.clip_path("bigbuckbunny.mp4"))
    span = frames[-1][1] + 0.04
    # The banked clip first, then minutes of unrelated video (the filler, looped).
    tail, t = [], span
    while t < span + 100:
        for rgb, ft in filler:
            tail.append((rgb, t + ft))
        t += filler[-1][1] + 0.04
    long_video = mv.write_video(media_dir / "long.mp4", frames + tail, crf=32, rate=25)
    topic, msg = submit_and_wait(cluster.settings, [long_video], timeout=120)[long_video]
    assert topic == topics.DECISIONS and msg["decision"] == "block", msg
    assert any("before the end" in n for n in msg["notes"]), msg["notes"]
    assert max(m["frame_ms"] for m in msg["matches"]) < span * 1000 + 2000


def test_excerpts_inside_long_unrelated_uploads(cluster, media_dir, video_bank):
    """Issue 24 through the real hasher and matcher processes: 2 s of the banked clip inside 30 s
    of other footage is blocked, 1 s gets at least review, the footage alone is allowed."""
    frames, entry = video_bank
    size = (320, 136)
    filler = mv.looped(mv.concatenated(mv.fitted(mv.decode_rgb(mv.clip_path("bigbuckbunny.mp4")), *size),
                                       mv.retimed(mv.fitted(mv.decode_rgb(mv.clip_path("carphone_pristine.mp4")),
                                                            *size))), 30.0)
    uploads = {}
    for seconds, at in ((2.0, 14.0), (1.0, 21.0)):
        excerpt = mv.fitted(mv.clipped(frames, 3.0, seconds), *size)
        path = mv.write_video(media_dir / f"excerpt-{seconds:g}s.mp4", mv.spliced(filler, excerpt, at), rate=25)
        uploads[path] = (seconds, at)
    unrelated = mv.write_video(media_dir / "filler-30s.mp4", filler, rate=25)
    outcomes = submit_and_wait(cluster.settings, [*uploads, unrelated], timeout=180)
    for path, (topic, msg) in outcomes.items():
        assert topic == topics.DECISIONS, (path.name, msg)
        topics.validate("decision", msg)
        if path == unrelated:
            assert msg["decision"] == "allow" and msg["matches"] == [], msg
            assert not any("adaptive sampling" in n for n in msg["notes"]), msg["notes"]
            continue
        seconds, at = uploads[path]
        assert msg["decision"] == "block" if seconds >= 2 else msg["decision"] in ("review", "block"), \
            (path.name, msg["notes"], msg["matches"][:1])
        top = msg["matches"][0]
        assert top["entry_id"] == entry.entry_id
        run = top["excerpt"]
        assert abs(run["upload_start_ms"] - at * 1000) <= 300 and abs(run["entry_start_ms"] - 3000) <= 300, run
        # a block can go out early on the sparse frames (>= 3 covering >= 1 s) before the dense
        # ones arrive; a 1 s excerpt is only ever measured after the hasher decoded it densely
        assert run["frames"] >= 3, run
        if seconds < 2:
            assert any("adaptive sampling" in n for n in msg["notes"]), msg["notes"]


def test_a_banked_clip_shown_for_two_seconds_in_a_live_stream_is_raised(cluster, video_bank):
    """Live: frames sampled at 2 fps, 2 s of the banked clip among unrelated footage. Each matched
    frame is at least review and two within the bank's live window block."""
    import time

    import cv2

    from workers.live.streams import LiveFrameProducer
    from workers.stream.client import OutcomeWatcher

    frames, entry = video_bank
    every = lambda clip, start, seconds: [f for f, t in clip if start <= t < start + seconds and  # noqa: E731
                                          round(t * 25) % 12 == 0]  # ~2 fps
    filler = mv.decode_rgb(mv.clip_path("bigbuckbunny.mp4"))
    shown = every(filler, 0, 5) + every(frames, 3.0, 2.0) + every(filler, 0, 5)
    jpeg = lambda rgb: cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()  # noqa: E731
    sid = f"excerpt-{time.time_ns()}"
    watcher = OutcomeWatcher(cluster.settings, watch=(topics.DECISIONS,))
    producer = LiveFrameProducer(cluster.settings)
    for seq, rgb in enumerate(shown):
        producer.send_frame(sid, seq, jpeg(rgb))
        producer.flush()
        time.sleep(0.2)
    producer.end_stream(sid, len(shown))
    producer.flush()
    got = []
    for topic, msg in watcher.messages(60):
        if topic == topics.DECISIONS and msg.get("stream_id") == sid:
            got.append(msg)
            if "summary" in msg:
                break
    watcher.close()
    raised = [d for d in got if "summary" not in d]
    assert raised and raised[-1]["decision"] in ("review", "block"), got
    assert raised[0]["matches"][0]["entry_id"] == entry.entry_id
    assert got[-1]["summary"]["matched_frames"] >= 2, got[-1]["summary"]
