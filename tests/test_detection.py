"""Evasion edits at the defaults: flips (dihedral on for block/review banks), small rotations and
crops (bank-side variants stored by `vigil bank add`), and evidence that names what matched."""
from __future__ import annotations

import pytest

import topics
from tests.pipeline_helpers import submit_and_wait, write_photo
from workers.bank.codes import pack_codes, unpack_block
from workers.bank.importer import add_media_file
from workers.bank.model import Bank, Entry
from workers.bank.store import BankStore, Change
from workers.index.matching import BankIndex
from workers.policy import decide
from workers.settings import Settings
from workers.signals.bank_variants import BANK_VARIANTS, rotated, variant_code, variant_name
from workers.signals.hashing import hash_frame, hash_frames_at
from workers.stack import samples, transforms


def _index(bank: Bank, entries: list[Entry], settings: Settings | None = None) -> BankIndex:
    idx = BankIndex(settings or Settings())
    idx.apply([Change("1-0", 1, "bank_put", bank.name, bank.to_json())]
              + [Change(f"{2 + i}-0", 2 + i, "entries_put", bank.name, [e.to_json()]) for i, e in enumerate(entries)])
    return idx


def _banked(name: str, bank: str = "b") -> Entry:
    values = hash_frames_at([samples.photo(name)], Settings(), [None], bank_variants=True)
    return Entry(f"e-{name}", bank, tuple(values), media_type="image")


def test_variant_codes_are_stable_and_round_trip_through_the_packed_record():
    assert [variant_name(variant_code(n)) for n in BANK_VARIANTS] == list(BANK_VARIANTS)
    assert variant_code(None) == variant_code("unbordered") == variant_code("flip-h") == 0
    assert variant_code("rotate+2") == 1  # persisted: new variants are appended, never reordered
    entry = _banked("astronaut")
    block = unpack_block("pdq", {entry.entry_id.encode(): pack_codes(entry, "pdq")})
    names = [variant_name(c) for c in block.variants.tolist()]
    assert names == [sv.variant for sv in entry.signals if sv.signal == "pdq"]
    assert not block.video.any()


