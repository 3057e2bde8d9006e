"""Provenance records read from real photos carrying real C2PA manifests and AI markers."""
from __future__ import annotations

import pytest

from tests import provenance_media as pm
from workers.policy.provenance import ProvenanceRules, apply, evaluate
from workers.settings import Settings
from workers.signals.hashing import hash_media
from workers.signals.provenance import read_provenance, read_provenance_file


@pytest.fixture(scope="module")
def ai_jpeg() -> bytes:
    return pm.sign(pm.photo_bytes("astronaut"), "image/jpeg", pm.manifest("trainedAlgorithmicMedia"))


def test_plain_photo_has_no_provenance():
    assert read_provenance(pm.photo_bytes("chelsea")) == {"state": "absent", "ai_generated": False}


def test_signed_ai_generated_jpeg_reports_generator_signer_and_source_type(ai_jpeg):
    rec = read_provenance(ai_jpeg)
    assert rec["state"] == "valid" and rec["problems"] == ["untrusted_signer"]
    assert rec["ai_generated"] is True and rec["digital_source_types"] == ["trainedAlgorithmicMedia"]
    claim = rec["c2pa"]
    assert claim["claim_generator"] == f"{pm.GENERATOR} 1.0"
    assert claim["signer"] == f"{pm.GENERATOR}, vigil tests"
    assert claim["actions"] == [{"action": "c2pa.created", "digital_source_type": "trainedAlgorithmicMedia",
                                 "software_agent": "Test Diffusion 1"}]


def test_signer_under_a_configured_trust_anchor_is_trusted(ai_jpeg, tmp_path):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(pm.test_ca().ca_pem)
    rec = read_provenance(ai_jpeg, str(anchors))
    assert rec["state"] == "trusted" and "problems" not in rec


def test_edited_after_signing_is_invalid_with_a_hash_mismatch(ai_jpeg):
    rec = read_provenance(pm.edited_after_signing(ai_jpeg))
    assert rec["state"] == "invalid" and "hash_mismatch" in rec["problems"]
    assert rec["ai_generated"] is True  # the claim is still read, and still only a claim


def test_malformed_manifest_is_reported_and_the_image_still_hashes(ai_jpeg):
    bad = pm.malformed_manifest(ai_jpeg)
    rec = read_provenance(bad)
    assert rec["state"] == "malformed" and rec["ai_generated"] is False and rec["problems"]
    result = hash_media(bad, Settings())
    assert result.provenance["state"] == "malformed" and {"pdq", "sha256"} <= {s.signal for s in result.signals}


