"""The joint PDQ + pHash rule: a query frame matches an entry when both signals are near it at once,
each a little past its own threshold. A watermark or caption moves PDQ and pHash together, while an
unrelated photo is far on at least one of them (benchmarks/bench_accuracy.py).

Why the candidates come from pHash alone: searching PDQ out to the joint limit (56 of 256 bits)
defeats multi-index hashing, and the search fell back to a scan (3.35 against 0.10 ms a query on
a 300k-entry bank), while pHash out to 12 of 64 bits is still a probe of a few thousand rows. So
only pHash is searched that far; each candidate's PDQ distance is then computed directly, against
the entry's PDQ of the same stored version (`entry_variant`, or the same banked video frame), from
the query's PDQ of the same query variant and frame. The evidence therefore names one (query
variant, entry version) pair, and both distances are the ones the rule compared with its limits.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from workers.index.mih import MultiIndexHamming, to_words
from workers.signals import PERCEPTUAL_BITS, SignalValue

if TYPE_CHECKING:
    from workers.index.matching import Match

RULE = "joint"


@dataclass(frozen=True)
class JointLimits:
    """Both distances must be within these for the same (query variant, entry version)."""

    pdq: int
    phash: int


@dataclass(frozen=True)
class NearHit:
    """A pHash hit past its bank's own threshold but within the joint limit: a candidate."""

    match: "Match"  # the pHash evidence, already with rule='joint' and the joint threshold
    handle: int  # the entry's handle in the index
    row_frame: int  # the index row's frame: the banked video frame or the stored version's code


def confirm(near: list[NearHit], pdq_queries: list[SignalValue], pdq_index: MultiIndexHamming,
            limits: JointLimits, matched: set[tuple]) -> list["Match"]:
    """The (PDQ, pHash) evidence pairs of the near hits whose PDQ is also within the joint limit.

    `pdq_queries` are the query's usable PDQ values (the quality gate applies to the rule too);
    `matched` holds the (bank, entry, query frame)s some signal matched alone, which need no rule.
    One pair per (bank, entry, query frame): the one with the smaller sum of relative distances."""
    words = PERCEPTUAL_BITS["pdq"] // 64
    by_query = {(sv.frame_ms, sv.variant): sv for sv in pdq_queries}
    codes: dict[tuple, np.ndarray] = {}
    best: dict[tuple, tuple[float, "Match", "Match"]] = {}
    for hit in near:
        m = hit.match
        key = (m.bank, m.entry_id, m.frame_ms)
        if key in matched:
            continue
        sv = by_query.get((m.frame_ms, m.variant))
        if sv is None:
            continue  # the query's PDQ of this variant is unusable (flat) or absent
        q = codes.get((m.frame_ms, m.variant))
        if q is None:
            q = codes[(m.frame_ms, m.variant)] = to_words(np.frombuffer(bytes.fromhex(sv.value), np.uint8), words)[0]
        d = pdq_index.key_distance(hit.handle, hit.row_frame, q)
        if d < 0 or d > limits.pdq:
            continue
        score = d / limits.pdq + m.distance / limits.phash
        if key not in best or score < best[key][0]:
            pdq = replace(m, signal="pdq", distance=d, threshold=limits.pdq, quality=sv.quality)
            best[key] = (score, pdq, m)
    return [m for _, pdq, phash in best.values() for m in (pdq, phash)]
