"""Inputs become cases: a `review` decision, a QA sample of a `block`, a report. One case per
content_id, and per exact file hash, so a viral item reported 5,000 times is one case with a
count; every input is kept as the case's history, and a replayed message (same event or report
id) changes nothing."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from workers.ops.logs import now_ms
from workers.review.db import PRIORITIES, Case, CaseInput

MAX_EVIDENCE = 50


@dataclass(frozen=True)
class Intake:
    """What one input says about one content item, before it is folded into a case."""

    input_id: str
    content_id: str
    source: str  # upload | live | report
    kind: str  # review | qa | report
    decision: str | None
    media_uri: str | None
    media_type: str | None
    sha256: str | None
    evidence: list[dict[str, Any]]
    at_ms: int
    signals: list[dict[str, Any]] | None = None
    reason: str | None = None
    reporter: str | None = None
    detail: dict[str, Any] | None = None

    @property
    def priority(self) -> int:
        if self.source == "live":
            return PRIORITIES["live"]
        return PRIORITIES["near_miss" if self.kind == "review" else self.kind]


def qa_sampled(event_id: str, rate: float) -> bool:
    """Whether an automatic block goes to QA review. A hash of the event id, not a random draw,
    so a replayed decision is sampled the same way."""
    if rate <= 0:
        return False
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) / 2**32 < rate


def from_decision(d: dict[str, Any], qa_rate: float) -> Intake | None:
    """A decision worth a person's time, or None (allows, unsampled blocks, live summaries)."""
    if "summary" in d:
        return None
    if d["decision"] == "review":
        kind = "review"
    elif d["decision"] == "block" and qa_sampled(d["event_id"], qa_rate):
        kind = "qa"
    else:
        return None
    return Intake(f"decision:{d['event_id']}", d["content_id"], d.get("source", "upload"), kind, d["decision"],
                  d.get("media_uri"), d.get("media_type"), None, list(d.get("matches", []))[:MAX_EVIDENCE],
                  int(d.get("decided_at_ms") or now_ms()),
                  detail={"event_id": d["event_id"], "bank_version": d.get("bank_version"),
                          "notes": d.get("notes", [])[:10]})


def store(sessions: sessionmaker, intake: Intake) -> tuple[int, bool]:
    """Fold one input into its case in one transaction; (case id, created). Safe to repeat."""
    for _ in range(3):  # two intakes racing to create the same case: the loser retries and folds
        try:
            with sessions.begin() as s:
                return _store(s, intake)
        except IntegrityError:
            continue
    with sessions.begin() as s:
        return _store(s, intake)


def _store(s: Session, it: Intake) -> tuple[int, bool]:
    seen = s.scalar(select(CaseInput.case_id).where(CaseInput.input_id == it.input_id))
    if seen is not None:
        return seen, False
    conds = [Case.content_id == it.content_id]
    if it.sha256:
        conds.append(Case.sha256 == it.sha256)
    case = s.scalars(select(Case).where(or_(*conds)).order_by(Case.id).limit(1)).first()
    now = now_ms()
    created = case is None
    if case is None:
        case = Case(content_id=it.content_id, sha256=it.sha256, source=it.source, kind=it.kind,
                    priority=it.priority, status="open", decision=it.decision, media_uri=it.media_uri,
                    media_type=it.media_type, evidence_json=json.dumps(it.evidence),
                    signals_json=json.dumps(it.signals) if it.signals is not None else None,
                    count=0, report_count=0, created_at_ms=it.at_ms, updated_at_ms=now)
        s.add(case)
        s.flush()
    case.count += 1
    case.updated_at_ms = now
    if it.kind == "report":
        case.report_count += 1
    if it.priority < case.priority:  # a live sighting or a near miss raises a reported item
        case.priority = it.priority
    if it.evidence and not case.evidence:
        case.evidence_json = json.dumps(it.evidence)
    case.media_uri = case.media_uri or it.media_uri
    case.media_type = case.media_type or it.media_type
    case.sha256 = case.sha256 or it.sha256
    if case.signals_json is None and it.signals is not None:
        case.signals_json = json.dumps(it.signals)
    s.add(CaseInput(input_id=it.input_id, case_id=case.id, kind="report" if it.kind == "report" else "decision",
                    at_ms=it.at_ms, decision=it.decision, reason=it.reason, reporter=it.reporter,
                    detail_json=json.dumps(it.detail or {})))
    return case.id, created


def history(s: Session, case_id: int, limit: int = 50) -> list[CaseInput]:
    """The newest inputs of a case (the page shows these; the count says how many in all)."""
    return list(s.scalars(select(CaseInput).where(CaseInput.case_id == case_id)
                          .order_by(CaseInput.at_ms.desc(), CaseInput.id.desc()).limit(limit)))


def open_counts(s: Session) -> dict[str, tuple[int, int | None]]:
    """priority name -> (open cases, oldest created_at_ms): the metrics' view of the queue."""
    from workers.review.db import PRIORITY_NAMES

    rows = s.execute(select(Case.priority, func.count(), func.min(Case.created_at_ms))
                     .where(Case.status != "closed").group_by(Case.priority)).all()
    out = {name: (0, None) for name in PRIORITIES}
    for prio, n, oldest in rows:
        out[PRIORITY_NAMES.get(prio, str(prio))] = (int(n), oldest)
    return out
