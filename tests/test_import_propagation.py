"""Issue 22 end to end: a 200k-line PDQ list imported into a running cluster with `vigil bank import`
(which waits for every live matcher by default), and copies submitted the moment it returns are all
blocked, with the imported bank's entries as evidence. Real processes: the CLI, the hasher and
matcher workers, the embedded broker and redis-server. ~30-50 s on 2 shared cores."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid

import pytest

import topics
from tests.pipeline_helpers import submit_and_wait
from workers.bank.formats import entry_id_for
from workers.bank.store import BankStore
from workers.signals.hashing import hash_media
from workers.stack import samples, transforms

pytestmark = pytest.mark.integration
LINES = 200_000
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "china.jpg", "flower.jpg", "retina",
          "stereo_motorcycle", "hubble_deep_field")


def test_copies_submitted_right_after_import_returns_are_all_blocked(cluster, media_dir, tmp_path):
    settings = cluster.settings
    name = f"imported-{uuid.uuid4().hex[:8]}"
    store = BankStore.from_url(settings.redis, actor="pytest")
    store.create_bank(name, "block", label="csam")
    copies, pdqs = [], []
    for photo in PHOTOS:
        img = samples.photo(photo)
        pdqs.append(next(s.value for s in hash_media(transforms.encode(img, ".png", 90), settings, query=False).signals
                         if s.signal == "pdq"))
        copy = media_dir / f"import-copy-{photo}-{name}.jpg"
        copy.write_bytes(transforms.encode(img, ".jpg", 50))
        copies.append(copy)
    rng = random.Random(22)
    lines = [f"pdq {rng.getrandbits(256):064x}\n" for _ in range(LINES - len(pdqs))]
    for i, value in enumerate(pdqs):  # spread over the import's batches, the last one included
        lines.insert((i + 1) * (len(lines) // len(pdqs)), f"pdq {value}\n")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(lines))
    try:
        env = {"VIGIL_REDIS": settings.redis, "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-m", "workers.cli", "bank", "import", name, str(listing), "--json",
                               "--wait-timeout", "60"], capture_output=True, text=True, timeout=240, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout)
        assert report["added"] == LINES and report["propagation"]["ok"], report
        matchers = [w.name for w in cluster.workers if w.kind == "matcher"]
        assert sorted(report["propagation"]["matchers"]) == sorted(matchers)
        assert all(v >= report["version"] for v in report["propagation"]["matchers"].values())
        outcomes = submit_and_wait(settings, copies, timeout=60)  # at once: no sleep
        wanted = {entry_id_for("pdq", v) for v in pdqs}
        for path, (topic, msg) in outcomes.items():
            assert topic == topics.DECISIONS and msg["decision"] == "block", (path.name, msg)
            assert msg["bank_version"] >= report["version"]
            assert any(m["bank"] == name and m["entry_id"] in wanted for m in msg["matches"]), msg["matches"]
    finally:
        store.update_bank(name, enabled=False)  # the cluster is shared with other modules
