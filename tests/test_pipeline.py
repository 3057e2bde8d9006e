"""End to end on the real embedded broker and redis-server: uploads in, decisions out."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

import topics
from tests.pipeline_helpers import event_bytes, produce_raw, submit_and_wait, write_photo
from workers.stack import transforms
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.stream.client import OutcomeWatcher

pytestmark = pytest.mark.integration
BANKED = ("astronaut", "chelsea", "rocket")


@pytest.fixture(scope="module")
def banked(cluster, media_dir):
    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    store.create_bank("known-bad", "block", label="csam", exist_ok=True)
    entries = {}
    for name in BANKED:
        path = write_photo(media_dir, f"bank-{name}", name, ext=".png")
        entries[name], _ = add_media_file(store, "known-bad", path, cluster.settings)
    yield store, entries
    for bank in store.banks():  # other modules share the cluster: leave no bank enabled behind
        store.update_bank(bank, enabled=False)


def test_edited_copies_of_banked_photos_are_blocked_with_evidence(cluster, media_dir, banked):
    _, entries = banked
    edits = {"reencode": dict(quality=60), "half": dict(edit=lambda im: transforms.resize(im, 0.5)),
             "crop": dict(edit=lambda im: transforms.crop(im, 0.02), quality=92)}
    paths = {}
    for name in BANKED:
        for edit, kw in edits.items():
            paths[write_photo(media_dir, f"{name}-{edit}", name, **kw)] = name
    outcomes = submit_and_wait(cluster.settings, list(paths), metadata={"uploader": "u-1"})
    for path, (topic, msg) in outcomes.items():
        assert topic == topics.DECISIONS, (path, msg)
        topics.validate("decision", msg)
        assert msg["decision"] == "block", (path.name, msg)
        top = msg["matches"][0]
        assert top["bank"] == "known-bad" and top["entry_id"] == entries[paths[path]].entry_id
        assert top["label"] == "csam" and top["signal"] in ("pdq", "phash") and top["distance"] <= top["threshold"]
        assert msg["metadata"] == {"uploader": "u-1"} and msg["bank_version"] > 0
        assert msg["latency_ms"]["total"] >= 0 and {"fetch", "decode", "hash", "match"} <= set(msg["latency_ms"])


def test_unrelated_photos_are_allowed(cluster, media_dir, banked):
    paths = [write_photo(media_dir, f"unrelated-{n}", n) for n in
             ("china.jpg", "flower.jpg", "coffee", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle")]
    for path, (topic, msg) in submit_and_wait(cluster.settings, paths).items():
        assert topic == topics.DECISIONS and msg["decision"] == "allow" and msg["matches"] == [], (path.name, msg)


def test_bad_input_is_dead_lettered_and_the_next_upload_still_decided(cluster, media_dir, tmp_path_factory, banked):
    corrupt = media_dir / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg " * 20)
    outside = tmp_path_factory.mktemp("elsewhere") / "outside.jpg"
    outside.write_bytes(b"x")
    cases = {
        "not_json": b"this is not json",
        "schema_invalid": event_bytes(media_uri=None),
        "media_not_found": event_bytes(media_uri=(media_dir / "missing.jpg").as_uri()),
        "outside_media_roots": event_bytes(media_uri=outside.as_uri()),
        "decode_failed": event_bytes(media_uri=corrupt.as_uri()),
    }
    ids = {}
    raw = []
    for code, value in cases.items():
        key = f"bad-{code}-{uuid.uuid4()}".encode()
        ids[key.decode()] = code
        raw.append((key, value))
    watcher = OutcomeWatcher(cluster.settings)
    produce_raw(cluster.settings, raw)
    good = write_photo(media_dir, "after-bad-input", "chelsea", quality=75)
    outcome = submit_and_wait(cluster.settings, [good])[good]
    assert outcome[0] == topics.DECISIONS and outcome[1]["decision"] == "block"
    seen = {}
    for topic, msg in watcher.messages(30):
        if topic == topics.DEAD_LETTER and msg["original"]["key"] in ids:
            topics.validate("dead_letter", msg)
            seen[msg["original"]["key"]] = msg
            if len(seen) == len(ids):
                break
    watcher.close()
    assert {k: m["code"] for k, m in seen.items()} == ids
    assert all(m["message"] and m["stage"] == "hasher" for m in seen.values())


def test_running_matcher_sees_bank_changes_within_5_seconds(cluster, media_dir, banked):
    store, _ = banked
    store.create_bank("late", "review", exist_ok=True)
    path = write_photo(media_dir, "bank-late-coffee", "coffee", ext=".png")
    copy = write_photo(media_dir, "coffee-copy", "coffee", quality=70)
    entry, _ = add_media_file(store, "late", path, cluster.settings)
    added = time.monotonic()
    while True:  # the same copy, resubmitted until the matcher has the new entry
        topic, msg = submit_and_wait(cluster.settings, [copy])[copy]
        if msg["decision"] == "review":
            break
        assert time.monotonic() - added < 5, "bank addition not visible to the running matcher within 5 s"
    assert msg["matches"][0]["entry_id"] == entry.entry_id
    store.remove_entries("late", [entry.entry_id])
    removed = time.monotonic()
    while submit_and_wait(cluster.settings, [copy])[copy][1]["decision"] != "allow":
        assert time.monotonic() - removed < 5, "bank removal not visible within 5 s"


def _vigil(cluster, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {"VIGIL_KAFKA": cluster.settings.kafka, "VIGIL_REDIS": cluster.settings.redis, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_bank_and_submit(cluster, media_dir, tmp_path):
    assert _vigil(cluster, "bank", "create", "cli-bank", "--action", "block", "--label", "terror").returncode == 0
    dup = _vigil(cluster, "bank", "create", "cli-bank", "--action", "block")
    assert dup.returncode == 2 and "already exists" in dup.stderr
    original = write_photo(media_dir, "bank-cli-rocket", "rocket", ext=".png")
    added = _vigil(cluster, "bank", "add", "cli-bank", str(original), "--json")
    assert added.returncode == 0, added.stderr
    entry_id = __import__("json").loads(added.stdout)["added"][0]["entry_id"]
    listing = __import__("json").loads(_vigil(cluster, "bank", "list", "--json").stdout)
    row = next(b for b in listing["banks"] if b["bank"] == "cli-bank")
    assert row["entries"] == 1 and row["per_signal"]["pdq"] == 1
    hashes = tmp_path / "list.txt"
    hashes.write_text(f"md5 {'1' * 32}\nsha256 {'2' * 64}\n")
    imported = _vigil(cluster, "bank", "import", "cli-bank", str(hashes))
    assert imported.returncode == 0 and "2 new" in imported.stdout
    copy = write_photo(media_dir, "cli-rocket-copy", "rocket", quality=65)
    sub = _vigil(cluster, "submit", str(copy), "--wait", "--json", "--timeout", "60")
    assert sub.returncode == 0, sub.stderr
    decision = __import__("json").loads(sub.stdout.splitlines()[0])
    assert decision["decision"] == "block" and decision["matches"][0]["label"] == "terror"
    removed = _vigil(cluster, "bank", "remove", "cli-bank", entry_id)
    assert removed.returncode == 0
    missing = _vigil(cluster, "bank", "remove", "cli-bank", entry_id)
    assert missing.returncode == 2 and "no entry" in missing.stderr
    unreachable = subprocess.run([sys.executable, "-m", "workers.cli", "bank", "list", "--redis",
                                  "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=30)
    assert unreachable.returncode == 3 and "cannot reach Redis" in unreachable.stderr


def test_cli_bank_lifecycle_and_export_round_trip(cluster, tmp_path):
    import json

    assert _vigil(cluster, "bank", "create", "lifecycle", "--action", "review").returncode == 0
    listing = tmp_path / "in.csv"
    listing.write_text(f"signal,hash,label\npdq,{'3' * 64},ncii\nmd5,{'4' * 32},ncii\n")
    assert _vigil(cluster, "bank", "import", "lifecycle", str(listing), "--json").returncode == 0
    out = tmp_path / "out.txt"
    assert _vigil(cluster, "bank", "export", "lifecycle", "--format", "local", "-o", str(out)).returncode == 0
    assert sorted(out.read_text().split("\n")) == sorted(["", f"pdq {'3' * 64}", f"md5 {'4' * 32}"])
    entry = next(e for e in BankStore.from_url(cluster.settings.redis).iter_entries("lifecycle")
                 if e.signals[0].signal == "md5")
    assert _vigil(cluster, "bank", "disable", "lifecycle", entry.entry_id).returncode == 0
    assert out.read_text()  # export skips disabled entries:
    assert _vigil(cluster, "bank", "export", "lifecycle", "-o", str(out)).returncode == 0
    assert out.read_text().strip() == f"pdq {'3' * 64}"
    upd = _vigil(cluster, "bank", "update", "lifecycle", "--action", "block", "--disable", "--threshold", "pdq=20",
                 "--json")
    assert upd.returncode == 0 and json.loads(upd.stdout)["thresholds"] == {"pdq": 20}
    stats = json.loads(_vigil(cluster, "bank", "stats", "--json", "--count-disabled").stdout)
    row = next(b for b in stats["banks"] if b["bank"] == "lifecycle")
    assert row == {**row, "action": "block", "enabled": False, "entries": 2, "disabled": 1}
    assert stats["last_change"]["op"] == "bank_put" and row["redis_bytes"] > 0
    assert _vigil(cluster, "bank", "update", "lifecycle").returncode == 2


def test_identical_reupload_is_decided_from_the_cache_until_the_bank_changes(cluster, media_dir, banked):
    store, _ = banked
    copy = write_photo(media_dir, "viral-rocket", "rocket", quality=55)
    first = submit_and_wait(cluster.settings, [copy])[copy][1]
    second = submit_and_wait(cluster.settings, [copy])[copy][1]
    assert first["decision"] == second["decision"] == "block"
    assert not any("cache" in n for n in first["notes"])
    assert any("cache" in n for n in second["notes"]) and "decode" not in second["latency_ms"]
    assert second["matches"] == first["matches"] and second["event_id"] != first["event_id"]
    topics.validate("decision", second)
    store.create_bank("cache-buster", "review", exist_ok=True)  # any bank change invalidates
    store.update_bank("cache-buster", label="changed")
    third = submit_and_wait(cluster.settings, [copy])[copy][1]
    assert not any("cache" in n for n in third["notes"]) and "decode" in third["latency_ms"]
