"""A video upload's evidence, accumulated part by part, so a block goes out as soon as it is
certain and the rest of the video need not be decoded.

Banked images and imported hashes match any sampled frame, as for a still image. Banked videos
follow vPDQ's rule (PDQ distance <= 31, quality >= 50): the entry matches when at least 80% of
the upload's usable frames are found in it (a clip cut from a long banked video) or 80% of the
entry's frames are found in the upload (a banked clip inside a longer upload). The excerpt rule
finds a few seconds of a banked video inside a long upload, which neither percentage can: a run
of consecutive sampled frames that all match one entry, in the entry's order
(signals.video_match.excerpt_runs), covering at least VIGIL_VIDEO_EXCERPT_S (1 s) of the entry's
timeline, counts as the entry's bank says (block). The hasher samples the seconds around a frame
near a banked video densely (adaptive sampling), so a 2 s excerpt arrives with ~20 frames.
Frames that are unusable (quality gate: black frames, fades) or that match the allowlist (logos,
title cards, shared intros) are not in the run and break it, so generic frames never form one.
Before the end a video entry may block early once MIN_EARLY_FRAMES frames match and a rule holds
for the frames seen so far. Weaker video evidence (a shorter run, some frames) is review.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from workers.index.matching import BankIndex, Match
from workers.policy import decide
from workers.signals import SignalValue
from workers.signals.video_match import ExcerptRun, longest_excerpt

MATCH_PERCENT = 80.0
MIN_EARLY_FRAMES = 3
MIN_REVIEW_FRAMES = 2
MIN_EXCERPT_FRAMES = 3  # a run that blocks has at least this many frames, however sparse the sampling
MAX_IMAGE_EVIDENCE = 200


def new_state() -> dict[str, Any]:
    """A video's evidence so far, folded in part by part; plain JSON."""
    return {"parts": 0, "frames": [], "allowed": [], "image": [], "video": {}, "decided": None}


def fold(state: dict[str, Any], signals: list[SignalValue], matches: list[Match], index: BankIndex) -> None:
    state["parts"] += 1
    frames = set(state["frames"])
    frames.update(sv.frame_ms for sv in signals if sv.signal == "pdq" and sv.frame_ms is not None
                  and (sv.quality or 0) >= index.settings.pdq_min_quality and not sv.variant)
    state["frames"] = sorted(frames)
    allowed = set(state["allowed"])
    allowed.update(m.frame_ms for m in matches if m.action == "allow" and m.frame_ms is not None)
    state["allowed"] = sorted(allowed)
    for m in matches:
        key = (m.bank, m.entry_id)
        if key in index.video_frames and m.signal == "pdq":
            hit = state["video"].setdefault(f"{m.bank}\x1f{m.entry_id}", {"q": [], "b": [], "p": {}, "best": None})
            if m.frame_ms is not None and m.frame_ms not in hit["q"]:
                hit["q"].append(m.frame_ms)
            if m.entry_frame_ms is not None and m.entry_frame_ms not in hit["b"]:
                hit["b"].append(m.entry_frame_ms)
            if m.frame_ms is not None and m.entry_frame_ms is not None:
                # each upload frame's nearest banked frame: where in the entry it sits
                pair = hit["p"].get(str(m.frame_ms))
                if pair is None or m.distance < pair[1]:
                    hit["p"][str(m.frame_ms)] = [m.entry_frame_ms, m.distance, m.variant, m.quality]
            if hit["best"] is None or m.distance < hit["best"]["distance"]:
                hit["best"] = m.to_json()
        elif key not in index.video_frames and len(state["image"]) < MAX_IMAGE_EVIDENCE:
            state["image"].append(m.to_json())


def excerpt(state: dict[str, Any], hit: dict[str, Any]) -> ExcerptRun | None:
    """The entry's longest in-order run among the upload's usable, non-allowlisted frames."""
    allowed = set(state["allowed"])
    pairs = {int(q): p[0] for q, p in hit["p"].items() if int(q) not in allowed}
    return longest_excerpt([f for f in state["frames"] if f not in allowed], pairs)


