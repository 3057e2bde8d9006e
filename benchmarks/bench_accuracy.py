"""Recall of banked photos under common edits, at a fixed precision, per signal and combined.

Every distinct real photo bundled with the installed packages (benchmarks/media.py); every
other photo (by name) is banked. Queries: each photo under each transform. Positives are
transformed banked photos vs their own bank entry; negatives are every other (query, bank
entry) pair: transformed unbanked photos, the unbanked originals and frames of the bundled
videos (distractors). A signal's threshold is the largest distance whose precision over
those pairs stays >= 99.99%; with a few hundred positives that means no false match at all.

Policies: each signal alone (one hash per query); "+variants" adds the query-side variants
the hasher emits (unbordered frame, 7 dihedral transforms of original and unbordered);
"combined" matches when any of pdq/phash/dhash (with variants) is within its threshold.
Hashes below the quality minimum (pdq 50, phash/dhash 20) never match. Also reported:
the fixed defaults (pdq <= 31, phash <= 8) and fast-vs-reference conformance.
Run: python -m benchmarks.bench_accuracy
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import imagehash
import numpy as np
import pdqhash
from PIL import Image

from benchmarks import media
from workers.signals import borders, fast

SIGNALS = ("pdq", "phash", "dhash")
MIN_QUALITY = {"pdq": 50, "phash": 20, "dhash": 20}
DEFAULT_THRESHOLD = {"pdq": 31, "phash": 8, "dhash": 8}
TARGET_PRECISION = 0.9999


# --- transforms -------------------------------------------------------------------------

def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def _crop(img: np.ndarray, frac: float) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = int(h * frac), int(w * frac)
    return img[dy : h - dy, dx : w - dx].copy()


def _pad(img: np.ndarray, frac: float, colour=(0, 0, 0)) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = int(h * frac), int(w * frac)
    return cv2.copyMakeBorder(img, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=colour)


def _rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def _overlay_text(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    scale = w / 400
    for i, text in enumerate(("@vigil-test", "reposted 2024", "watermark")):
        org = (int(w * 0.05), int(h * (0.3 + 0.3 * i)))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    return cv2.addWeighted(img, 0.4, out, 0.6, 0)


def _gamma(img: np.ndarray, g: float) -> np.ndarray:
    lut = (255 * (np.arange(256) / 255) ** g).round().astype(np.uint8)
    return lut[img]


def _noise(img: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(img.size)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def _vignette(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    y, x = np.ogrid[:h, :w]
    r2 = ((y - h / 2) / (h / 2)) ** 2 + ((x - w / 2) / (w / 2)) ** 2
    mask = np.clip(1 - 0.45 * r2, 0, 1)[:, :, None]
    return (img * mask).astype(np.uint8)


def _grayscale(img: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def _screenshot(img: np.ndarray) -> np.ndarray:
    """The photo shown at 70% on a 16:9 grey canvas, then the screenshot saved as JPEG."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (int(w * 0.7), int(h * 0.7)), interpolation=cv2.INTER_AREA)
    ch = int(max(h, small.shape[0] * 1.25))
    cw = max(int(ch * 16 / 9), small.shape[1] + 20)
    canvas = np.full((ch, cw, 3), (236, 236, 236), np.uint8)
    y, x = (ch - small.shape[0]) // 2, (cw - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return _jpeg(canvas, 85)


TRANSFORMS = {
    "jpeg q=95": lambda im: _jpeg(im, 95),
    "jpeg q=50": lambda im: _jpeg(im, 50),
    "resize 0.5": lambda im: cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA),
    "crop 5%": lambda im: _crop(im, 0.05),
    "pad 20%": lambda im: _pad(im, 0.20),
    "rotate 4°": lambda im: _rotate(im, 4),
    "flip-h": lambda im: im[:, ::-1].copy(),
    "text overlay": _overlay_text,
    "gamma 0.6": lambda im: _gamma(im, 0.6),
    "blur": lambda im: cv2.GaussianBlur(im, (0, 0), max(1.0, im.shape[1] / 300)),
    "noise": _noise,
    "vignette": _vignette,
    "grayscale": _grayscale,
    "screenshot": _screenshot,
}


