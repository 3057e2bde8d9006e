"""Every container end to end on the real broker and Redis, in one pass: a clip banked with
`add_media_file` in each of .ts, .mpg, .flv, .ogv, .mov, .mkv and raw .h264, then another
encoding of it uploaded in each container, plus a cut and a damaged .ts, all in one submission."""
from __future__ import annotations

import pytest

import topics
from tests import media_variants as mv
from tests.pipeline_helpers import submit_and_wait
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def container_bank(cluster, media_dir):
    frames = mv.scaled(mv.decode_rgb(mv.clip_path("bikes.mp4"), max_seconds=6), 0.5)
    source = mv.write_in_container(media_dir / "ct-bank.mov", frames)
    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    store.create_bank("containers", "block", label="terror", exist_ok=True)
    entries = {}
    for suffix in mv.CONTAINERS:
        path = media_dir / f"ct-bank{suffix}"
        if suffix != ".mov":
            mv.remux(source, path) if suffix in mv.COPYABLE else mv.write_in_container(path, frames)
        entry, _ = add_media_file(store, "containers", path, cluster.settings)
        assert entry.media_type == "video" and sum(s.signal == "pdq" for s in entry.signals) >= 3, suffix
        entries[suffix] = entry.entry_id
    assert len(set(entries.values())) == len(mv.CONTAINERS)  # seven files, seven entries
    yield frames, entries
    store.update_bank("containers", enabled=False)  # the cluster is shared with other modules


def test_a_copy_in_every_container_is_blocked_and_cut_or_damaged_ones_say_partial(cluster, media_dir,
                                                                                 container_bank):
    frames, entries = container_bank
    # Another encoding of the clip (a low bitrate), re-muxed into each container as it is.
    other = mv.write_video(media_dir / "ct-upload.mp4", frames, crf=None, bitrate=150_000)
    other_frames = mv.decode_rgb(other)
    uploads = {}
    for suffix in mv.CONTAINERS:
        path = media_dir / f"ct-upload{suffix}"
        mv.remux(other, path) if suffix in mv.COPYABLE else mv.write_in_container(path, other_frames)
        uploads[path] = suffix
    ts = (media_dir / "ct-upload.ts").read_bytes()
    cut = media_dir / "ct-cut.ts"
    cut.write_bytes(ts[:len(ts) * 7 // 10 // 188 * 188 + 61])  # stops inside a transport packet
    damaged = mv.damaged_ts(media_dir / "ct-upload.ts", media_dir / "ct-damaged.ts", 0.5)
    unrelated = mv.remux(mv.write_video(media_dir / "ct-carphone.mp4", mv.decode_rgb(
        mv.clip_path("carphone_pristine.mp4"), max_seconds=3)), media_dir / "ct-carphone.ts")
    outcomes = submit_and_wait(cluster.settings, [*uploads, cut, damaged, unrelated], timeout=180)
    for path, (topic, msg) in outcomes.items():
        assert topic == topics.DECISIONS, (path.name, msg)
        topics.validate("decision", msg)
        assert msg["media_type"] == "video", (path.name, msg)
        if path == unrelated:
            assert msg["decision"] == "allow" and msg["matches"] == [] and not msg["partial"], msg
            continue
        assert msg["decision"] == "block", (path.name, msg["notes"], msg["matches"][:2])
        matched = {m["entry_id"] for m in msg["matches"]}
        assert matched == set(entries.values()), (path.name, sorted(matched))  # banked from every container
        if path in (cut, damaged):
            assert msg["partial"] is True, (path.name, msg)
            assert any(w in " ".join(msg["notes"]) for w in ("cut short", "corrupt")), msg["notes"]
        else:
            assert msg["partial"] is False, (path.name, msg["notes"])
