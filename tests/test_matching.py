"""Matching and policy: thresholds, quality gates, allowlists, dihedral opt-in, strongest action."""
from workers.stack import samples, transforms
from workers.bank.model import Bank, Entry
from workers.bank.store import Change
from workers.signals.hashing import hash_frame
from workers.index.matching import BankIndex, Match
from workers.policy import decide
from workers.settings import Settings
from workers.signals import SignalValue


def _index(banks: list[Bank], entries: list[Entry], **settings) -> BankIndex:
    idx = BankIndex(Settings(**settings))
    changes = [Change(f"{i}-0", i, "bank_put", b.name, b.to_json()) for i, b in enumerate(banks, 1)]
    changes += [Change(f"{100 + i}-0", 100 + i, "entries_put", e.bank, [e.to_json()]) for i, e in enumerate(entries)]
    idx.apply(changes)
    return idx


def _flip(hex_value: str, n: int) -> str:
    v = int(hex_value, 16) ^ ((1 << n) - 1)
    return f"{v:0{len(hex_value)}x}"


BASE = "0f" * 32


def test_pdq_threshold_and_quality_gate():
    idx = _index([Bank("b", "block")], [Entry("e1", "b", (SignalValue("pdq", BASE, 100),))])
    assert idx.search([SignalValue("pdq", _flip(BASE, 31), 90)])[0].distance == 31
    assert idx.search([SignalValue("pdq", _flip(BASE, 32), 90)]) == []
    assert idx.search([SignalValue("pdq", BASE, 49)]) == []  # low-quality query never matches


def test_per_bank_threshold_overrides_default():
    idx = _index([Bank("strict", "block", thresholds={"pdq": 10}), Bank("loose", "review")],
                 [Entry("e1", "strict", (SignalValue("pdq", BASE),)), Entry("e2", "loose", (SignalValue("pdq", BASE),))])
    hits = idx.search([SignalValue("pdq", _flip(BASE, 20), 100)])
    assert [(m.bank, m.threshold) for m in hits] == [("loose", 31)]


def test_digests_match_exactly():
    md5 = "ab" * 16
    idx = _index([Bank("b", "review")], [Entry("e1", "b", (SignalValue("md5", md5),))])
    assert idx.search([SignalValue("md5", md5)])[0].distance == 0
    assert idx.search([SignalValue("md5", "ab" * 15 + "ac")]) == []


def test_digest_index_at_volume_every_kind_exact_and_removable():
    """Thousands of MD5/SHA-1/SHA-256 entries (SHA-1 is padded to 192 bits inside): every banked
    digest is found as itself only, a digest one bit off is not, a removed one stops matching."""
    import hashlib

    entries = []
    for i in range(3000):
        blob = f"file-{i}".encode()
        sig = ("md5", "sha1", "sha256")[i % 3]
        entries.append(Entry(f"e{i}", "b", (SignalValue(sig, hashlib.new(sig, blob).hexdigest()),)))
    idx = _index([Bank("b", "block")], entries)
    queries = [e.signals[0] for e in entries[::7]]
    found = [[m.entry_id for m in idx.search([q])] for q in queries]
    assert found == [[e.entry_id] for e in entries[::7]]
    off = [SignalValue(q.signal, _flip(q.value, 1)) for q in queries]
    assert all(idx.search([q]) == [] for q in off)
    assert {s: idx.counts()[s] for s in ("md5", "sha1", "sha256")} == {"md5": 1000, "sha1": 1000, "sha256": 1000}
    idx.apply([Change("999-0", 999, "entries_delete", "b", ["e0", "e7"])])
    assert idx.search([entries[0].signals[0]]) == [] and idx.search([entries[7].signals[0]]) == []
    assert [m.entry_id for m in idx.search([entries[14].signals[0]])] == ["e14"]


def test_strongest_action_wins_and_allowlist_suppresses():
    block = Match("b", "e1", "pdq", 3, 31, "block", frame_ms=None)
    review = Match("r", "e2", "pdq", 1, 31, "review", frame_ms=None)
    assert decide([review, block])[0] == "block"
    assert decide([review])[0] == "review"
    assert decide([])[0] == "allow"
    allow = Match("benign", "logo", "pdq", 0, 31, "allow", frame_ms=None)
    decision, evidence = decide([block, allow])
    assert decision == "allow" and evidence == [allow]
    other_frame = Match("b", "e1", "pdq", 3, 31, "block", frame_ms=5000)
    assert decide([other_frame, Match("benign", "x", "pdq", 0, 31, "allow", frame_ms=0)])[0] == "block"


def test_flipped_copy_matches_only_a_dihedral_bank():
    photo = samples.photo("chelsea")
    banked = tuple(hash_frame(photo, Settings()))
    query = hash_frame(transforms.flip(photo), Settings(), dihedral=True)
    plain = _index([Bank("b", "block")], [Entry("e", "b", banked)])
    assert plain.search(query) == []
    dihedral = _index([Bank("b", "block", dihedral=True)], [Entry("e", "b", banked)])
    assert any(m.variant == "flip-h" for m in dihedral.search(query))


def test_padded_copy_matches_through_border_removal():
    photo = samples.photo("coffee")
    idx = _index([Bank("b", "block")], [Entry("e", "b", tuple(hash_frame(photo, Settings())))])
    hits = idx.search(hash_frame(transforms.pad(photo, 0.2), Settings(), dihedral=True))
    assert any(m.variant == "unbordered" and m.signal == "pdq" for m in hits)


def test_blank_frame_never_matches_a_blank_bank_entry():
    import numpy as np

    black = np.zeros((300, 400, 3), np.uint8)
    idx = _index([Bank("b", "block")], [Entry("e", "b", tuple(hash_frame(black, Settings())))])
    assert idx.search(hash_frame(black, Settings(), dihedral=True)) == []


def test_an_index_loaded_from_a_list_in_memory_matches_as_the_change_path_does():
    """`vigil scan --hash-list` loads through the bulk path; it must answer what the matcher would:
    labels kept, a repeated id's last version wins, disabled entries absent, digests exact."""
    photo = hash_frame(samples.photo("astronaut"), Settings())
    pdq = next(s.value for s in photo if s.signal == "pdq")
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    bank = Bank("list", "block")
    entries = [Entry("p", "list", (SignalValue("pdq", pdq),), label="old"),
               Entry("m", "list", (SignalValue("md5", md5),), label="csam"),
               Entry("gone", "list", (SignalValue("pdq", _flip(pdq, 200)),), disabled=True),
               Entry("p", "list", (SignalValue("pdq", pdq),), label="ncii")]
    listed = BankIndex(Settings())
    listed.load_entries([bank], iter(entries), batch=2)  # batches split the repeat across two
    changed = _index([bank], entries)
    query = [SignalValue("pdq", _flip(pdq, 20), 100), SignalValue("md5", md5)]
    got = sorted((m.entry_id, m.signal, m.distance, m.label) for m in listed.search(query))
    assert got == sorted((m.entry_id, m.signal, m.distance, m.label) for m in changed.search(query))
    assert got == [("m", "md5", 0, "csam"), ("p", "pdq", 20, "ncii")]
    assert listed.search([SignalValue("pdq", _flip(pdq, 200), 100)]) == []
    assert listed.counts()["pdq"] == 1
