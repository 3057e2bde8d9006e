"""The decisions the report tests build their documents from, produced by the real pipeline:
banked photos with labels, edited copies uploaded, unrelated photos, bad input dead-lettered,
and reviewer verdicts and a user report as the review service (issue 16) will write them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from confluent_kafka import Producer

import topics
from tests.pipeline_helpers import event_bytes, produce_raw, submit_and_wait, write_photo
from topics import TopicSpec
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.reports.consumer import ACTIONS, REPORTS
from workers.stack import transforms
from workers.stream.client import OutcomeWatcher
from workers.stream.kafka import create_topics, producer_config

METADATA = {"uploader_id": "u-17", "ip": "203.0.113.5"}
# bank -> (action, label, banked photos); the copies uploaded are edits of these
BANKS = {"csam-list": ("block", "csam", ("astronaut", "chelsea")), "ncii-list": ("block", "ncii", ("rocket",)),
         "custom-list": ("block", "custom-x", ("coffee",)), "watch-list": ("review", "terror", ("stereo_motorcycle",))}
UNRELATED = ("china.jpg", "flower.jpg")
DEAD = {"not_json": 2, "media_not_found": 1}


@dataclass
class Produced:
    """What the test produced, to compare every report with."""

    settings: object
    media_dir: Path
    decisions: dict[str, dict] = field(default_factory=dict)  # photo name -> decision
    copies: dict[str, Path] = field(default_factory=dict)  # photo name -> uploaded file
    verdicts: list[dict] = field(default_factory=list)

    def cid(self, photo: str) -> str:
        return self.decisions[photo]["content_id"]

    def period(self) -> tuple[str, str]:
        today = date.today()
        return (today - timedelta(days=1)).isoformat(), (today + timedelta(days=2)).isoformat()


def produce_all(cluster, media_dir: Path) -> Produced:
    s = cluster.settings
    store = BankStore.from_url(s.redis, actor="pytest")
    for bank, (action, label, photos) in BANKS.items():
        store.create_bank(bank, action, label=label, exist_ok=True)
        for name in photos:
            add_media_file(store, bank, write_photo(media_dir, f"bank-{name}", name, ext=".png"), s)
    out = Produced(s, media_dir)
    for i, (bank, (_, _, photos)) in enumerate(BANKS.items()):
        for name in photos:
            out.copies[name] = write_photo(media_dir, f"copy-{name}", name,
                                           edit=lambda im: transforms.resize(im, 0.8), quality=80)
    for name in UNRELATED:
        out.copies[name] = write_photo(media_dir, f"copy-{name}", name)
    by_path = submit_and_wait(s, list(out.copies.values()), metadata=METADATA)
    for name, path in out.copies.items():
        topic, msg = by_path[path]
        assert topic == topics.DECISIONS, msg
        out.decisions[name] = msg
    _dead_letters(s, media_dir)
    _review_outputs(out)
    return out


def _dead_letters(settings, media_dir: Path) -> None:
    watcher = OutcomeWatcher(settings, watch=(topics.DEAD_LETTER,))
    raw = [(f"bad-{uuid.uuid4()}".encode(), b"not json at all") for _ in range(DEAD["not_json"])]
    raw.append((b"bad-missing", event_bytes(event_id=str(uuid.uuid4()), media_uri=(media_dir / "gone.jpg").as_uri())))
    produce_raw(settings, raw)
    seen = 0
    for _topic, _msg in watcher.messages(60):
        seen += 1
        if seen == len(raw):
            break
    watcher.close()
    assert seen == len(raw), f"only {seen} dead letters of {len(raw)}"


def _review_outputs(out: Produced) -> None:
    """Verdicts and a report in the shapes issue 16 specifies (its topics do not exist here yet)."""
    create_topics(out.settings, [TopicSpec(ACTIONS, 1), TopicSpec(REPORTS, 1)])
    now = int(time.time() * 1000)
    def verdict(case: int, photo: str, action: str, label: str | None, kind: str) -> dict:
        return {"schema_version": 1, "event_id": f"case-{case}-verdict-1", "content_id": out.cid(photo),
                "action": action, "label": label, "reviewer": f"r-{case}", "case_id": case,
                "decided_at_ms": now, "source": "upload", "kind": kind}
    # a QA sample of automatic blocks: one confirmed, one overturned; and a review confirmed
    out.verdicts = [verdict(1, "astronaut", "block", "csam", "qa"), verdict(2, "chelsea", "allow", None, "qa"),
                    verdict(3, "stereo_motorcycle", "block", "terror", "review")]
    p = Producer(producer_config(out.settings))
    for v in out.verdicts + out.verdicts[2:]:  # the last one published twice, as after a crash
        p.produce(ACTIONS, key=v["content_id"].encode(), value=json.dumps(v).encode())
    p.produce(REPORTS, key=b"c-reported", value=json.dumps({
        "report_id": "rep-1", "content_id": "c-reported", "media_uri": out.copies["china.jpg"].as_uri(),
        "reason": "csam", "reporter": "user-9", "reported_at_ms": now}).encode())
    assert p.flush(30) == 0


def vigil(settings, *args: str, extra_env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real CLI, as an operator would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(settings.to_env())
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240)
    if check:
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc
