"""A video upload's evidence, accumulated part by part, so a block goes out as soon as it is
certain and the rest of the video need not be decoded.

Banked images and imported hashes match any sampled frame, as for a still image. Banked videos
follow vPDQ's rule (PDQ distance <= 31, quality >= 50): the entry matches when at least 80% of
the upload's usable frames are found in it (a clip cut from a long banked video) or 80% of the
entry's frames are found in the upload (a banked clip inside a longer upload). A run of
MIN_RUN consecutive sampled frames that all match one entry also counts: it finds a banked clip
inside a long upload even when the bank sampled more densely than the upload. Before the end a
video entry may block early once MIN_EARLY_FRAMES frames match and the rule holds for the frames
seen so far. Weaker video evidence (some frames, under the rule) is review.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from workers.index.matching import BankIndex, Match
from workers.policy import decide
from workers.signals import SignalValue

MATCH_PERCENT = 80.0
MIN_EARLY_FRAMES = 3
MIN_REVIEW_FRAMES = 2
MIN_RUN = 4  # consecutive sampled frames (keyframes ~2 s apart: about 8 s of continuous match)
MAX_IMAGE_EVIDENCE = 200


def new_state() -> dict[str, Any]:
    """A video's evidence so far, folded in part by part; plain JSON."""
    return {"parts": 0, "frames": [], "image": [], "video": {}, "decided": None}


def fold(state: dict[str, Any], signals: list[SignalValue], matches: list[Match], index: BankIndex) -> None:
    state["parts"] += 1
    frames = set(state["frames"])
    frames.update(sv.frame_ms for sv in signals if sv.signal == "pdq" and sv.frame_ms is not None
                  and (sv.quality or 0) >= index.settings.pdq_min_quality and not sv.variant)
    state["frames"] = sorted(frames)
    for m in matches:
        key = (m.bank, m.entry_id)
        if key in index.video_frames and m.signal == "pdq":
            hit = state["video"].setdefault(f"{m.bank}\x1f{m.entry_id}", {"q": [], "b": [], "best": None})
            if m.frame_ms is not None and m.frame_ms not in hit["q"]:
                hit["q"].append(m.frame_ms)
            if m.entry_frame_ms is not None and m.entry_frame_ms not in hit["b"]:
                hit["b"].append(m.entry_frame_ms)
            if hit["best"] is None or m.distance < hit["best"]["distance"]:
                hit["best"] = m.to_json()
        elif key not in index.video_frames and len(state["image"]) < MAX_IMAGE_EVIDENCE:
            state["image"].append(m.to_json())


def verdict(state: dict[str, Any], index: BankIndex, final: bool) -> tuple[str, list[Match], list[str]]:
    """(decision, evidence, notes) on what has been seen so far."""
    matches = [Match(**m) for m in state["image"]]
    notes = []
    seen = max(1, len(state["frames"]))
    for key, hit in state["video"].items():
        bank_name, entry_id = key.split("\x1f", 1)
        total = index.video_frames.get((bank_name, entry_id), 0)
        q_pct = 100.0 * len(hit["q"]) / seen
        c_pct = 100.0 * len(hit["b"]) / total if total else 0.0
        best = Match(**hit["best"])
        run = longest_run(state["frames"], set(hit["q"]))
        strong = q_pct >= MATCH_PERCENT or c_pct >= MATCH_PERCENT or run >= MIN_RUN
        if strong and (final or len(hit["q"]) >= MIN_EARLY_FRAMES):
            matches.append(best)
        elif final and len(hit["q"]) >= MIN_REVIEW_FRAMES and best.action in ("block", "review"):
            matches.append(replace(best, action="review"))
        else:
            continue
        notes.append(f"{bank_name}/{entry_id}: {len(hit['q'])} of {seen} sampled frames matched "
                     f"({q_pct:.0f}%), {len(hit['b'])} of {total} banked frames ({c_pct:.0f}%), "
                     f"longest run {run}")
    decision, evidence = decide(matches)
    return decision, evidence, notes


def longest_run(frames: list[int], matched: set[int]) -> int:
    """Longest stretch of consecutive sampled frames (in time order) that all matched."""
    best = run = 0
    for ms in frames:
        run = run + 1 if ms in matched else 0
        best = max(best, run)
    return best


def percents(state: dict[str, Any], index: BankIndex, match: Match) -> dict[str, float]:
    hit = state["video"].get(f"{match.bank}\x1f{match.entry_id}")
    if hit is None:
        return {}
    total = index.video_frames.get((match.bank, match.entry_id), 0)
    return {"query_percent": round(100.0 * len(hit["q"]) / max(1, len(state["frames"])), 1),
            "compared_percent": round(100.0 * len(hit["b"]) / total, 1) if total else 0.0}