def test_rotated_copy_matches_the_stored_rotation_and_says_so():
    idx = _index(Bank("b", "block", dihedral=True), [_banked("astronaut"), _banked("coffee")])
    copy = transforms.encode(rotated(samples.photo("astronaut"), -4), ".jpg", 85)
    import cv2
    import numpy as np

    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(copy, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    decision, evidence = decide(idx.search(hash_frame(img, Settings(), dihedral=True)))
    assert decision == "block" and {m.entry_id for m in evidence} == {"e-astronaut"}
    pdq = [m for m in evidence if m.signal == "pdq"]
    assert pdq and pdq[0].entry_variant == "rotate-4" and pdq[0].distance <= pdq[0].threshold
    # the same copy against the photo banked as it is only: PDQ no longer within the threshold
    plain = Entry("e-astronaut", "b", tuple(hash_frames_at([samples.photo("astronaut")], Settings(), [None])))
    assert not [m for m in _index(Bank("b", "block", dihedral=True), [plain]).search(
        hash_frame(img, Settings(), dihedral=True)) if m.signal == "pdq"]


def test_evidence_keeps_one_closest_match_per_entry_signal_and_frame():
    idx = _index(Bank("b", "block", dihedral=True), [_banked("chelsea")])
    matches = idx.search(hash_frame(samples.photo("chelsea"), Settings(), dihedral=True))
    keys = [(m.entry_id, m.signal, m.frame_ms) for m in matches]
    assert len(keys) == len(set(keys)) == 2
    assert all(m.distance == 0 and m.variant is None and m.entry_variant is None for m in matches)


def test_flipped_copy_matches_the_default_bank_and_not_an_allowlist(store: BankStore):
    assert store.create_bank("block-b", "block").dihedral is True
    assert store.create_bank("review-b", "review").dihedral is True
    assert store.create_bank("allow-b", "allow").dihedral is False
    assert store.create_bank("opted-out", "block", dihedral=False).dihedral is False


def test_packed_codes_and_snapshots_carry_the_entry_variant(store: BankStore, tmp_path):
    store.create_bank("b", "block")
    path = tmp_path / "rocket.png"
    path.write_bytes(transforms.encode(samples.photo("rocket"), ".png"))
    entry, _ = add_media_file(store, "b", path, Settings())
    assert {sv.variant for sv in entry.signals} >= set(BANK_VARIANTS)
    query = hash_frame(rotated(samples.photo("rocket"), 3), Settings(), dihedral=True)
    for snapshots in (False, True):
        if snapshots:
            store.write_snapshot("b")
        idx = BankIndex(Settings())
        idx.load(store, snapshots=snapshots)
        pdq = [m for m in idx.search(query) if m.signal == "pdq"]
        assert pdq and pdq[0].entry_variant == "rotate+3" and pdq[0].entry_frame_ms is None, snapshots
    plain, _ = add_media_file(store, "b", path, Settings(), variants=False)
    assert not any(sv.variant for sv in plain.signals)


# -- end to end: a bank made with the defaults, uploads through moderation.uploads -------------------
BANKED = ("chelsea", "coffee", "rocket")


@pytest.mark.integration
def test_flipped_rotated_and_cropped_copies_are_blocked_at_the_defaults(cluster, media_dir):
    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    store.create_bank("evasion", "block", label="csam", exist_ok=True)  # defaults: nothing opted in
    entries = {}
    for name in BANKED:
        path = write_photo(media_dir, f"evasion-bank-{name}", name, ext=".png")
        entries[name], _ = add_media_file(store, "evasion", path, cluster.settings)
    edits = {"flip": transforms.flip, "rotate+4": lambda im: rotated(im, 4),
             "rotate-2.5": lambda im: rotated(im, -2.5), "crop10": lambda im: transforms.crop(im, 0.10)}
    paths = {write_photo(media_dir, f"evasion-{name}-{edit}", name, edit=fn, quality=85): (name, edit)
             for name in BANKED for edit, fn in edits.items()}
    unrelated = [write_photo(media_dir, f"evasion-unrelated-{n}", n, edit=fn) for n in ("astronaut", "china.jpg", "retina")
                 for fn in (None, transforms.flip)]
    try:
        outcomes = submit_and_wait(cluster.settings, list(paths) + unrelated)
    finally:
        store.update_bank("evasion", enabled=False)  # other modules share the cluster
    for path, (name, edit) in paths.items():
        topic, msg = outcomes[path]
        assert topic == topics.DECISIONS, (path, msg)
        topics.validate("decision", msg)
        assert msg["decision"] == "block", (path.name, msg)
        ours = [m for m in msg["matches"] if m["entry_id"] == entries[name].entry_id]
        assert ours and all(m["distance"] <= m["threshold"] for m in ours)
        if edit == "flip":
            assert any("flip-h" in (m.get("variant") or "") for m in ours), msg["matches"]
        if edit == "rotate+4":
            assert any(m.get("entry_variant", "").startswith("rotate+") for m in ours), msg["matches"]
    for path in unrelated:
        topic, msg = outcomes[path]
        assert topic == topics.DECISIONS and msg["decision"] == "allow" and msg["matches"] == [], (path.name, msg)


# -- overlays: the joint rule and the centre variant ------------------------------------------------
PDQ0, PHASH0 = "0f" * 32, "0f" * 8


def _far(hex_value: str, n: int) -> str:
    """hex_value with its first n bits flipped."""
    bits = len(hex_value) * 4
    return f"{int(hex_value, 16) ^ (((1 << n) - 1) << (bits - n)):0{len(hex_value)}x}"


def _pair(pdq_bits: int, phash_bits: int) -> list:
    from workers.signals import SignalValue

    return [SignalValue("pdq", _far(PDQ0, pdq_bits), 100), SignalValue("phash", _far(PHASH0, phash_bits), 100)]


def test_joint_rule_needs_both_signals_near_and_says_so():
    entry = Entry("e", "b", tuple(_pair(0, 0)))
    s = Settings()  # on by default: found through pHash, PDQ compared directly (workers/index/joint.py)
    assert s.joint_pdq_threshold == 56
    idx = _index(Bank("b", "block"), [entry], s)
    both = idx.search(_pair(s.joint_pdq_threshold, s.joint_phash_threshold))
    assert {(m.signal, m.rule, m.threshold) for m in both} == {("pdq", "joint", s.joint_pdq_threshold),
                                                               ("phash", "joint", s.joint_phash_threshold)}
    assert decide(both)[0] == "block"
    assert idx.search(_pair(s.joint_pdq_threshold, s.joint_phash_threshold + 2)) == []  # pHash too far
    assert idx.search(_pair(s.joint_pdq_threshold + 1, s.joint_phash_threshold)) == []  # PDQ too far
    alone = idx.search(_pair(10, 40))  # PDQ alone within its own threshold: a plain match, no rule
    assert [(m.signal, m.rule) for m in alone] == [("pdq", None)]
    strict = _index(Bank("b", "block", thresholds={"pdq": 20}), [entry], s)  # a bank's own thresholds rule
    assert strict.search(_pair(s.joint_pdq_threshold, s.joint_phash_threshold)) == []
    off = BankIndex(Settings(joint_pdq_threshold=0))  # turned off
    off.apply([Change("1-0", 1, "bank_put", "b", Bank("b", "block").to_json()),
               Change("2-0", 2, "entries_put", "b", [entry.to_json()])])
    assert off.search(_pair(s.joint_pdq_threshold, s.joint_phash_threshold)) == []


def test_joint_rule_pairs_one_query_variant_with_one_stored_version():
    """PDQ near on one variant and pHash near on another is no evidence that either is a copy: the
    rule compares the PDQ of the very variant whose pHash was near (workers/index/joint.py)."""
    from dataclasses import replace

    s = Settings()
    entry = Entry("e", "b", tuple(_pair(0, 0)))
    idx = _index(Bank("b", "block", dihedral=True), [entry])
    pdq_near, phash_near = _pair(s.joint_pdq_threshold, 40), _pair(200, s.joint_phash_threshold)
    split = [replace(pdq_near[0], variant="flip-h"), replace(phash_near[1], variant="rot90")]
    assert idx.search(split) == []
    same = [replace(pdq_near[0], variant="flip-h"), replace(phash_near[1], variant="flip-h")]
    assert {(m.signal, m.variant, m.distance, m.rule) for m in idx.search(same)} == {
        ("pdq", "flip-h", s.joint_pdq_threshold, "joint"), ("phash", "flip-h", s.joint_phash_threshold, "joint")}


def test_captioned_copy_matches_through_the_centre_and_never_an_allowlist():
    from workers.stack.transforms import caption_bar

    photo = samples.photo("coffee")
    query = hash_frames_at([caption_bar(photo)], Settings(), [None], dihedral=True, centre=True)
    block = _index(Bank("b", "block"), [_banked("coffee")])
    decision, evidence = decide(block.search(query))
    assert decision == "block"
    assert any(m.variant == "centre-15%" and m.entry_variant == "crop-15%" for m in evidence), evidence
    allow = _index(Bank("b", "allow"), [_banked("coffee")])
    assert all(not (m.variant or "").startswith("centre") for m in allow.search(query))


def test_a_flat_photos_stored_versions_are_as_unusable_as_the_photo():
    """Rotating a flat frame adds black corners, i.e. edges: without inheriting the photo's quality,
    every flat photo's rotations would hash alike and match each other."""
    flat = (samples.photo("astronaut") // 64).astype("uint8")
    values = hash_frames_at([flat], Settings(), [None], bank_variants=True)
    own = {sv.signal: sv.quality for sv in values if sv.variant is None}
    assert own["pdq"] < Settings().pdq_min_quality
    for sv in values:
        if sv.variant in BANK_VARIANTS:
            assert sv.quality <= own[sv.signal], sv


def test_cli_bank_create_defaults_dihedral_by_action_and_opts_out(store: BankStore):
    import json
    import os
    import subprocess
    import sys

    url = store.r.connection_pool.connection_kwargs
    redis = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}

    def create(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "workers.cli", "bank", "create", *args, "--redis", redis, "--json"],
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert create("cli-block", "--action", "block")["dihedral"] is True
    assert create("cli-allow", "--action", "allow")["dihedral"] is False
    assert create("cli-out", "--action", "review", "--no-dihedral")["dihedral"] is False


def test_watermarked_copy_the_old_defaults_missed_now_matches_and_a_distractor_does_not():
    """A real photo under the benchmark's watermark (text lines and an opaque logo box): the first
    defaults (joint rule off, no overlay variant) let it through; painting the detected box out
    (workers/signals/overlay.py) and the joint rule catch it. Another watermarked photo stays allowed."""
    from workers.signals.overlay import OVERLAY_VARIANT, overlay_box

    copy = transforms.watermark(samples.photo("chelsea"))
    assert overlay_box(copy) is not None and overlay_box(samples.photo("chelsea")) is None
    bank = [_banked("chelsea")]
    old = hash_frames_at([copy], Settings(), [None], dihedral=True, centre=True)
    assert decide(_index(Bank("b", "block", dihedral=True), bank, Settings(joint_pdq_threshold=0)).search(old))[0] == "allow"
    new = hash_frames_at([copy], Settings(), [None], dihedral=True, centre=True, overlay=True)
    decision, evidence = decide(_index(Bank("b", "block", dihedral=True), bank).search(new))
    assert decision == "block" and {m.entry_id for m in evidence} == {"e-chelsea"}
    assert all(m.variant.startswith(OVERLAY_VARIANT) and m.distance <= m.threshold for m in evidence), evidence
    other = hash_frames_at([transforms.watermark(samples.photo("coffee"))], Settings(), [None], dihedral=True,
                           centre=True, overlay=True)
    assert decide(_index(Bank("b", "block", dihedral=True), bank).search(other)) == ("allow", [])
