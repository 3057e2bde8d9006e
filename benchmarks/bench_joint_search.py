"""What the joint PDQ + pHash rule costs a search on a large bank, off and on, side by side.

The rule (workers/index/joint.py) finds its candidates by searching pHash out to its joint limit
(12 of 64 bits) and computes each candidate's PDQ distance directly; the rule it replaced searched
PDQ out to 56 of 256 bits, which multi-index hashing cannot prune, so every search was a scan.
All three are measured here on one index: the bank is the 21 real photos banked by `vigil bank
add` (with their stored versions) plus ENTRIES imported entries of one PDQ and one pHash each
(random codes: an imported hash list has no pixels, and random codes are what bench_api uses),
and the queries are the photos' edited copies with every query variant the hasher sends.

CPU time (process_time), one thread, each configuration timed in turn over three rounds, the best
kept. Run: python -m benchmarks --only joint_search   (--quick: 100k entries)
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks import accuracy_media as am
from benchmarks import media
from workers import signals as sig
from workers.bank.model import Bank, Entry
from workers.bank.store import Change
from workers.index.matching import BankIndex
from workers.index.mih import to_words
from workers.settings import Settings
from workers.signals.hashing import hash_frames_at

ENTRIES = 300_000
EDITS = ("watermark", "crop 10%", "rotate 4°", "jpeg q=50", "flip", "caption bar")


def _bank(n: int, settings: Settings) -> BankIndex:
    idx = BankIndex(settings)
    idx.apply([Change("1-0", 1, "bank_put", "b", Bank("b", "block").to_json())])
    for i, img in enumerate(media.photos().values()):
        values = hash_frames_at([img], settings, [None], bank_variants=True)
        idx._e.put(Entry(f"photo-{i}", "b", tuple(values)))
    rng = np.random.default_rng(21)
    pdq, phash = rng.integers(0, 256, (n, 32), np.uint8), rng.integers(0, 256, (n, 8), np.uint8)
    for i in range(n):
        idx._e.put(Entry(f"h-{i:012d}", "b", (sig.SignalValue("pdq", pdq[i].tobytes().hex(), 100),
                                                sig.SignalValue("phash", phash[i].tobytes().hex(), 100))))
    idx._e.tidy()
    return idx


def _words(values: list[sig.SignalValue], signal: str, idx: BankIndex) -> np.ndarray:
    """The query's usable values of one signal as the index searches them (BankIndex.search)."""
    rows = b"".join(bytes.fromhex(v.value) for v in values if v.signal == signal and idx.usable(v))
    return to_words(np.frombuffer(rows, np.uint8), sig.PERCEPTUAL_BITS[signal] // 64)


def _time(fn, queries, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for q in queries:
            fn(q)
        best = min(best, (time.process_time() - t0) * 1e3 / len(queries))
    return best


def run(quick: bool = False) -> str:
    sig.limit_native_threads()
    n = 100_000 if quick else ENTRIES
    on, off = Settings(joint_pdq_threshold=56, joint_phash_threshold=12), Settings(joint_pdq_threshold=0)
    t0 = time.perf_counter()
    idx = _bank(n, on)
    build_s = time.perf_counter() - t0
    queries = [hash_frames_at([am.EDITS[e](img)], on, [None], dihedral=True, centre=True)
               for img in media.photos().values() for e in EDITS]
    e = idx._e
    pdq_words = [_words(q, "pdq", idx) for q in queries]
    phash_words = [_words(q, "phash", idx) for q in queries]
    rows = []
    for name, settings in (("joint rule off", off), ("joint rule on (pHash-led, this change)", on)):
        idx.settings = settings
        found = sum(len({m.entry_id for m in idx.search(q)}) > 0 for q in queries)
        rows.append((name, _time(idx.search, queries), found))
    idx.settings = on
    raw = [("PDQ search at 31 (every search does it)", _time(lambda q: e.hamming["pdq"].search_arrays(q, 31), pdq_words)),
           ("PDQ search at 56 (what the old joint rule added)", _time(lambda q: e.hamming["pdq"].search_arrays(q, 56), pdq_words)),
           ("pHash search at 6", _time(lambda q: e.hamming["phash"].search_arrays(q, 6), phash_words)),
           ("pHash search at 12 (what the joint rule adds)", _time(lambda q: e.hamming["phash"].search_arrays(q, 12), phash_words))]
    candidates = np.mean([len(e.hamming["phash"].search_arrays(q, 12)[0]) for q in phash_words])
    variants = np.mean([len(w) for w in pdq_words])
    lines = ["## Joint rule: search cost on a large bank (bench_joint_search)", "",
             f"One index of {n:,} imported entries (random PDQ + pHash) and the 21 real photos banked with their "
             f"stored versions (built in {build_s:.0f} s); {len(queries)} queries (the photos under {', '.join(EDITS)}), "
             f"each with its query variants ({variants:.0f} PDQ and {variants:.0f} pHash values on average). "
             "CPU ms per query, one thread, best of three rounds.", "",
             "| configuration | search ms/query | queries matched |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.3f} | {found}/{len(queries)} |" for name, ms, found in rows]
    lines += ["", "| one index search, all of a query's usable variants at once | ms/query |", "|---|---|"]
    lines += [f"| {name} | {ms:.3f} |" for name, ms in raw]
    lines += ["", f"pHash rows within 12 bits of a query (all its variants): {candidates:.1f} on average "
              "(each gets one direct PDQ comparison)."]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
