"""The transparency figures over a period, from the hourly aggregate; and their JSON and CSV.

One function computes every figure, and the HTML, the JSON and the CSV are all renderings of its
result, so the three files can never disagree.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable

from workers.reports.aggregate import HOUR_MS, ttb_value

ACTIONS = ("block", "review", "allow")
SOURCES = ("upload", "live", "api", "retro")
MEDIA_TYPES = ("image", "video")


def day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def hour_range(start: date, end: date) -> tuple[int, int]:
    """[first, last) hours of the period; end is exclusive, like --to."""
    return day_ms(start) // HOUR_MS, day_ms(end) // HOUR_MS


def compute(hours: Iterable[tuple[int, dict[str, int]]], start: date, end: date) -> dict[str, Any]:
    """Every figure of the transparency report, from (hour, counts) pairs of the period."""
    per_day: dict[str, dict[str, int]] = {}
    d = start
    while d < end:
        per_day[d.isoformat()] = {a: 0 for a in ACTIONS}
        d += timedelta(days=1)
    sums: dict[str, int] = defaultdict(int)
    for hour, counts in hours:
        day = datetime.fromtimestamp(hour * 3600, timezone.utc).date().isoformat()
        for name, n in counts.items():
            sums[name] += n
            if name.startswith("decision|") and day in per_day:
                per_day[day][name.split("|")[1]] += n
    by_action = {a: 0 for a in ACTIONS}
    by_source = {s: 0 for s in SOURCES}
    by_media = {m: 0 for m in MEDIA_TYPES}
    matches: dict[tuple[str, str], dict[str, int]] = {}
    ttb: dict[int, int] = {}
    dead, reports, verdicts, on_block = {}, {}, {}, {}
    unreadable = 0
    for name, n in sums.items():
        kind, *parts = name.split("|")
        if kind == "decision":
            action, source, media = parts
            by_action[action] = by_action.get(action, 0) + n
            by_source[source] = by_source.get(source, 0) + n
            by_media[media] = by_media.get(media, 0) + n
        elif kind == "match":
            bank, label, action = parts
            row = matches.setdefault((bank, label), {a: 0 for a in ACTIONS})
            row[action] = row.get(action, 0) + n
        elif kind == "ttb":
            ttb[int(parts[0])] = n
        elif kind == "dead":
            dead[parts[0]] = n
        elif kind == "report":
            reports[parts[0]] = n
        elif kind == "verdict":
            verdicts[f"{parts[0]}|{parts[1]}"] = n
        elif kind == "verdict_on" and parts[0] == "block":
            on_block[parts[1]] = on_block.get(parts[1], 0) + n
        elif kind == "unreadable":
            unreadable += n
    decisions = sum(by_action.values())
    human = sum(verdicts.values())
    reviewed_blocks = sum(on_block.values())
    overturned = on_block.get("allow", 0)
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat(), "to_is_exclusive": True, "timezone": "UTC"},
        "totals": {
            "decisions": decisions,
            **{f"decisions_{a}": by_action[a] for a in ACTIONS},
            "automated_decisions": decisions,
            "human_decisions": human,
            "matched_decisions": sum(sum(r.values()) for r in matches.values()),
            "live_streams_terminated": sums.get("live_terminated", 0),
            "live_streams_ended": sums.get("live_streams_ended", 0),
            "dead_letters": sum(dead.values()),
            "reports_received": sum(reports.values()),
            "median_time_to_block_ms": _median(ttb),
            "automatic_blocks_reviewed": reviewed_blocks,
            "automatic_blocks_overturned": overturned,
            "overturn_rate_of_automatic_blocks": round(overturned / reviewed_blocks, 4) if reviewed_blocks else None,
            "unreadable_messages": unreadable,
        },
        "decisions_per_day": [{"day": day, **counts} for day, counts in per_day.items()],
        "matches_by_bank_and_label": [{"bank": b, "label": lab, **row, "total": sum(row.values())}
                                      for (b, lab), row in sorted(matches.items())],
        "decisions_by_media_type": by_media,
        "decisions_by_source": by_source,
        "automated_versus_human": {"automated": decisions, "human": human},
        "review_outcomes": [{"action": k.split("|")[0], "label": k.split("|")[1], "count": n}
                            for k, n in sorted(verdicts.items())],
        "dead_letters_by_code": dict(sorted(dead.items())),
        "reports_by_reason": dict(sorted(reports.items())),
    }


def _median(buckets: dict[int, int]) -> float | None:
    """The median of the log-bucketed times (each bucket ~12% wide, see aggregate.TTB_STEPS)."""
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for b in sorted(buckets):
        seen += buckets[b]
        if seen * 2 >= total:
            return round(ttb_value(b), 1)
    return None  # unreachable


def to_json(figures: dict[str, Any]) -> str:
    return json.dumps(figures, indent=2, sort_keys=False) + "\n"


def to_csv(figures: dict[str, Any]) -> str:
    """One row per number: figure, key, value (a shape every spreadsheet and tool reads)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["figure", "key", "value"])
    for k, v in figures["period"].items():
        w.writerow(["period", k, v])
    for k, v in figures["totals"].items():
        w.writerow(["totals", k, "" if v is None else v])
    for row in figures["decisions_per_day"]:
        for a in ACTIONS:
            w.writerow(["decisions_per_day", f"{row['day']}/{a}", row[a]])
    for row in figures["matches_by_bank_and_label"]:
        for a in (*ACTIONS, "total"):
            w.writerow(["matches_by_bank_and_label", f"{row['bank']}/{row['label']}/{a}", row[a]])
    for fig in ("decisions_by_media_type", "decisions_by_source", "automated_versus_human",
                "dead_letters_by_code", "reports_by_reason"):
        for k, v in figures[fig].items():
            w.writerow([fig, k, v])
    for row in figures["review_outcomes"]:
        w.writerow(["review_outcomes", f"{row['action']}/{row['label']}", row["count"]])
    return out.getvalue()
