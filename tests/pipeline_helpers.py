"""Helpers for tests that drive the real pipeline: write real photos, submit, wait for outcomes."""
from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka import Producer

import topics
from workers.stack import samples, transforms
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
from workers.settings import Settings


def write_photo(media_dir: Path, name: str, photo: str, edit=None, ext: str = ".jpg", quality: int = 90) -> Path:
    img = samples.photo(photo)
    if edit is not None:
        img = edit(img)
    path = media_dir / f"{name}{ext}"
    path.write_bytes(transforms.encode(img, ext, quality))
    return path


def submit_and_wait(settings: Settings, paths: list[Path], timeout: float = 60.0,
                    metadata: dict | None = None) -> dict[Path, tuple[str, dict]]:
    """Outcome (topic, message) per path; asserts every upload got exactly one in time."""
    watcher = OutcomeWatcher(settings)
    producer = UploadProducer(settings)
    by_event = {}
    for p in paths:
        e = upload_event(p, metadata=metadata)
        by_event[e["event_id"]] = p
        producer.submit(e)
    producer.flush()
    found = watcher.wait_for(set(by_event), timeout)
    watcher.close()
    missing = [str(by_event[e]) for e in by_event if e not in found]
    assert not missing, f"no outcome within {timeout}s for {missing}"
    return {by_event[e]: out for e, out in found.items()}


def produce_raw(settings: Settings, values: list[tuple[bytes | None, bytes]]) -> None:
    """Put arbitrary bytes on the uploads topic, as a broken or hostile producer would."""
    from workers.stream.kafka import producer_config

    p = Producer(producer_config(settings))
    for key, value in values:
        p.produce(topics.UPLOADS, key=key, value=value)
    assert p.flush(30) == 0


def event_bytes(**fields) -> bytes:
    base = {"schema_version": 1, "event_id": "x", "content_id": "x", "media_uri": "file:///x"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def disable_banks_made_since(store, before: set[str]) -> None:
    """Tests on the session's shared cluster disable the banks they made when they end, so a
    later module's photos are not matched by them (the audit trail keeps them, as in production)."""
    for name in set(store.banks()) - before:
        store.update_bank(name, enabled=False)
