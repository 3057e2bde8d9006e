"""Evidence to decision. Kept apart from matching so the rules are easy to read and to test.

- An `allow` bank (allowlist) match on a frame suppresses every other bank's matches on that frame:
  logos, colour bars and black frames are known and benign.
- Otherwise the strongest action among the remaining matches wins: block > review.
- No match: allow.
"""
from __future__ import annotations

from workers.index.matching import Match

STRENGTH = {"block": 2, "review": 1, "allow": 0}


def decide(matches: list[Match]) -> tuple[str, list[Match]]:
    """Return the decision and the evidence for it, strongest and closest first."""
    allowed_frames = {m.frame_ms for m in matches if m.action == "allow"}
    effective = [m for m in matches if m.action != "allow" and m.frame_ms not in allowed_frames]
    if not effective:
        # the allowlist hits are the evidence for allowing; the matches they suppressed are not
        return "allow", sorted((m for m in matches if m.action == "allow"), key=_order)
    decision = max(effective, key=lambda m: STRENGTH[m.action]).action
    return decision, sorted(effective, key=_order)


def _order(m: Match) -> tuple:
    return (-STRENGTH[m.action], m.distance / max(1, _bits(m.signal)), m.bank, m.entry_id)


def _bits(signal: str) -> int:
    return {"pdq": 256, "phash": 64, "dhash": 64}.get(signal, 1)
