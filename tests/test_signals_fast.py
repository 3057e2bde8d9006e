"""The fast signal path against the reference libraries, on the bundled real photos.

Bounds are the measured worst cases (benchmarks/bench_accuracy.py prints the distributions);
a change that loosens them should be a deliberate one.
"""
from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image

from benchmarks import media
from workers.signals import SignalValue, bits_to_hex, hash_frames
from workers.signals import borders, dihedral, fast

PHOTOS = media.photos()
RESOLUTIONS = (None, (1280, 720), (1920, 1080))


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _at(img: np.ndarray, res: tuple[int, int] | None) -> np.ndarray:
    return img if res is None else media.resized(img, *res)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def test_enough_distinct_real_photos():
    assert len(PHOTOS) >= 20


@pytest.fixture(scope="module")
def conformance() -> dict[str, list[int]]:
    """Hamming distances fast vs reference for every photo at native, 720p and 1080p."""
    out: dict[str, list[int]] = {"pdq": [], "pdq_q": [], "phash": [], "dhash": [], "quality_gap": []}
    for img in PHOTOS.values():
        for res in RESOLUTIONS:
            frame = _at(img, res)
            pdq, ph, dh = hash_frames([frame], ("pdq", "phash", "dhash"))[0]
            ref_bits, ref_quality = pdqhash.compute(frame)
            pil = Image.fromarray(frame)
            out["phash"].append(hamming(ph.value, str(imagehash.phash(pil))))
            out["dhash"].append(hamming(dh.value, str(imagehash.dhash(pil))))
            out["quality_gap"].append(abs(pdq.quality - ref_quality))
            if ref_quality >= 80:
                out["pdq_q"].append(hamming(pdq.value, bits_to_hex(ref_bits)))
            out["pdq"].append(hamming(pdq.value, bits_to_hex(ref_bits)))
    return out


def test_phash_matches_imagehash(conformance):
    assert max(conformance["phash"]) <= 2
    assert np.mean(conformance["phash"]) <= 0.5


def test_dhash_matches_imagehash(conformance):
    assert max(conformance["dhash"]) <= 8  # brick (a flat texture at 9x8) is the worst case
    assert np.mean(conformance["dhash"]) <= 1.5


def test_pdq_within_conformance_of_pdqhash(conformance):
    assert len(conformance["pdq_q"]) >= 50
    assert max(conformance["pdq_q"]) <= 10  # PDQ's own conformance rule
    assert max(conformance["pdq"]) <= 4  # what we measure
    assert max(conformance["quality_gap"]) <= 3


def test_grey_input_gives_the_rgb_hashes():
    frames = [_at(PHOTOS[n], (1920, 1080)) for n in ("astronaut", "coffee", "china")]
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for a, b in zip(hash_frames(frames, ("pdq", "phash")), fast.hash_grey_frames(greys, ("pdq", "phash"))):
        assert hamming(a[0].value, b[0].value) <= 4
        assert hamming(a[1].value, b[1].value) <= 2


def test_mixed_shapes_in_one_batch_keep_their_order():
    frames = [PHOTOS["astronaut"], PHOTOS["coffee"], PHOTOS["astronaut"]]
    rows = hash_frames(frames, ("pdq", "phash"))
    assert rows[0] == rows[2]
    assert rows[0][0].value != rows[1][0].value
    assert all(isinstance(v, SignalValue) and v.variant is None for row in rows for v in row)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "china", "rocket", "motorcycle_left"])
def test_dihedral_variants_match_pdqhash_compute_dihedral(name):
    img = PHOTOS[name]
    ref, _ = pdqhash.compute_dihedral(img)
    # pdqhash's order: original, rot90, rot180, rot270, flip-v, flip-h, transpose, anti-transpose
    ref_by_name = dict(zip(("rot90", "rot180", "rot270", "flip-v", "flip-h", "transpose", "anti-transpose"), ref[1:]))
    rows = fast.hash_frames([img], ("pdq", "phash"), dihedral=True)[0]
    got = {(v.signal, v.variant): v for v in rows}
    assert set(dihedral.VARIANTS) == set(ref_by_name)
    for variant in dihedral.VARIANTS:
        assert hamming(got["pdq", variant].value, bits_to_hex(ref_by_name[variant])) <= 4
        # pHash's resize is mirror-symmetric, so its variants equal imagehash of the moved frame.
        moved = str(imagehash.phash(Image.fromarray(dihedral.apply(img, variant))))
        assert hamming(got["phash", variant].value, moved) <= 2


