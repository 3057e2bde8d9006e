"""The review service's Prometheus metrics. Queue sizes and ages are read from the database at
scrape time (a collector), so they are true across restarts and with several service replicas;
counters and the age histogram count this process's verdicts."""
from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

AGE_BUCKETS = (60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)

VERDICTS = Counter("vigil_review_verdicts_total", "Reviewer verdicts recorded.", ["verdict", "label"])
CASE_AGE = Histogram("vigil_review_case_age_seconds", "Case age (first input to verdict) when confirmed or overturned.",
                     buckets=AGE_BUCKETS)
INPUTS = Counter("vigil_review_inputs_total", "Decisions and reports folded into cases.", ["kind", "created"])


class QueueCollector(Collector):
    """vigil_review_cases_open{priority}, vigil_review_oldest_case_age_seconds{priority} and the
    QA overturn ratio (overturned / decided QA samples of automatic blocks), from the database."""

    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from workers.review.cases import open_counts
        from workers.review.db import Case

        open_g = GaugeMetricFamily("vigil_review_cases_open", "Cases not yet decided (open or escalated).",
                                   labels=["priority"])
        oldest = GaugeMetricFamily("vigil_review_oldest_case_age_seconds",
                                   "Age of the oldest undecided case (0 when none).", labels=["priority"])
        qa = GaugeMetricFamily("vigil_review_qa_overturn_ratio",
                               "Share of decided QA samples of automatic blocks that reviewers overturned.")
        qa_n = GaugeMetricFamily("vigil_review_qa_decided", "QA samples of automatic blocks decided by reviewers.")
        now_ms = time.time() * 1000
        with self.sessions() as s:
            for name, (n, first) in open_counts(s).items():
                open_g.add_metric([name], n)
                oldest.add_metric([name], max(0.0, (now_ms - first) / 1000) if first else 0.0)
            rows = dict(s.execute(select(Case.verdict, func.count()).where(Case.kind == "qa", Case.status == "closed")
                                  .group_by(Case.verdict)).all())
        decided = sum(rows.values())
        qa.add_metric([], (rows.get("overturn", 0) / decided) if decided else 0.0)
        qa_n.add_metric([], decided)
        yield from (open_g, oldest, qa, qa_n)
