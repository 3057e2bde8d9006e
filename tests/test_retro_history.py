"""The hash-history record and the rescan kernel, checked against a brute-force Hamming scan on
real photos' hashes planted among random ones (no broker needed)."""
from __future__ import annotations

import numpy as np

from workers.bank.model import Bank, Entry
from workers.retro.new_entries import NewEntries
from workers.settings import Settings
from workers.signals import SignalValue, hashing
from workers.stack import samples, transforms
from workers.stream import history


def _photo_signals(name: str, edit=None) -> list[SignalValue]:
    img = samples.photo(name)
    if edit is not None:
        img = edit(img)
    return hashing.hash_media(transforms.encode(img, ".jpg", 85), Settings(), query=False).signals


def _flip(code: bytes, bits: np.ndarray) -> bytes:
    a = np.frombuffer(code, np.uint8).copy()
    for b in bits:
        a[b // 8] ^= 1 << (b % 8)
    return a.tobytes()


def test_record_round_trip_and_size():
    sv = _photo_signals("astronaut")
    frames, md5, sha256 = history.frames_of(sv)
    raw = history.encode_record("0b4c5a3e-7d2a-4c1e-9f00-123456789abc", "image", "allow", 7, 1_700_000_000_123,
                                frames, md5, sha256)
    assert len(raw) == 126  # the size docs/retro.md quotes per image
    h = history.decode_header(raw)
    assert (h.event_id, h.media, h.decision, h.bank_version, h.decided_at_ms, h.frames) == \
        ("0b4c5a3e-7d2a-4c1e-9f00-123456789abc", "image", "allow", 7, 1_700_000_000_123, 1)
    video = [history.Frame(i * 1000, bytes(32), 90, bytes(8), 50) for i in range(60)]
    minute = history.encode_record("not-a-uuid", "video", "review", 1, 1, video)
    assert len(minute) == 64 + 60 * 46 + len("not-a-uuid")  # ~2.8 kB per video-minute at 1 frame/s
    assert history.decode_header(minute).event_id == "not-a-uuid"
    assert history.decode_header(minute).frame_ms(minute, 59) == 59_000


def test_bad_records_are_reported_not_read():
    good = history.encode_record("e", "image", "allow", 1, 1, [history.Frame(0, bytes(32), 90, None, None)])
    b = history.decode_batch([b"short", good, b"\x09" + good[1:], good[:70]])
    assert sorted(b.bad.tolist()) == [0, 2, 3]
    assert b.frame_record.tolist() == [1]


def test_kernel_finds_exactly_what_brute_force_finds():
    """5,000 records (random hashes, plus real photos' hashes and edited copies, and a video
    whose middle frame is a banked photo) against 300 new entries: the same pairs as a scan."""
    rng = np.random.default_rng(7)
    bank = Bank("new", "block")
    names = ["astronaut", "chelsea", "coffee", "rocket", "china.jpg"]
    entries = [Entry(f"e-{n}", "new", tuple(_photo_signals(n))) for n in names]
    for k in range(295):  # random imported hashes
        entries.append(Entry(f"r-{k}", "new", (SignalValue("pdq", rng.bytes(32).hex(), 100),)))
    values, planted = [], {}
    for i in range(5000):
        pdq = rng.bytes(32)
        if i % 1000 == 17:  # an edited copy of a real photo
            name = names[(i // 1000) % len(names)]
            sig = _photo_signals(name, lambda im: transforms.resize(im, 0.5))
            frames, md5, sha = history.frames_of(sig)
            planted[i] = f"e-{name}"
        elif i % 997 == 3:  # a random entry's hash with 25 bits flipped (within PDQ 31)
            e = entries[5 + i % 295]
            frames = [history.Frame(0, _flip(bytes.fromhex(e.signals[0].value), rng.choice(256, 25, replace=False)),
                                    100, rng.bytes(8), 50)]
            md5 = sha = None
            planted[i] = e.entry_id
        else:
            frames, md5, sha = [history.Frame(0, pdq, 90, rng.bytes(8), 50)], rng.bytes(16), rng.bytes(32)
        if i == 2500:  # a video: 3 random frames, a banked photo, 3 more
            mid = history.frames_of(_photo_signals("rocket"))[0][0]
            frames = [history.Frame(t * 1000, rng.bytes(32), 90, rng.bytes(8), 50) for t in range(3)] + \
                [history.Frame(3000, mid.pdq, mid.pdq_quality, mid.phash, mid.phash_quality)] + \
                [history.Frame(t * 1000, rng.bytes(32), 90, rng.bytes(8), 50) for t in range(4, 7)]
            planted[i] = "e-rocket"
        values.append(history.encode_record(f"ev-{i}", "video" if i == 2500 else "image", "allow", 1, i, frames,
                                            md5, sha))
    index = NewEntries(entries, {"new": bank}, Settings())
    batch = history.decode_batch(values)
    got = {(h.record, h.entry.entry_id) for h in index.match(batch)}
    # brute force: every frame against every entry signal, with the matcher's thresholds and gates
    s = Settings()
    popcount = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    want = set()
    for signal, at, size, q_at, limit, gate in (("pdq", 4, 32, 36, s.pdq_threshold, s.pdq_min_quality),
                                                ("phash", 37, 8, 45, s.phash_threshold, s.phash_min_quality)):
        rows, codes = [], []
        for i, raw in enumerate(values):
            for f in range(history.decode_header(raw).frames):
                o = history.FRAMES_AT + f * history.FRAME_BYTES
                if raw[o + q_at] != 255 and raw[o + q_at] >= gate:
                    rows.append(i)
                    codes.append(raw[o + at:o + at + size])
        ent = [(e.entry_id, bytes.fromhex(sv.value)) for e in entries for sv in e.signals
               if sv.signal == signal and (sv.quality is None or sv.quality >= gate)]
        q = np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), size)
        b = np.frombuffer(b"".join(c for _, c in ent), np.uint8).reshape(len(ent), size)
        d = popcount[q[:, None, :] ^ b[None, :, :]].sum(2)
        for r, k in zip(*np.nonzero(d <= limit)):
            want.add((rows[r], ent[k][0]))
    assert got == want
    assert {(i, e) for i, e in planted.items()} <= got
    video = [h for h in index.match(batch) if h.record == 2500]
    assert video and video[0].frame == 3 and history.decode_header(values[2500]).frame_ms(values[2500], 3) == 3000