def _low_detail_frames() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = 360, 640
    coffee = PHOTOS["coffee"].astype(int)
    return {
        "black": np.zeros((h, w, 3), np.uint8),
        "grey": np.full((h, w, 3), 128, np.uint8),
        "white": np.full((h, w, 3), 255, np.uint8),
        "noisy_grey": np.clip(128 + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8),
        "faint_gradient": np.broadcast_to(np.linspace(100, 110, w)[None, :, None], (h, w, 3)).astype(np.uint8),
        "nearly_black_photo": (PHOTOS["astronaut"] // 64).astype(np.uint8),
        "washed_out_photo": (128 + (coffee - 128) // 16).astype(np.uint8),
        "tiny": PHOTOS["astronaut"][:4, :4],
    }


@pytest.mark.parametrize("name", list(_low_detail_frames()))
def test_low_detail_frames_get_low_quality(name):
    frame = np.ascontiguousarray(_low_detail_frames()[name])
    pdq, ph, dh = hash_frames([frame], ("pdq", "phash", "dhash"))[0]
    assert pdq.quality < 50
    assert ph.quality < 20 and dh.quality == ph.quality


def test_detailed_photos_get_high_quality():
    rows = hash_frames([PHOTOS[n] for n in ("astronaut", "camera", "china", "coffee", "flower")], ("pdq", "phash"))
    for pdq, ph in rows:
        assert pdq.quality == 100
        assert ph.quality >= 80


def _bordered(img: np.ndarray, kind: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    h, w = img.shape[:2]
    box = {"letterbox": (h // 4, h // 4, 0, 0), "pillarbox": (0, 0, w // 3, w // 3),
           "padding": (h // 5, h // 6, w // 5, w // 7)}[kind]
    colour = {"letterbox": (0, 0, 0), "pillarbox": (0, 0, 0), "padding": (200, 30, 90)}[kind]
    return cv2.copyMakeBorder(img, *box, cv2.BORDER_CONSTANT, value=colour), box


@pytest.mark.parametrize("name", ["astronaut", "coffee", "china", "rocket", "chelsea", "flower"])
@pytest.mark.parametrize("kind", ["letterbox", "pillarbox", "padding"])
def test_borders_are_removed(name, kind):
    img = PHOTOS[name]
    framed, box = _bordered(img, kind)
    assert borders.border_box(framed) == box
    original = hash_frames([img], ("pdq", "phash"))[0]
    # Clean borders come off exactly; after JPEG q=50 and a resize to 720p, within a few pixels.
    for frame, pdq_bound, phash_bound in ((framed, 0, 0), (media.resized(_jpeg(framed, 50), 1280, 720), 24, 4)):
        unbordered = borders.remove_borders(frame)
        assert unbordered is not None
        pdq, ph = hash_frames([unbordered], ("pdq", "phash"))[0]
        assert hamming(pdq.value, original[0].value) <= pdq_bound
        assert hamming(ph.value, original[1].value) <= phash_bound


@pytest.mark.parametrize("name", ["astronaut", "coffee", "china", "rocket", "flower", "motorcycle_left"])
def test_photos_without_borders_are_left_alone(name):
    assert borders.remove_borders(PHOTOS[name]) is None
    assert borders.remove_borders(_jpeg(PHOTOS[name], 50)) is None


def test_blank_frames_have_nothing_to_unborder():
    assert borders.remove_borders(np.zeros((720, 1280, 3), np.uint8)) is None
    assert borders.remove_borders(np.full((480, 640, 3), 77, np.uint8)) is None
