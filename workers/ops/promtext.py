"""Reading Prometheus text exposition: quantiles from histogram buckets, as histogram_quantile does."""
from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families


def buckets(text: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) summed over series whose labels include `labels`."""
    totals: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != name + "_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            totals[le] = totals.get(le, 0.0) + sample.value
    return sorted(totals.items())


def histogram_quantile(text: str, name: str, q: float, **labels: str) -> float:
    """Linear interpolation within the bucket holding the q-th observation; nan without data."""
    series = buckets(text, name, **labels)
    if not series or series[-1][1] == 0:
        return math.nan
    rank = q * series[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in series:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound
