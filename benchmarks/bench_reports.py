"""How long a transparency report over 1 million decisions takes to build, from the hourly
aggregate in a real redis-server; and what counting decisions into that aggregate costs.

The year's aggregate is synthesised directly as hourly counts (1M decisions spread over 8,760
hours with realistic shares of actions, banks, sources and dead letters), because producing a
million decisions through the pipeline would measure the pipeline, not the report. The counting
path (count_decision + the exactly-once Lua write) is timed separately on real decision dicts.

    python -m benchmarks.bench_reports [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import redis

from workers.reports import figures, html_report
from workers.reports.aggregate import Aggregate, Batch, count_decision, ttb_bucket
from workers.stack.embedded import EmbeddedRedis

START, END = date(2025, 12, 1), date(2026, 12, 1)  # a year
BANKS = (("ncmec-hashes", "csam"), ("stopncii", "ncii"), ("tat-terror", "terror"), ("reviewed-bad", "csam"))


def synthesise(agg: Aggregate, decisions: int, seed: int = 7) -> int:
    """Write a year of hourly counts totalling `decisions`; returns the hours written."""
    rng = np.random.default_rng(seed)
    first, last = figures.hour_range(START, END)
    hours = last - first
    per_hour = rng.multinomial(decisions, np.ones(hours) / hours)
    for i, n in enumerate(per_hour):
        n = int(n)
        block, review = int(rng.binomial(n, 0.02)), int(rng.binomial(n, 0.01))
        allow = n - block - review
        counts = {"decision|block|upload|image": block, "decision|review|upload|image": review,
                  "decision|allow|upload|image": allow}
        for action, k in (("block", block), ("review", review)):
            for (bank, label), m in zip(BANKS, rng.multinomial(k, [0.6, 0.2, 0.15, 0.05])):
                if m:
                    counts[f"match|{bank}|{label}|{action}"] = int(m)
        for ms in rng.lognormal(6.5, 0.5, size=block):
            key = f"ttb|{ttb_bucket(float(ms))}"
            counts[key] = counts.get(key, 0) + 1
        if rng.random() < 0.05:
            counts["dead|decode_failed"] = 1
        if review:
            counts["verdict|block|csam"] = review
            counts["verdict_on|review|block"] = review
        agg.add_counts(first + i, {k: v for k, v in counts.items() if v})
    return hours


def _decision(i: int) -> dict:
    block = i % 50 == 0
    return {"event_id": f"e-{i}", "content_id": f"c-{i}", "source": "upload", "media_type": "image",
            "decision": "block" if block else "allow", "decided_at_ms": 1_764_547_200_000 + i * 31_000,
            "latency_ms": {"total": 600 + i % 500},
            "matches": [{"bank": "ncmec-hashes", "label": "csam", "entry_id": "h-1", "signal": "pdq",
                         "distance": 4, "action": "block"}] if block else []}


def time_counting(agg: Aggregate, n: int) -> float:
    """Decisions per second through count_decision and the exactly-once write, 2,000 per batch."""
    msgs = [_decision(i) for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        batch = Batch()
        for j, d in enumerate(msgs[start:start + 2000]):
            batch.seen("moderation.decisions", 0, start + j)
            count_decision(batch, d)
        assert agg.write(batch)
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> str:
    decisions = 1_000_000
    with tempfile.TemporaryDirectory(prefix="vigil-bench-reports-") as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            client = redis.Redis.from_url(server.url)
            agg = Aggregate(client)
            t0 = time.perf_counter()
            hours = synthesise(agg, decisions)
            synth_s = time.perf_counter() - t0
            keys = client.dbsize()
            mem = client.info("memory")["used_memory"]
            runs = []
            for _ in range(1 if quick else 3):
                t0 = time.perf_counter()
                first, last = figures.hour_range(START, END)
                figs = figures.compute(agg.hours(first, last), START, END)
                t1 = time.perf_counter()
                html_report.write_report(figs, Path(tmp) / "out")
                t2 = time.perf_counter()
                runs.append((t1 - t0, t2 - t1))
            assert figs["totals"]["decisions"] == decisions, figs["totals"]
            page = (Path(tmp) / "out" / "report.html").stat().st_size
            client.flushdb()
            rate = time_counting(Aggregate(client), 20_000 if quick else 200_000)
        finally:
            server.stop()
    read_s = min(r[0] for r in runs)
    render_s = min(r[1] for r in runs)
    return "\n".join([
        "## Reports: a transparency report over 1 million decisions",
        "",
        f"A year ({START} to {END}) of hourly aggregate holding {decisions:,} decisions: {hours:,} hourly hashes, "
        f"{keys:,} Redis keys, {mem / 2**20:.1f} MiB used by Redis (synthesised in {synth_s:.1f} s).",
        "",
        "| step | seconds (best of %d) |" % len(runs),
        "|---|---|",
        f"| read the year's aggregate and compute every figure | {read_s:.2f} |",
        f"| render report.html (7 inline SVG charts), report.json, report.csv | {render_s:.2f} |",
        f"| **total: report over {decisions:,} decisions** | **{read_s + render_s:.2f}** |",
        "",
        f"report.html is {page / 1024:.0f} KiB. The build time does not grow with the number of decisions, only "
        f"with the hours in the period (and the distinct banks, labels and codes).",
        "",
        f"Counting decisions into the aggregate (count_decision + the exactly-once Lua write, batches of 2,000, "
        f"one process): **{rate:,.0f} decisions/s**.",
        "",
        "Reproduce: `python -m benchmarks --only reports` (or `python -m benchmarks.bench_reports`).",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    print(run(quick=p.parse_args().quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
