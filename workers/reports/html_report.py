"""report.html: one self-contained page (inline SVG charts, inline CSS, no scripts, no fetches).

The page's Content-Security-Policy forbids every network load, so a browser opening it offline
shows exactly what a browser online would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from workers.reports import charts, figures as figs

TOTALS = (
    ("decisions", "automatic decisions"),
    ("decisions_block", "blocked"),
    ("decisions_review", "sent to review"),
    ("decisions_allow", "allowed"),
    ("human_decisions", "human (reviewer) decisions"),
    ("matched_decisions", "decisions with a bank match"),
    ("live_streams_terminated", "live streams terminated"),
    ("median_time_to_block_ms", "median time from upload to block (ms)"),
    ("automatic_blocks_reviewed", "automatic blocks reviewed"),
    ("overturn_rate_of_automatic_blocks", "overturn rate of automatic blocks"),
    ("dead_letters", "dead letters"),
    ("reports_received", "user reports received"),
)
CAPTIONS = (
    ("decisions_per_day", "Decisions per day by action"),
    ("matches_by_bank_and_label", "Matches by bank and label"),
    ("decisions_by_media_type", "Decisions by media type"),
    ("decisions_by_source", "Decisions by source"),
    ("automated_versus_human", "Automated versus human decisions"),
    ("review_outcomes", "Review outcomes"),
    ("dead_letters_by_code", "Dead letters by code"),
)


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key.endswith("_rate_of_automatic_blocks"):
        return f"{value:.1%}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def render(figures: dict[str, Any]) -> str:
    env = Environment(loader=PackageLoader("workers.reports", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      keep_trailing_newline=True)
    return env.get_template("report.html.j2").render(f=figures, charts=charts.all_charts(figures),
                                                     totals=TOTALS, captions=CAPTIONS, fmt=_fmt)


def write_report(figures: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.html, report.json and report.csv of the same figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "report.html", "json": out_dir / "report.json", "csv": out_dir / "report.csv"}
    paths["html"].write_text(render(figures), encoding="utf-8")
    paths["json"].write_text(figs.to_json(figures), encoding="utf-8")
    paths["csv"].write_text(figs.to_csv(figures), encoding="utf-8")
    return paths