def low_detail_frames(photos: dict[str, np.ndarray], frames) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(banked, distractors) of blank, near-uniform and very-low-detail frames.

    Two such frames in the bank and many among the uploads: without quality gating they
    match each other (dark or washed-out frames all hash alike), which is what the gate is for.
    """
    rng = np.random.default_rng(1)
    h, w = 360, 640
    banked = [(photos["astronaut"] // 64).astype(np.uint8), (128 + (photos["coffee"].astype(int) - 128) // 16).astype(np.uint8)]
    out = [np.full((h, w, 3), v, np.uint8) for v in (0, 16, 128, 255)]
    out += [np.clip(v + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8) for v in (10, 128)]
    out += [np.broadcast_to(np.linspace(a, b, w)[None, :, None], (h, w, 3)).astype(np.uint8).copy()
            for a, b in ((0, 255), (100, 112), (20, 30))]
    for f in frames[::6]:
        out.append((f // 48).astype(np.uint8))
        out.append((128 + (f.astype(int) - 128) // 12).astype(np.uint8))
    return banked, out


# --- hashing ----------------------------------------------------------------------------

@dataclass
class Hashes:
    """Per signal: (V, bits) bit arrays and (V,) qualities; row 0 is the plain hash."""

    bits: dict[str, np.ndarray] = field(default_factory=dict)
    quality: dict[str, np.ndarray] = field(default_factory=dict)


def _bits(hex_value: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_value), np.uint8))


def hash_with_variants(img: np.ndarray) -> Hashes:
    frames = [img]
    unbordered = borders.remove_borders(img)
    if unbordered is not None:
        frames.append(unbordered)
    rows = fast.hash_frames(frames, SIGNALS, dihedral=True)
    out = Hashes()
    for signal in SIGNALS:
        # Row order: the original's plain hash first, then everything else.
        values = [v for row in rows for v in row if v.signal == signal]
        out.bits[signal] = np.stack([_bits(v.value) for v in values])
        out.quality[signal] = np.array([v.quality for v in values])
    return out


def _distances(queries: list[Hashes], bank: list[Hashes], signal: str, variants: bool) -> np.ndarray:
    """(Q, B) min Hamming distance over query variants; inf where quality gates a pair out."""
    bank_bits = np.stack([b.bits[signal][0] for b in bank]).astype(np.int16)
    bank_ok = np.array([b.quality[signal][0] >= MIN_QUALITY[signal] for b in bank])
    out = np.full((len(queries), len(bank)), np.inf)
    for i, q in enumerate(queries):
        bits = q.bits[signal] if variants else q.bits[signal][:1]
        ok = q.quality[signal][: len(bits)] >= MIN_QUALITY[signal]
        if not ok.any():
            continue
        d = (bits[ok][:, None, :].astype(np.int16) != bank_bits[None]).sum(axis=2).min(axis=0)
        out[i] = np.where(bank_ok, d, np.inf)
    return out


def _threshold_at_precision(dist: np.ndarray, positive: np.ndarray) -> int:
    """Largest threshold whose precision over all pairs is >= TARGET_PRECISION (-1: none)."""
    pos = np.sort(dist[positive])
    neg = np.sort(dist[~positive])
    best = -1
    for t in range(0, 257):
        tp = np.searchsorted(pos, t, side="right")
        fp = np.searchsorted(neg, t, side="right")
        if tp + fp and tp / (tp + fp) >= TARGET_PRECISION:
            best = t
        elif tp + fp:
            break
    return best


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def run() -> str:
    photos = media.photos()
    names = list(photos)
    banked = names[::2]
    unbanked = names[1::2]
    frames = media.video_frames(10)
    low_banked, low_distractors = low_detail_frames(photos, frames)
    bank = [hash_with_variants(photos[n]) for n in banked] + [hash_with_variants(f) for f in low_banked]
    bank_names: list[str] = banked + [f"low-detail {i}" for i in range(len(low_banked))]

    queries: list[Hashes] = []
    query_photo: list[str | None] = []
    query_transform: list[str] = []
    for name in names:
        for tname, fn in TRANSFORMS.items():
            queries.append(hash_with_variants(fn(photos[name])))
            query_photo.append(name)
            query_transform.append(tname)
    for name in unbanked:
        queries.append(hash_with_variants(photos[name]))
        query_photo.append(name)
        query_transform.append("distractor")
    for frame in list(frames) + low_distractors:
        queries.append(hash_with_variants(frame))
        query_photo.append(None)
        query_transform.append("distractor")

    positive = np.array([[qp == b for b in bank_names] for qp in query_photo])
    is_pos_query = positive.any(axis=1)
    tnames = np.array(query_transform)

    policies: dict[str, np.ndarray] = {}
    thresholds: dict[str, int] = {}
    for signal in SIGNALS:
        for variants in (False, True):
            label = signal + (" +variants" if variants else "")
            dist = _distances(queries, bank, signal, variants)
            t = _threshold_at_precision(dist, positive)
            thresholds[label] = t
            policies[label] = dist <= t
            if not variants:
                policies[f"{signal} (default ≤{DEFAULT_THRESHOLD[signal]})"] = dist <= DEFAULT_THRESHOLD[signal]
            else:
                policies[f"{label} (default ≤{DEFAULT_THRESHOLD[signal]})"] = dist <= DEFAULT_THRESHOLD[signal]
    policies["combined (any, +variants)"] = (
        policies["pdq +variants"] | policies["phash +variants"] | policies["dhash +variants"]
    )
    policies["combined pdq+phash (any, +variants, defaults)"] = (
        policies["pdq +variants (default ≤31)"] | policies["phash +variants (default ≤8)"]
    )

    def stats(matched: np.ndarray) -> tuple[float, float, int, dict[str, float]]:
        hit = (matched & positive).any(axis=1)
        tp = int((matched & positive).sum())
        fp = int((matched & ~positive).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = hit[is_pos_query].mean()
        per = {t: hit[is_pos_query & (tnames == t)].mean() for t in TRANSFORMS}
        return precision, recall, fp, per

    lines = [
        "## Signal accuracy (bench_accuracy)",
        "",
        f"{len(names)} real photos ({len(banked)} banked, {len(unbanked)} unbanked), {len(TRANSFORMS)} transforms, "
        f"{len(frames)} video frames + {len(unbanked)} unbanked originals + {len(low_distractors)} blank/low-detail "
        f"frames as distractors, {len(low_banked)} low-detail frames also banked; "
        f"{int(positive.sum())} positive pairs, {int((~positive).sum())} negative pairs. "
        f"Thresholds chosen for precision ≥ {TARGET_PRECISION:.2%} (here: zero false matches). "
        "Quality minimum: pdq 50, phash/dhash 20.",
        "",
        "| policy | threshold | precision | false matches | recall | " + " | ".join(TRANSFORMS) + " |",
        "|---|---|---|---|---|" + "---|" * len(TRANSFORMS),
    ]
    for label, matched in policies.items():
        precision, recall, fp, per = stats(matched)
        t = thresholds.get(label, "")
        if label.startswith("combined (any"):
            t = ", ".join(f"{s} ≤{thresholds[s + ' +variants']}" for s in SIGNALS)
        elif "default" in label:
            t = "fixed"
        lines.append(
            f"| {label} | {t} | {_pct(precision)} | {fp} | {_pct(recall)} | "
            + " | ".join(_pct(per[x]) for x in TRANSFORMS)
            + " |"
        )
    lines += ["", _phash_quality_section(queries, bank, positive, is_pos_query), "", _conformance_section(photos, frames)]
    return "\n".join(lines)


def _phash_quality_section(queries, bank, positive, is_pos_query) -> str:
    """Evidence for the pHash quality minimum: recall and false matches at the default threshold."""
    rows = ["### pHash quality minimum (phash +variants, threshold ≤8)", "",
            "| min quality | recall | false matches | bank entries gated out |", "|---|---|---|---|"]
    saved = MIN_QUALITY["phash"]
    try:
        for mq in (0, 5, 10, 15, 20, 30, 50):
            MIN_QUALITY["phash"] = mq
            dist = _distances(queries, bank, "phash", True)
            matched = dist <= DEFAULT_THRESHOLD["phash"]
            recall = (matched & positive).any(axis=1)[is_pos_query].mean()
            fp = int((matched & ~positive).sum())
            gated = sum(b.quality["phash"][0] < mq for b in bank)
            rows.append(f"| {mq} | {_pct(recall)} | {fp} | {gated} of {len(bank)} |")
    finally:
        MIN_QUALITY["phash"] = saved
    return "\n".join(rows)


def _conformance_section(photos: dict[str, np.ndarray], frames) -> str:
    """Fast hashes vs pdqhash / imagehash: Hamming distance distribution."""
    items = [(n, media.resized(img, *res) if res else img) for n, img in photos.items()
             for res in (None, (1280, 720), (1920, 1080))]
    items += [(f"video{i}", f) for i, f in enumerate(frames)]
    d: dict[str, list[int]] = {"pdq (quality ≥ 80)": [], "phash": [], "dhash": []}
    for _, img in items:
        pdq, ph, dh = fast.hash_frames([img], SIGNALS)[0]
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
        rows.append(f"| {k} | {len(a)} | {_pct((a == 0).mean())} | {a.mean():.2f} | "
                    f"{np.percentile(a, 95):.0f} | {a.max()} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(run())