def verdict(state: dict[str, Any], index: BankIndex, final: bool) -> tuple[str, list[Match], list[str]]:
    """(decision, evidence, notes) on what has been seen so far."""
    matches = [Match(**m) for m in state["image"]]
    notes = []
    allowed = set(state["allowed"])
    seen = max(1, len(state["frames"]))
    excerpt_ms = int(index.settings.video_excerpt_s * 1000)
    for key, hit in state["video"].items():
        bank_name, entry_id = key.split("\x1f", 1)
        total = index.video_frames.get((bank_name, entry_id), 0)
        q_hits = [q for q in hit["q"] if q not in allowed]
        q_pct = 100.0 * len(q_hits) / seen
        c_pct = 100.0 * len(hit["b"]) / total if total else 0.0
        run = excerpt(state, hit)
        long_run = run is not None and run.covered_ms >= excerpt_ms and run.frames >= MIN_EXCERPT_FRAMES
        best = _best(hit, allowed, run)
        if best is None:  # every matching frame is allowlisted
            continue
        strong = q_pct >= MATCH_PERCENT or c_pct >= MATCH_PERCENT or long_run
        if strong and (final or len(q_hits) >= MIN_EARLY_FRAMES):
            matches.append(best)
        elif final and len(q_hits) >= MIN_REVIEW_FRAMES and best.action in ("block", "review"):
            matches.append(replace(best, action="review"))
        else:
            continue
        span = "" if run is None else (f"; longest run {run.frames} frames, upload {run.upload_start_ms}-"
                                       f"{run.upload_end_ms} ms = entry {run.entry_start_ms}-{run.entry_end_ms} ms "
                                       f"({run.covered_ms} ms of the entry, excerpt rule {excerpt_ms} ms)")
        notes.append(f"{bank_name}/{entry_id}: {len(q_hits)} of {seen} sampled frames matched "
                     f"({q_pct:.0f}%), {len(hit['b'])} of {total} banked frames ({c_pct:.0f}%){span}")
    decision, evidence = decide(matches)
    return decision, evidence, notes


def _best(hit: dict[str, Any], allowed: set[int], run: ExcerptRun | None) -> Match | None:
    """The evidence match: the closest pair inside the run (when there is one), else the closest
    pair on a frame the allowlist does not cover."""
    best = Match(**hit["best"])
    pairs = {int(q): p for q, p in hit["p"].items() if int(q) not in allowed}
    if run is not None:
        inside = {q: p for q, p in pairs.items() if run.upload_start_ms <= q <= run.upload_end_ms}
        pairs = inside or pairs
    if not pairs:
        return None if best.frame_ms in allowed else best
    q, (entry_ms, dist, variant, quality) = min(pairs.items(), key=lambda kv: (kv[1][1], kv[0]))
    return replace(best, frame_ms=q, entry_frame_ms=entry_ms, distance=dist, variant=variant, quality=quality)


def percents(state: dict[str, Any], index: BankIndex, match: Match) -> dict[str, Any]:
    """The vPDQ percentages and the excerpt run of a video entry's evidence (for the decision)."""
    hit = state["video"].get(f"{match.bank}\x1f{match.entry_id}")
    if hit is None:
        return {}
    total = index.video_frames.get((match.bank, match.entry_id), 0)
    allowed = set(state["allowed"])
    out: dict[str, Any] = {
        "query_percent": round(100.0 * len([q for q in hit["q"] if q not in allowed]) / max(1, len(state["frames"])), 1),
        "compared_percent": round(100.0 * len(hit["b"]) / total, 1) if total else 0.0}
    run = excerpt(state, hit)
    if run is not None:
        out["excerpt"] = run.to_json()
    return out


def decide_file(path: Any, index: BankIndex, near: Any = None) -> tuple[str, list[dict], list[str], dict]:
    """A video file decided in this process, part by part as the matcher does, with the hasher's
    sampling (adaptive when `near`, e.g. VideoNearIndex.near_frames, is given). For benchmarks,
    tests and checks: the same hash_video, search, fold and verdict as the two workers.
    Returns (decision, evidence with percents and excerpt, notes, {"frames", "dense_frames",
    "pdq": the frames' PDQ hashes as signals.video_match.FrameHash, for comparing rules})."""
    from workers.signals.hashing import hash_video
    from workers.signals.video_match import FrameHash

    parts, _sampling = hash_video(path, index.settings, near=near)
    state, stats = new_state(), {"frames": 0, "dense_frames": 0, "pdq": []}
    for part in parts:
        stats["frames"] += part.frames
        stats["dense_frames"] += part.frames if part.dense_windows else 0
        stats["pdq"] += [FrameHash(sv.value, sv.quality or 0, sv.frame_ms) for sv in part.signals
                         if sv.signal == "pdq" and not sv.variant]
        fold(state, part.signals, index.search(part.signals), index)
    decision, evidence, notes = verdict(state, index, final=True)
    return decision, [{**m.to_json(), **percents(state, index, m)} for m in evidence], notes, stats
