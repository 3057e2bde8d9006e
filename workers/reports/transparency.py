"""Building the transparency report end to end: catch the aggregate up, compute, write. One
function, so `vigil report transparency` and `vigil demo --report-dir` make the same files."""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import redis

from workers.reports import figures, html_report
from workers.reports.aggregate import Aggregate
from workers.reports.consumer import ReportsConsumer
from workers.settings import Settings


def build(settings: Settings, client: redis.Redis, start: date, end: date, out_dir: Path,
          catch_up: bool = True) -> tuple[dict[str, Any], dict[str, Path]]:
    """(figures, {html, json, csv: path}) for [start, end)."""
    if catch_up:
        ReportsConsumer(settings, client).catch_up()
    first, last = figures.hour_range(start, end)
    figs = figures.compute(Aggregate(client).hours(first, last), start, end)
    return figs, html_report.write_report(figs, out_dir)
