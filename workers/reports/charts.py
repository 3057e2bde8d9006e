"""The transparency report's charts as inline SVG (matplotlib, Agg-free SVG backend).

Inline SVG keeps report.html one self-contained file that opens offline; text stays real <text>
(svg.fonttype none) so the numbers on the bars can be read, searched and checked by a test, and
a fixed hash salt and no date make the same figures give the same bytes.
"""
from __future__ import annotations

import io
import re
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "vigil", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})
COLOURS = {"block": "#c0392b", "review": "#e67e22", "allow": "#27ae60"}


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF boilerplate, not content


def _labelled_bars(ax, labels: list[str], values: list[int], colour: str = "#34495e",
                   horizontal: bool = False) -> None:
    bars = ax.barh(labels, values, color=colour) if horizontal else ax.bar(labels, values, color=colour)
    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))  # counts
    if not any(values):
        (ax.set_xlim if horizontal else ax.set_ylim)(0, 1)
        ax.text(0.5, 0.5, "none in this period", transform=ax.transAxes, ha="center", color="#777")
        return
    ax.bar_label(bars, labels=[str(v) for v in values], padding=2)


def decisions_per_day(figures: dict[str, Any]) -> str:
    """Stacked bars per day with their numbers; past a month, stacked areas labelled by month (a
    year of 365 x 3 labelled bars took matplotlib ~40 s to lay out)."""
    rows = figures["decisions_per_day"]
    long = len(rows) > 31
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(8, 2.8))
    if long:  # one polygon per action: 1,095 bar patches took matplotlib seconds to add
        ax.stackplot(x, *[[r[a] for r in rows] for a in ("block", "review", "allow")],
                     colors=[COLOURS[a] for a in ("block", "review", "allow")], labels=["block", "review", "allow"])
    else:
        bottom = [0] * len(rows)
        for action in ("block", "review", "allow"):
            vals = [r[action] for r in rows]
            bars = ax.bar(x, vals, bottom=bottom, color=COLOURS[action], label=action)
            ax.bar_label(bars, labels=[str(v) if v else "" for v in vals], label_type="center", fontsize=7)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ticks = [i for i, r in enumerate(rows) if not long or r["day"].endswith("-01")]
    ax.set_xticks(ticks, [rows[i]["day"][:7] if long else rows[i]["day"][5:] for i in ticks])
    ax.set_ylabel("decisions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, ncols=3)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    return _svg(fig)


def matches_by_bank(figures: dict[str, Any]) -> str:
    rows = figures["matches_by_bank_and_label"]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(1, len(rows))))
    _labelled_bars(ax, [f"{r['bank']} ({r['label']})" for r in rows], [r["total"] for r in rows],
                   colour=COLOURS["block"], horizontal=True)
    ax.set_xlabel("decisions with a match")
    return _svg(fig)


def counts(mapping: dict[str, int], xlabel: str = "", colour: str = "#34495e") -> str:
    fig, ax = plt.subplots(figsize=(4.5, 2.4))
    labels = list(mapping) or ["(none)"]
    _labelled_bars(ax, labels, [mapping[k] for k in mapping] or [0], colour=colour)
    if xlabel:
        ax.set_xlabel(xlabel)
    return _svg(fig)


def all_charts(figures: dict[str, Any]) -> dict[str, str]:
    """Chart name -> inline SVG; the names are the figures' keys in report.json."""
    outcomes = {f"{r['action']} ({r['label']})": r["count"] for r in figures["review_outcomes"]}
    return {
        "decisions_per_day": decisions_per_day(figures),
        "matches_by_bank_and_label": matches_by_bank(figures),
        "decisions_by_media_type": counts(figures["decisions_by_media_type"], "media type"),
        "decisions_by_source": counts(figures["decisions_by_source"], "source"),
        "automated_versus_human": counts(figures["automated_versus_human"], "who decided"),
        "review_outcomes": counts(outcomes, "reviewer verdict", colour=COLOURS["review"]),
        "dead_letters_by_code": counts(figures["dead_letters_by_code"], "dead-letter code", colour="#7f8c8d"),
    }
