"""Provenance end to end on the real embedded broker and redis-server: real photos carrying real
C2PA manifests and AI markers are uploaded, and every decision says what the file claims."""
from __future__ import annotations

import pytest

import topics
from tests import provenance_media as pm
from tests.pipeline_helpers import submit_and_wait
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.settings import Settings
from workers.stack.cluster import Cluster

pytestmark = pytest.mark.integration


def _write(media_dir, files: dict[str, bytes]) -> dict[str, object]:
    paths = {}
    for name, data in files.items():
        path = media_dir / name
        path.write_bytes(data)
        paths[name] = path
    return paths


def _provenance_evidence(msg: dict) -> list[dict]:
    return [m for m in msg["matches"] if m["bank"] == "policy:provenance"]


def test_default_rules_label_ai_media_and_a_bank_block_still_wins(cluster, media_dir):
    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    store.create_bank("prov-known-bad", "block", label="csam", exist_ok=True)
    rocket = media_dir / "prov-bank-rocket.png"
    rocket.write_bytes(pm.photo_bytes("rocket", ".png"))
    add_media_file(store, "prov-known-bad", rocket, cluster.settings)
    signed = pm.sign(pm.photo_bytes("astronaut"), "image/jpeg", pm.manifest())
    paths = _write(media_dir, {
        "prov-ai.jpg": signed,
        "prov-edited.jpg": pm.edited_after_signing(signed),
        "prov-malformed.jpg": pm.malformed_manifest(signed),
        "prov-xmp.jpg": pm.photo_bytes("chelsea", ".jpg", xmp=pm.xmp_packet("trainedAlgorithmicMedia")),
        "prov-sd.png": pm.sd_webui_png("coffee"),
        "prov-plain.jpg": pm.photo_bytes("hubble_deep_field"),
        "prov-ai-rocket.jpg": pm.sign(pm.photo_bytes("rocket"), "image/jpeg", pm.manifest()),
    })
    try:
        out = {p.name: msg for p, (topic, msg) in submit_and_wait(cluster.settings, list(paths.values())).items()
               if topic == topics.DECISIONS}
    finally:
        store.update_bank("prov-known-bad", enabled=False)
    assert set(out) == set(paths), "every upload is decided: provenance never dead-letters one"
    for name, msg in out.items():
        topics.validate("decision", msg)
    ai = out["prov-ai.jpg"]
    assert ai["decision"] == "allow" and ai["provenance"]["state"] == "valid" and ai["provenance"]["ai_generated"]
    [label] = _provenance_evidence(ai)
    assert label["label"] == "synthetic" and label["signal"] == "c2pa" and label["signer"].startswith(pm.GENERATOR)
    assert "trainedAlgorithmicMedia" in label["assertion"]
    edited = out["prov-edited.jpg"]
    assert edited["decision"] == "allow" and edited["provenance"]["state"] == "invalid"
    assert "hash_mismatch" in edited["provenance"]["problems"]
    malformed = out["prov-malformed.jpg"]
    assert malformed["decision"] == "allow" and malformed["provenance"]["state"] == "malformed"
    assert _provenance_evidence(malformed) == []
    xmp = out["prov-xmp.jpg"]
    assert xmp["provenance"]["state"] == "absent" and xmp["provenance"]["ai_generated"]
    assert _provenance_evidence(xmp)[0]["signal"] == "xmp"
    assert _provenance_evidence(out["prov-sd.png"])[0]["signal"] == "png-text"
    plain = out["prov-plain.jpg"]
    assert plain["provenance"] == {"state": "absent", "ai_generated": False} and plain["matches"] == []
    blocked = out["prov-ai-rocket.jpg"]
    assert blocked["decision"] == "block" and blocked["matches"][0]["bank"] == "prov-known-bad"
    assert _provenance_evidence(blocked)[0]["entry_id"] == "ai-generated"


