"""From a reviewer's click to the matchers: the time from a `confirm` verdict (the POST its
button sends, with session and CSRF token) to the first later copy of the photo decided `block`
by the reviewed-bad bank, on the embedded stack with `vigil review` (SQLite) in its own process.

Copies are submitted every 50 ms from just before the click, so the figure is the verdict's
path (database transaction, hashing the media, the bank write, the matcher's change-stream
read) plus at most one copy's decision time, not a polling interval.

    python -m benchmarks.bench_review [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle")


def run(quick: bool = False) -> str:
    from sqlalchemy import select

    from workers.bank.importer import add_media_file
    from workers.bank.store import BankStore
    from workers.review import auth, db
    from workers.review.client import ReviewerClient
    from workers.review.db import Case
    from workers.settings import Settings
    from workers.stack import samples, transforms
    from workers.stack.cluster import Cluster
    from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event

    photos = PHOTOS[:2] if quick else PHOTOS
    rows = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-review-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        settings = Settings(media_roots=(str(media),), data_dir=str(Path(tmp) / "data"), actor="bench", partitions=3)
        with Cluster(settings, review=True) as cluster:
            s = cluster.settings
            store = BankStore.from_url(s.redis, actor="bench")
            store.create_bank("suspect", "review")
            for name in photos:
                p = media / f"bank-{name}.png"
                p.write_bytes(transforms.encode(samples.photo(name), ".png"))
                add_media_file(store, "suspect", p, s)
            cluster.wait_ready(timeout=120)
            sessions = db.open_store(s)
            auth.add_user(sessions, "bench", "reviewer", "bench-password")
            review = next(w for w in cluster.workers if w.kind == "review")
            client = ReviewerClient(review.metrics_url.removesuffix("/metrics"))
            client.login("bench", "bench-password")
            producer = UploadProducer(s)
            for name in photos:
                first = media / f"{name}-first.jpg"
                first.write_bytes(transforms.encode(transforms.resize(samples.photo(name), 0.9), ".jpg", 80))
                event = upload_event(first)
                watcher = OutcomeWatcher(s)
                producer.submit(event)
                producer.flush()
                watcher.wait_for({event["event_id"]}, 60)
                watcher.close()
                case_id = _wait_case(sessions, Case, select, event["content_id"])
                client.claim(case_id)
                rows.append((name, *_click_to_block(client, case_id, s, producer, media, name, samples, transforms,
                                                    upload_event, OutcomeWatcher)))
    lines = ["## Review: verdict click to the first blocked copy", "",
             "1 hasher, 1 matcher, `vigil review` (SQLite) on the embedded stack; a `review` bank holds the photo, "
             "a reviewer confirms its case over HTTP, copies (new bytes each) arrive every 50 ms.", "",
             "| photo | click -> verdict page (ms) | click -> first copy blocked by reviewed-bad (ms) | copies decided before it |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {post:.0f} | {block:.0f} | {before} |" for n, post, block, before in rows]
    blocks = [r[2] for r in rows]
    lines += ["", f"median {statistics.median(blocks):.0f} ms, max {max(blocks):.0f} ms over {len(rows)} verdicts.", ""]
    shots = [p for p in ("queue.png", "case.png") if (Path(__file__).resolve().parent / "out" / "review" / p).exists()]
    if shots:  # written by tests/test_review_browser.py (banked test photos only, blurred)
        lines += ["Screenshots from the browser test: " + ", ".join(f"[{s}](review/{s})" for s in shots), ""]
    return "\n".join(lines)


def _wait_case(sessions, Case, select, content_id: str) -> int:  # noqa: N803
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sessions() as s:
            case_id = s.scalar(select(Case.id).where(Case.content_id == content_id))
        if case_id:
            return case_id
        time.sleep(0.1)
    raise TimeoutError(f"no case for {content_id}")


def _click_to_block(client, case_id, s, producer, media, name, samples, transforms, upload_event, OutcomeWatcher):  # noqa: N803
    """(click -> response ms, click -> first block decided ms, copies decided before it)."""
    img = samples.photo(name)
    watcher = OutcomeWatcher(s)
    stop = threading.Event()
    sent: dict[str, float] = {}

    def feed() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            p = media / f"{name}-copy-{i}.png"
            p.write_bytes(transforms.encode(transforms.resize(img, 0.5 + (i % 40) / 100), ".png"))
            e = upload_event(p, content_id=f"{name}-copy-{i}")
            sent[e["event_id"]] = time.time()
            producer.submit(e)
            producer.flush()
            stop.wait(0.05)
    t = threading.Thread(target=feed, daemon=True)
    t.start()
    time.sleep(0.3)
    click = time.time()
    client.verdict(case_id, "confirm", "other")
    answered = time.time()
    before, found = 0, None
    for _topic, msg in watcher.messages(60):
        if msg.get("event_id") not in sent:
            continue
        if msg.get("decision") == "block" and any(m["bank"] == "reviewed-bad" for m in msg["matches"]):
            found = msg
            break
        before += 1
    stop.set()
    t.join()
    watcher.close()
    if found is None:
        raise RuntimeError("no copy was blocked within 60 s of the verdict")
    return (answered - click) * 1000, found["decided_at_ms"] - click * 1000, before


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    print(run(ap.parse_args().quick))
