"""The queue: open cases by priority then age (reports by count), and leases. A claim is one
conditional UPDATE, so two reviewers racing for a case cannot both win on SQLite or PostgreSQL;
a lease that runs out returns the case to the queue without anyone releasing it."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from workers.ops.logs import now_ms
from workers.review.db import Audit, Case


def listing(s: Session, role: str, limit: int = 100) -> list[Case]:
    """What a reviewer sees: open cases (leads also see escalated ones), best first."""
    statuses = ["open", "escalated"] if role == "lead" else ["open"]
    q = (select(Case).where(Case.status.in_(statuses))
         .order_by(Case.priority, Case.report_count.desc(), Case.created_at_ms, Case.id).limit(limit))
    return list(s.scalars(q))


def held_by_other(case: Case, reviewer: str, at_ms: int | None = None) -> str | None:
    """Who else holds the case's lease right now, if anyone."""
    now = now_ms() if at_ms is None else at_ms
    if case.lease_owner and case.lease_owner != reviewer and (case.lease_until_ms or 0) > now:
        return case.lease_owner
    return None


def holds(case: Case, reviewer: str) -> bool:
    return case.lease_owner == reviewer and (case.lease_until_ms or 0) > now_ms()


def claim(sessions: sessionmaker, case_id: int, reviewer: str, role: str, lease_s: float) -> bool:
    """Take (or renew) the lease on a case. False when someone else holds it, it is closed, or it
    is escalated and the caller is not a lead."""
    now = now_ms()
    statuses = ["open", "escalated"] if role == "lead" else ["open"]
    with sessions.begin() as s:
        res = s.execute(update(Case).where(
            Case.id == case_id, Case.status.in_(statuses),
            or_(Case.lease_owner.is_(None), Case.lease_owner == reviewer, Case.lease_until_ms <= now))
            .values(lease_owner=reviewer, lease_until_ms=now + int(lease_s * 1000)))
        won = res.rowcount == 1
        if won:
            audit(s, reviewer, "claim", case_id, {"lease_s": lease_s})
        return won


def release(case: Case) -> None:
    case.lease_owner, case.lease_until_ms = None, None


def next_unclaimed(sessions: sessionmaker, reviewer: str, role: str, lease_s: float) -> int | None:
    """Claim the best case nobody holds: the page's "next case" button."""
    now = now_ms()
    with sessions() as s:
        statuses = ["open", "escalated"] if role == "lead" else ["open"]
        ids = s.scalars(select(Case.id).where(
            Case.status.in_(statuses),
            or_(Case.lease_owner.is_(None), Case.lease_owner == reviewer, and_(Case.lease_until_ms <= now)))
            .order_by(Case.priority, Case.report_count.desc(), Case.created_at_ms, Case.id).limit(20)).all()
    for case_id in ids:
        if claim(sessions, case_id, reviewer, role, lease_s):
            return case_id
    return None


def audit(s: Session, actor: str, what: str, case_id: int | None = None, detail: dict[str, Any] | None = None) -> None:
    s.add(Audit(at_ms=now_ms(), actor=actor, what=what, case_id=case_id, detail_json=json.dumps(detail or {})))


def revealed(s: Session, case_id: int, reviewer: str) -> bool:
    """A reviewer sees a case's media unblurred only after an audited reveal."""
    return s.scalar(select(Audit.id).where(Audit.case_id == case_id, Audit.actor == reviewer,
                                           Audit.what == "reveal").limit(1)) is not None