@pytest.fixture(scope="module")
def review_cluster(tmp_path_factory):
    """A pipeline whose provenance policy reviews AI-generated media and invalid manifests."""
    media = tmp_path_factory.mktemp("prov-media")
    settings = Settings(media_roots=(str(media),), data_dir=str(tmp_path_factory.mktemp("prov-cluster")),
                        partitions=1, provenance_ai_generated="review", provenance_invalid="review",
                        provenance_source_types={"digitalCapture": "allow"})
    with Cluster(settings) as c:
        c.wait_ready(timeout=120)
        yield c, media


def test_review_policy_routes_ai_and_tampered_media_to_review(review_cluster):
    cluster, media = review_cluster
    signed = pm.sign(pm.photo_bytes("astronaut"), "image/jpeg", pm.manifest())
    paths = _write(media, {
        "ai.jpg": signed,
        "edited.jpg": pm.edited_after_signing(signed),
        "camera.jpg": pm.sign(pm.photo_bytes("chelsea"), "image/jpeg", pm.manifest("digitalCapture")),
        "xmp.jpg": pm.photo_bytes("coffee", ".jpg", xmp=pm.xmp_packet("compositeWithTrainedAlgorithmicMedia")),
        "plain.jpg": pm.photo_bytes("rocket"),
    })
    out = {p.name: msg for p, (topic, msg) in submit_and_wait(cluster.settings, list(paths.values())).items()}
    assert {n: m["decision"] for n, m in out.items()} == {
        "ai.jpg": "review", "edited.jpg": "review", "camera.jpg": "allow", "xmp.jpg": "review", "plain.jpg": "allow"}
    assert {e["entry_id"] for e in _provenance_evidence(out["edited.jpg"])} == {"ai-generated", "invalid-manifest"}
    assert [e["entry_id"] for e in _provenance_evidence(out["camera.jpg"])] == ["source-type:digitalCapture"]
    assert out["plain.jpg"]["matches"] == []


def test_policy_stored_like_a_bank_applies_at_once_and_invalidates_cached_decisions(cluster, media_dir):
    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    path = media_dir / "prov-policy-ai.jpg"
    path.write_bytes(pm.sign(pm.photo_bytes("coffee"), "image/jpeg", pm.manifest()))
    [(_, first)] = submit_and_wait(cluster.settings, [path]).values()
    assert first["decision"] == "allow" and _provenance_evidence(first)[0]["label"] == "synthetic"
    [(_, again)] = submit_and_wait(cluster.settings, [path]).values()
    assert any("decided from the cache" in n for n in again["notes"]) and again["provenance"] == first["provenance"]
    store.set_policy("provenance", {"ai_generated": "review", "label": "ai"})
    try:
        [(_, reviewed)] = submit_and_wait(cluster.settings, [path]).values()
    finally:
        store.set_policy("provenance", None)  # the cluster is shared: leave the default rules behind
    assert reviewed["decision"] == "review" and not any("cache" in n for n in reviewed["notes"])
    assert _provenance_evidence(reviewed)[0]["label"] == "ai"
    [(_, cleared)] = submit_and_wait(cluster.settings, [path]).values()
    assert cleared["decision"] == "allow"


def test_signed_video_decision_carries_the_containers_manifest(cluster, media_dir):
    from tests.media_variants import clip_path

    path = media_dir / "prov-signed.mp4"
    path.write_bytes(pm.sign(clip_path("bikes.mp4").read_bytes(), "video/mp4", pm.manifest()))
    [(topic, msg)] = submit_and_wait(cluster.settings, [path], timeout=120).values()
    assert topic == topics.DECISIONS and msg["media_type"] == "video", msg
    topics.validate("decision", msg)
    assert msg["provenance"]["state"] == "valid" and msg["provenance"]["ai_generated"] is True
    assert msg["decision"] == "allow" and _provenance_evidence(msg)[0]["signal"] == "c2pa"
    assert "provenance" in msg["latency_ms"]
