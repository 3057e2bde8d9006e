"""The review service's metrics (defined with the others in workers/ops/metrics.py). The queue
gauges are read from the database when Prometheus scrapes, so they are true after a restart and
with several replicas; counters and the age histogram count this process's verdicts."""
from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from workers.ops import metrics as m

VERDICTS = m.REVIEW_VERDICTS
CASE_AGE = m.REVIEW_CASE_AGE
INPUTS = m.REVIEW_INPUTS


def refresh(sessions: sessionmaker) -> None:
    """Set vigil_review_cases_open{priority}, the oldest case's age per priority, and the QA
    overturn ratio (overturned / decided QA samples of automatic blocks) from the database."""
    from workers.review.cases import open_counts
    from workers.review.db import Case

    now_ms = time.time() * 1000
    with sessions() as s:
        for name, (n, first) in open_counts(s).items():
            m.REVIEW_CASES_OPEN.labels(name).set(n)
            m.REVIEW_OLDEST_AGE.labels(name).set(max(0.0, (now_ms - first) / 1000) if first else 0.0)
        rows = dict(s.execute(select(Case.verdict, func.count()).where(Case.kind == "qa", Case.status == "closed")
                              .group_by(Case.verdict)).all())
    decided = sum(rows.values())
    m.REVIEW_QA_OVERTURN.set(rows.get("overturn", 0) / decided if decided else 0.0)
    m.REVIEW_QA_DECIDED.set(decided)
