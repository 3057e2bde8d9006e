"""Per-core hashing throughput: vigil's fast path vs imagehash and pdqhash on the same frames.

Frames are the bundled real photos resized to 720p and 1080p (benchmarks/media.py). All
libraries are pinned to one thread (cv2.setNumThreads(1), BLAS/OpenMP via threadpoolctl),
so figures are per core. "from RGB" times everything from the decoded RGB frame; "from grey"
starts from the luma plane a decoder can hand out directly (fast path only). The fast path
is timed in batches of 8 frames (as the hasher calls it) and one frame at a time.
perception's hashers are not included: installing perception pins a conflicting OpenCV.
Run: python -m benchmarks.bench_signals
"""
from __future__ import annotations

import time
from typing import Callable

import cv2
import imagehash
import numpy as np
import pdqhash
from PIL import Image

from benchmarks import media
from workers.signals import borders, fast

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
N_FRAMES = 8
MIN_SECONDS = 0.4  # per measurement, repeated until at least this long


def _per_frame(fn: Callable[[list[np.ndarray]], object], frames: list[np.ndarray], batch: int) -> float:
    """Best-of-3 seconds per frame of fn over frames in batches."""
    fn(frames[:batch])
    best = float("inf")
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while True:
            for i in range(0, len(frames), batch):
                fn(frames[i : i + batch])
            n += len(frames)
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_SECONDS:
                break
        best = min(best, elapsed / n)
    return best


def _each(f: Callable[[np.ndarray], object]) -> Callable[[list[np.ndarray]], None]:
    def run(frames: list[np.ndarray]) -> None:
        for frame in frames:
            f(frame)
    return run


def measure() -> dict[str, dict[str, float]]:
    """{resolution: {case: seconds per frame}}."""
    photos = list(media.photos().values())
    step = max(1, len(photos) // N_FRAMES)
    chosen = photos[::step][:N_FRAMES]
    out: dict[str, dict[str, float]] = {}
    for label, (w, h) in RESOLUTIONS.items():
        rgb = [media.resized(p, w, h) for p in chosen]
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
        r = out.setdefault(label, {})
        r["imagehash.phash"] = _per_frame(_each(lambda f: imagehash.phash(Image.fromarray(f))), rgb, 1)
        r["imagehash.dhash"] = _per_frame(_each(lambda f: imagehash.dhash(Image.fromarray(f))), rgb, 1)
        r["pdqhash.compute"] = _per_frame(_each(pdqhash.compute), rgb, 1)
        r["pdqhash.compute_dihedral"] = _per_frame(_each(pdqhash.compute_dihedral), rgb, 1)
        for signals in (("phash",), ("dhash",), ("pdq",), ("pdq", "phash"), ("pdq", "phash", "dhash")):
            name = "+".join(signals)
            for batch in (1, 8):
                r[f"fast {name} from RGB, batch {batch}"] = _per_frame(lambda fs: fast.hash_frames(fs, signals), rgb, batch)
            r[f"fast {name} from grey, batch 8"] = _per_frame(lambda fs: fast.hash_frames(fs, signals), grey, 8)
        r["fast pdq+phash +7 dihedral, from RGB, batch 8"] = _per_frame(
            lambda fs: fast.hash_frames(fs, ("pdq", "phash"), dihedral=True), rgb, 8)
        r["borders.remove_borders (no border)"] = _per_frame(_each(borders.remove_borders), rgb, 1)
    return out


def run() -> str:
    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        results = measure()
    else:
        with threadpool_limits(1):
            results = measure()
    reference = {"phash": "imagehash.phash", "dhash": "imagehash.dhash", "pdq": "pdqhash.compute"}
    lines = ["## Signal throughput per core (bench_signals)", "",
             f"{N_FRAMES} real photos resized to each resolution; one thread; best of 3.", ""]
    labels = list(RESOLUTIONS)
    lines.append("| case | " + " | ".join(f"{l} ms/frame | {l} frames/s | {l} speed-up" for l in labels) + " |")
    lines.append("|---|" + "---|---|---|" * len(labels))
    for case in results[labels[0]]:
        cells = []
        for l in labels:
            sec = results[l][case]
            ref = None
            if case.startswith("fast "):
                sig = case.split()[1]
                if sig in reference:
                    ref = results[l][reference[sig]]
                elif sig.startswith("pdq+phash"):
                    ref = results[l]["pdqhash.compute"] + results[l]["imagehash.phash"]
                    if "dihedral" in case:
                        ref = results[l]["pdqhash.compute_dihedral"] + results[l]["imagehash.phash"]
                    elif sig.endswith("dhash"):
                        ref += results[l]["imagehash.dhash"]
            ratio = f"{ref / sec:.1f}x" if ref else ""
            cells.append(f"{sec * 1e3:.2f} | {1 / sec:,.0f} | {ratio}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", "Speed-up is against the reference computing the same signals (pdq+phash: pdqhash.compute + "
              "imagehash.phash, and so on) on the same RGB frames."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
