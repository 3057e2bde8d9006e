"""Video sampling throughput and time to first match.

Test videos are made here with PyAV from real photos (benchmarks.media.photos), upscaled and
panned slowly so the encoder has real motion to code: H.264, 25 fps, GOP 2 s, cached under
benchmarks/out/. Every figure is seconds of video processed per second, both per wall second
and per CPU second of this process (= per core; the sampler decodes single-threaded, OpenCV may
use several threads, which CPU time accounts for). The machine may be shared, so CPU time is the
figure to compare. The excerpt tables (recall of a few seconds of a banked video inside long
uploads, false positives, CPU with and without adaptive sampling) are benchmarks/excerpts.py's
(python -m benchmarks.excerpts [--quick] runs them alone). Run: python -m benchmarks.bench_video [--quick]
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from benchmarks.media import photos
from tests.media_variants import write_video
from workers.media.video import SamplingStrategy, VideoLimits, sample_frames
from workers.signals import hash_frames
from workers.signals.video_match import FrameHash, dedupe_frames, distances, frames_from_signals, pack

OUT = Path(__file__).resolve().parent / "out"
FPS = 25
MAX_SIDE = 640  # the downscale the sampler is asked for; see downscale_cost() for why not 512
SCENE_S = 4.0  # one photo per scene, panned and slowly zoomed
STRATEGIES = {
    "keyframes": SamplingStrategy("keyframes"),
    "1 fps": SamplingStrategy("fixed", fps=1.0),
    "every frame": SamplingStrategy("all"),
}


# -- test media -------------------------------------------------------------------------------------
def _scenes() -> list[np.ndarray]:
    """Colour photos, largest first (grey ones pan as well but code cheaper)."""
    pics = [p for p in photos().values() if not np.array_equal(p[..., 0], p[..., 1])]
    return sorted(pics, key=lambda p: -p.shape[0] * p.shape[1])


def pan_frames(width: int, height: int, seconds: float,
               scenes: list[np.ndarray]) -> Iterator[tuple[np.ndarray, float]]:
    """Scenes of SCENE_S seconds, cycling through `scenes`: each photo upscaled to 1.4x the frame
    and a window crossing it while slowly zooming in."""
    frames = int(seconds * FPS)
    per_scene = int(SCENE_S * FPS)
    for i in range(frames):
        scene, k = divmod(i, per_scene)
        if k == 0:
            photo = scenes[scene % len(scenes)]
            scale = 1.4 * max(width / photo.shape[1], height / photo.shape[0])
            big = cv2.resize(photo, (math.ceil(photo.shape[1] * scale), math.ceil(photo.shape[0] * scale)),
                             interpolation=cv2.INTER_CUBIC)
            direction = 1 if scene % 2 == 0 else -1
        u = k / per_scene
        zoom = 1.0 - 0.15 * u  # window shrinks: a slow zoom in
        w, h = int(width * 1.2 * zoom), int(height * 1.2 * zoom)
        x = int((big.shape[1] - w) * (u if direction > 0 else 1 - u))
        y = int((big.shape[0] - h) * 0.5 * (1 + 0.5 * math.sin(2 * math.pi * u)))
        crop = big[y:y + h, x:x + w]
        yield cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA), i / FPS


def make_video(name: str, width: int, height: int, seconds: float, photos_from: int = 0,
               photos_to: int | None = None) -> Path:
    """A cached test video panning over photos [photos_from:photos_to] of _scenes()."""
    to = "" if photos_to is None else photos_to
    path = OUT / f"{name}_{width}x{height}_{int(seconds)}s_p{photos_from}-{to}.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        scenes = _scenes()[photos_from:photos_to]
        write_video(tmp, pan_frames(width, height, seconds, scenes), rate=FPS, gop_s=2.0, crf=23)
        os.replace(tmp, path)
    return path


# -- measuring --------------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def sampler_run(path: Path, strategy: SamplingStrategy, pdq: bool | str, max_side: int | None) -> tuple[int, int]:
    """pdq: False (decode only), True (reference PDQ), or "vigil" (what the hasher computes:
    hash_video, i.e. grey frames, fast PDQ + pHash, the unbordered frame, and the dihedral query
    variants)."""
    if pdq == "vigil":
        return vigil_run(path, strategy, max_side)
    sampling = sample_frames(path, strategy, VideoLimits(max_frames=100_000), max_side=max_side)
    n = 0
    for frame in sampling:
        if pdq:
            hash_frames([frame.rgb], ("pdq",), impl="reference")
        n += 1
    return n, sampling.frames_decoded


def vigil_run(path: Path, strategy: SamplingStrategy, max_side: int | None) -> tuple[int, int]:
    """The hasher's own call, hash_video, as a query (with the dihedral variants)."""
    from workers.signals.hashing import hash_video
    from workers.settings import Settings

    settings = Settings(video_fps=strategy.fps, video_max_side=max_side or 0, video_max_frames=100_000)
    parts, sampling = hash_video(path, settings, query=True, strategy=strategy.kind)
    n = sum(part.frames for part in parts)
    return n, sampling.frames_decoded