def test_png_manifest_with_an_ingredient(ai_jpeg):
    png = pm.photo_bytes("coffee", ".png")
    edited = pm.manifest("compositeWithTrainedAlgorithmicMedia", action="c2pa.edited")
    edited["assertions"][0]["data"]["actions"].insert(
        0, {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent-1"]}})
    rec = read_provenance(pm.sign(png, "image/png", edited, parent=(ai_jpeg, "image/jpeg")))
    assert rec["state"] == "valid" and rec["ai_generated"] is True
    assert rec["digital_source_types"] == ["compositeWithTrainedAlgorithmicMedia"]
    assert rec["c2pa"]["ingredients"] == [{"title": "parent", "relationship": "parentOf", "has_manifest": True}]


def test_camera_capture_manifest_is_not_ai_generated():
    rec = read_provenance(pm.sign(pm.photo_bytes("rocket"), "image/jpeg", pm.manifest("digitalCapture")))
    assert rec["state"] == "valid" and rec["ai_generated"] is False
    assert rec["digital_source_types"] == ["digitalCapture"]


def test_unsigned_xmp_digital_source_type():
    rec = read_provenance(pm.photo_bytes("chelsea", ".jpg", xmp=pm.xmp_packet("trainedAlgorithmicMedia")))
    assert rec["state"] == "absent" and rec["ai_generated"] is True
    assert rec["markers"] == [{"signal": "xmp", "field": "Iptc4xmpExt:DigitalSourceType",
                               "value": "trainedAlgorithmicMedia"}]


def test_generator_png_text_and_exif_software_markers_without_the_prompt():
    rec = read_provenance(pm.sd_webui_png("coffee"))
    assert rec["ai_generated"] is True and rec["markers"][0]["generator"] == "stable-diffusion-webui"
    assert "cat" not in str(rec)  # the prompt is never copied out
    from PIL import Image

    exif = Image.Exif()
    exif[0x0131] = "Midjourney v6"
    rec = read_provenance(pm.photo_bytes("rocket", ".webp", exif=exif))
    assert rec["ai_generated"] is True and rec["markers"][0] == {
        "signal": "exif", "field": "Software", "value": "Midjourney v6", "generator": "Midjourney"}
    exif[0x0131] = "GIMP 2.10"  # an editor is not a generator
    assert read_provenance(pm.photo_bytes("rocket", ".webp", exif=exif))["ai_generated"] is False


def test_signed_video_manifest_is_read_from_the_file(tmp_path):
    from tests.media_variants import clip_path

    mp4 = clip_path("bikes.mp4")
    assert read_provenance_file(mp4) == {"state": "absent", "ai_generated": False}
    signed = tmp_path / "signed.mp4"
    signed.write_bytes(pm.sign(mp4.read_bytes(), "video/mp4", pm.manifest()))
    rec = read_provenance_file(signed)
    assert rec["state"] == "valid" and rec["ai_generated"] is True
    webm = tmp_path / "x.webm"
    webm.write_bytes(b"\x1aE\xdf\xa3" + bytes(200))
    assert read_provenance_file(webm)["state"] == "unsupported"


def test_bank_add_path_reads_no_provenance(ai_jpeg):
    assert hash_media(ai_jpeg, Settings(), query=False).provenance is None
    assert hash_media(ai_jpeg, Settings(provenance_read=False)).provenance is None


# -- the rules --------------------------------------------------------------------------------------
def test_default_rules_label_ai_generated_and_never_block(ai_jpeg):
    rec = read_provenance(ai_jpeg)
    decision, evidence = apply("allow", [], rec, ProvenanceRules())
    assert decision == "allow"
    assert evidence == [{"bank": "policy:provenance", "entry_id": "ai-generated", "signal": "c2pa", "distance": 0,
                         "action": "allow", "label": "synthetic", "provenance_state": "valid",
                         "assertion": "c2pa.actions: c2pa.created digitalSourceType=trainedAlgorithmicMedia"
                                      " by Test Diffusion 1", "signer": f"{pm.GENERATOR}, vigil tests"}]


def test_review_rule_and_a_block_bank_match_still_wins(ai_jpeg):
    rec = read_provenance(ai_jpeg)
    rules = ProvenanceRules(ai_generated="review")
    assert apply("allow", [], rec, rules)[0] == "review"
    bank = {"bank": "known-bad", "entry_id": "e1", "signal": "pdq", "distance": 3, "action": "block"}
    decision, evidence = apply("block", [bank], rec, rules)
    assert decision == "block" and evidence[0] == bank and evidence[1]["entry_id"] == "ai-generated"


def test_invalid_manifest_and_source_type_rules(ai_jpeg):
    rec = read_provenance(pm.edited_after_signing(ai_jpeg))
    rules = ProvenanceRules(ai_generated="off", invalid="review",
                            source_types={"trainedAlgorithmicMedia": "block"})
    found = {e["entry_id"]: e for e in evaluate(rec, rules)}
    assert set(found) == {"source-type:trainedAlgorithmicMedia", "invalid-manifest"}
    assert "hash_mismatch" in found["invalid-manifest"]["assertion"]
    assert apply("allow", [], rec, rules)[0] == "block"  # only because a rule was set to block
    xmp = read_provenance(pm.photo_bytes("chelsea", ".jpg", xmp=pm.xmp_packet("trainedAlgorithmicMedia")))
    assert evaluate(xmp, ProvenanceRules())[0]["signal"] == "xmp"
    assert evaluate({"state": "absent", "ai_generated": False}, ProvenanceRules(ai_generated="review")) == []
    with pytest.raises(ValueError, match="not one of"):
        ProvenanceRules(ai_generated="delete")


def test_cli_reads_a_file_and_stores_the_policy_like_a_bank(ai_jpeg, tmp_path, capsys, store, redis_url):
    import json

    from workers.bank.store import BankStore
    from workers.cli import main

    path = tmp_path / "ai.jpg"
    path.write_bytes(ai_jpeg)
    assert main(["provenance", "read", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[str(path)]["ai_generated"] is True
    assert main(["provenance", "read", str(tmp_path / "missing.jpg")]) == 2
    before = store.version()
    assert main(["policy", "provenance", "--redis", redis_url, "--ai-generated", "review",
                 "--source-type", "compositeSynthetic=review", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["effective"]["ai_generated"] == "review" and out["version"] == before + 1
    assert store.get_policy("provenance") == {"ai_generated": "review", "source_types": {"compositeSynthetic": "review"}}
    assert store.audit(1)[0]["op"] == "policy_put"  # audited like a bank change
    with pytest.raises(SystemExit) as refused:  # argparse refuses an unknown action
        main(["policy", "provenance", "--redis", redis_url, "--invalid", "nuke"])
    assert refused.value.code == 2
    assert main(["policy", "provenance", "--redis", redis_url, "--source-type", "x=nuke"]) == 2
    assert store.get_policy("provenance")["ai_generated"] == "review"  # nothing written by a refused change
    assert main(["policy", "provenance", "--redis", redis_url, "--clear"]) == 0
    assert BankStore.from_url(redis_url).get_policy("provenance") is None


def test_stored_policy_overrides_settings_field_by_field():
    rules = ProvenanceRules.from_settings(Settings(provenance_invalid="review"), {"ai_generated": "review"})
    assert (rules.ai_generated, rules.invalid, rules.label) == ("review", "review", "synthetic")
    with pytest.raises(ValueError, match="unknown fields"):
        ProvenanceRules.from_settings(Settings(), {"ai": "review"})


def test_hostile_manifest_bytes_cost_little_and_never_raise(ai_jpeg):
    import os
    import struct
    import time

    plain = pm.photo_bytes("astronaut")
    seg = b"\xff\xeb" + struct.pack(">H", 8002) + b"JP\x00\x00\x00\x00\x00\x01jumbc2pa" + os.urandom(7984)
    junk = plain[:2] + seg * 20 + plain[2:]  # APP11 segments that look like JUMBF and are not
    t0 = time.process_time()
    assert read_provenance(junk)["state"] in ("absent", "malformed")
    assert time.process_time() - t0 < 2.0
    start = ai_jpeg.find(b"\xff\xeb")
    end = start
    while ai_jpeg[end:end + 2] == b"\xff\xeb":
        end += 2 + struct.unpack(">H", ai_jpeg[end + 2:end + 4])[0]
    twice = ai_jpeg[:end] + ai_jpeg[start:end] * 3 + ai_jpeg[end:]  # the manifest store repeated
    rec = read_provenance(twice)
    assert rec["state"] in ("invalid", "malformed") and rec["problems"]


def test_a_stored_policy_change_moves_the_bank_version_and_leaves_the_index_alone(store):
    from workers.index.matching import BankIndex

    store.create_bank("b1", "block")
    index = BankIndex(Settings())
    index.load(store)
    before = dict(index.banks)
    version = store.set_policy("provenance", {"ai_generated": "review"})
    index.catch_up(store)
    assert index.version == version == store.version() and index.banks.keys() == before.keys()
    assert store.set_policy("provenance", None) == version + 1 and store.get_policy("provenance") is None