def opencv_run(path: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        ok, _ = cap.retrieve()
        n += ok
    cap.release()
    return n, n


def vpdq_run(path: Path) -> tuple[int, int]:
    import vpdq  # type: ignore

    features = vpdq.computeHash(str(path), seconds_per_hash=1.0)
    return len(features), -1


def vpdq_status() -> str:
    try:
        import vpdq  # type: ignore  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build's linker error
        return f"not available: {type(exc).__name__}: {exc}"
    return "available"


def _row(label: str, seconds: float, wall: float, cpu: float, frames: int, decoded: int) -> str:
    per_cpu = seconds / cpu if cpu > 0 else float("inf")
    dec = str(decoded) if decoded >= 0 else "n/a"
    return f"| {label} | {frames} | {dec} | {seconds / wall:.1f}x | {per_cpu:.1f}x |"


def throughput(sizes: list[tuple[int, int]], seconds: float) -> list[str]:
    lines = [
        f"### Throughput ({seconds:g} s clips, H.264 {FPS} fps, GOP 2 s, x264 veryfast crf 23)",
        "",
        "| video / method | frames out | frames decoded | video s per wall s | video s per CPU s (per core) |",
        "|---|---|---|---|---|",
    ]
    has_vpdq = vpdq_status() == "available"
    for width, height in sizes:
        path = make_video("pan", width, height, seconds)
        tag = f"{height}p"
        wall, cpu, (n, dec) = timed(lambda: opencv_run(path))
        lines.append(_row(f"{tag} cv2.VideoCapture, every frame (baseline)", seconds, wall, cpu, n, dec))
        for name, strategy in STRATEGIES.items():
            for pdq, max_side in ((False, None), (True, None), (True, MAX_SIDE), ("vigil", MAX_SIDE)):
                if name == "every frame" and pdq is True and max_side is None and height > 720:
                    continue  # minutes of reference PDQ at 1080p: the downscaled row says enough
                what = ("decode + RGB" if not pdq else "+ PDQ (reference)" if pdq is True
                        else "+ vigil's hashes (hash_video: luma frames, fast PDQ + pHash, unbordered, dihedral)")
                if max_side:
                    what += f", downscaled to {max_side} px"
                if pdq == "vigil":
                    # A worker is long-running: the fast path builds its resampling operators once
                    # per frame size (~30 ms) and caches them, so time it warm, as a hasher runs.
                    sampler_run(path, strategy, pdq, max_side)
                    what += ", warm"
                wall, cpu, (n, dec) = timed(lambda: sampler_run(path, strategy, pdq, max_side))
                lines.append(_row(f"{tag} {name}, {what}", seconds, wall, cpu, n, dec))
        if has_vpdq:
            wall, cpu, (n, dec) = timed(lambda: vpdq_run(path))
            lines.append(_row(f"{tag} vpdq.computeHash, 1 fps (decodes every frame)", seconds, wall, cpu, n, dec))
        print("\n".join(lines[-8:]), file=sys.stderr)
    lines += ["", f"vpdq: {vpdq_status()}", ""]
    lines += vpdq_agreement(make_video("pan", *sizes[0], seconds))
    lines += downscale_cost([make_video("pan", w, h, seconds) for w, h in sizes])
    return lines


def downscale_cost(paths: list[Path]) -> list[str]:
    """PDQ distance between a frame hashed at full size and downscaled while decoding, and cost."""
    import av

    lines = [
        "### Downscaling while decoding: PDQ drift and cost (one frame per second)",
        "",
        "| video | long side | PDQ distance to full size: median / p90 / max | convert + PDQ ms per frame (CPU) |",
        "|---|---|---|---|",
    ]
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [f for i, f in enumerate(container.decode(stream)) if i % FPS == 0]
        width, height = frames[0].width, frames[0].height
        full = None
        for side in (width, 960, 640, 512, 320):
            h = round(height * side / width)
            cpu = time.process_time()
            rgbs = [f.to_ndarray(width=side, height=h, format="rgb24", interpolation="AREA") for f in frames]
            hashes = pack(r[0].value for r in hash_frames(rgbs, ("pdq",), impl="reference"))
            ms = (time.process_time() - cpu) / len(frames) * 1000
            if full is None:
                full = hashes
            d = np.diag(distances(full, hashes))
            lines.append(f"| {height}p | {side} | {np.median(d):g} / {np.percentile(d, 90):.0f} / {d.max()} | {ms:.1f} |")
    return lines + [""]


def vpdq_agreement(path: Path) -> list[str]:
    """Do our 1 fps reference PDQ hashes agree with vpdq's on the same frames?"""
    if vpdq_status() != "available":
        return []
    import vpdq  # type: ignore

    theirs = {round(f.timestamp * 1000): f.hex for f in vpdq.computeHash(str(path), seconds_per_hash=1.0)}
    ours = {f.frame_ms: f.pdq for f in _pdq_rows(path, STRATEGIES["1 fps"], None)}
    small = {f.frame_ms: f.pdq for f in _pdq_rows(path, STRATEGIES["1 fps"], MAX_SIDE)}
    common = sorted(set(theirs) & set(ours))
    d = [int(distances(pack([ours[t]]), pack([theirs[t]]))[0, 0]) for t in common]
    ds = [int(distances(pack([small[t]]), pack([theirs[t]]))[0, 0]) for t in common]
    return [
        f"vpdq agreement on {path.name}: {len(common)} common timestamps of {len(theirs)} vpdq / "
        f"{len(ours)} ours; PDQ distance to vpdq's hash, full resolution: median {np.median(d):g}, "
        f"max {max(d)}; downscaled to {MAX_SIDE} px: median {np.median(ds):g}, max {max(ds)} (match threshold 31).",
        "",
    ]


def _pdq_rows(path: Path, strategy: SamplingStrategy, max_side: int | None) -> list[FrameHash]:
    frames = list(sample_frames(path, strategy, VideoLimits(max_frames=100_000), max_side=max_side))
    rows = hash_frames([f.rgb for f in frames], ("pdq",), impl="reference")
    return frames_from_signals(rows, [f.frame_ms for f in frames])


def time_to_first_match(width: int, height: int, lead_s: float, banked_s: float) -> list[str]:
    """How long until the sampler yields a frame that matches the bank.

    The bank holds every frame (deduplicated) of `banked_s` seconds of content. Two uploads: one
    opening with that content, one where it begins after `lead_s` seconds of other content.
    """
    banked_photos = math.ceil(banked_s / SCENE_S)
    banked = make_video("banked", width, height, banked_s, 0, banked_photos)
    lead = make_video("lead", width, height, lead_s, banked_photos)  # none of the banked photos
    opening = _concat(OUT / f"opening_{banked.stem}+{lead.stem}.mp4", [banked, lead])
    late = _concat(OUT / f"late_{lead.stem}+{banked.stem}.mp4", [lead, banked])
    bank = pack(f.pdq for f in dedupe_frames(_pdq_rows(banked, STRATEGIES["every frame"], MAX_SIDE)))
    lines = [
        f"### Time to first match ({height}p, frames downscaled to {MAX_SIDE} px; "
        f"bank = every frame of {banked_s:g} s of content, deduped)",
        "",
        "| upload | strategy | first matching frame at | wall s to it | CPU s to it | frames hashed |",
        "|---|---|---|---|---|---|",
    ]
    for label, path in ((f"banked content first ({lead_s + banked_s:g} s)", opening),
                        (f"banked content after {lead_s:g} s of other content", late)):
        for name in ("keyframes", "1 fps"):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            found, hashed = None, 0
            for frame in sample_frames(path, STRATEGIES[name], VideoLimits(max_frames=100_000), max_side=MAX_SIDE):
                row = hash_frames([frame.rgb], ("pdq",), impl="reference")[0][0]
                hashed += 1
                if row.quality >= 50 and distances(pack([row.value]), bank).min() <= 31:
                    found = frame.frame_ms
                    break
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            at = f"{found / 1000:.2f} s" if found is not None else "no match"
            lines.append(f"| {label} | {name} | {at} | {wall:.3f} | {cpu:.3f} | {hashed} |")
    lines += [
        "",
        "The sampler streams (no pre-scan and no container duration), so the time to a match",
        "at offset T is T divided by the sampling speed above plus one frame's hash, whatever",
        "the video's total length: a 10-minute upload whose first minute is banked matches as",
        "fast as the 'banked content first' rows, and one whose banked part starts at minute 9",
        "takes about 9 x 60 / (keyframes speed) seconds.",
        "",
    ]
    return lines


def _concat(dst: Path, parts: list[Path]) -> Path:
    """Stream-copy H.264 files one after another (same encoder settings), shifting timestamps."""
    import av

    if dst.exists():
        return dst
    tmp = dst.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = None
        offset = 0
        for part in parts:
            with av.open(str(part)) as src:
                vin = src.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(vin)
                end = offset
                for packet in src.demux(vin):
                    if packet.dts is None:
                        continue
                    shift = int(round(offset / vin.time_base))
                    packet.pts += shift
                    packet.dts += shift
                    end = max(end, float((packet.pts + (packet.duration or 0)) * vin.time_base))
                    packet.stream = stream
                    out.mux(packet)
                offset = end
    os.replace(tmp, dst)
    return dst


def run(quick: bool = False) -> str:
    from workers.signals import limit_native_threads

    limit_native_threads()  # as the workers run: one BLAS/OpenCV thread (see its docstring)
    seconds = 10.0 if quick else 24.0
    sizes = [(1280, 720)] if quick else [(1280, 720), (1920, 1080)]
    lines = ["## Video sampling (workers/media/video.py)", ""]
    lines += throughput(sizes, seconds)
    lines += time_to_first_match(1280, 720, lead_s=30.0 if quick else 60.0, banked_s=12.0)
    from benchmarks import excerpts  # issue 24: a few seconds of a banked video in a long upload

    lines += excerpts.run(quick)
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
