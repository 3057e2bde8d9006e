"""`vigil status`: a live terminal view of running workers, read from their metrics endpoints.

No discovery and no Prometheus needed: point it at each worker's /metrics URL. Rates come from
two scrapes `--interval` apart, so what it shows is what is happening now, not since start.
Exit codes: 0 ok; 3 no target reachable.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from workers.ops.promtext import histogram_quantile

EXIT_OK, EXIT_UNAVAILABLE = 0, 3
LATENCY = "vigil_decision_latency_seconds"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One target at one moment: its samples and readiness, or why it could not be read."""
    url: str
    at: float  # time.monotonic()
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    ready: bool | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), v) for (n, labels), v in self.samples.items() if n == name]

    def value(self, name: str) -> float | None:
        s = self.series(name)
        return s[0][1] if s else None

    @property
    def kind(self) -> str:
        # Every worker imports workers.ops.metrics, so unlabelled gauges (bank version...) exist on
        # hashers too; the readiness checks say which kind a target really is.
        if "bank_loaded" in self.checks:
            return "matcher"
        workers = {lab.get("worker") for lab, _ in self.series("vigil_events_total")}
        if len(workers) == 1:
            return workers.pop() or "unknown"
        return "hasher" if self.checks else "unknown"


def normalise(url: str) -> str:
    """`host:port`, `http://host:port` or `.../metrics` -> `http://host:port` (no trailing path)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    for suffix in ("/metrics", "/readyz", "/healthz"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def scrape(url: str, timeout: float = 2.0) -> Scrape:
    base = normalise(url)
    out = Scrape(base, time.monotonic())
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    except (OSError, ValueError) as exc:
        out.error = str(getattr(exc, "reason", exc))
        return out
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # 503 carries the failing checks
        try:
            body = json.load(exc)
        except ValueError:
            body = {"ready": False}
    except (OSError, ValueError):
        body = {"ready": False}
    out.ready = bool(body.get("ready"))
    out.checks = {str(k): bool(v) for k, v in body.get("checks", {}).items()}
    return out


def _delta(before: Scrape | None, after: Scrape, name: str, key: str) -> dict[str, float]:
    """Increase of a counter between two scrapes, summed by one label. A counter that went down
    was reset by a restart, so its whole current value is the increase (as Prometheus does)."""
    prev = {labels: v for (n, labels), v in (before.samples.items() if before and before.reachable else ())
            if n == name}
    out: dict[str, float] = {}
    for (n, labels), v in after.samples.items():
        if n != name:
            continue
        inc = v - prev.get(labels, 0.0)
        if inc < 0:
            inc = v
        label = dict(labels).get(key, "")
        out[label] = out.get(label, 0.0) + inc
    return out


def _add(into: dict[str, float], more: dict[str, float]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0.0) + v


def _buckets(s: Scrape, **labels: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for lab, v in s.series(LATENCY + "_bucket"):
        if all(lab.get(k) == want for k, want in labels.items()):
            le = float(lab["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def _quantiles(buckets: dict[float, float]) -> dict[str, float | None]:
    """p50/p99 via workers.ops.promtext.histogram_quantile, so every vigil view interpolates alike."""
    count = buckets.get(math.inf, 0.0)
    if count <= 0:
        return {"count": 0, "p50": None, "p99": None}
    lines = ["# TYPE h histogram"]
    lines += [f'h_bucket{{le="{"+Inf" if math.isinf(le) else repr(le)}"}} {c}' for le, c in sorted(buckets.items())]
    lines += [f"h_count {count}", "h_sum 0"]
    text = "\n".join(lines) + "\n"

    def q(v: float) -> float | None:
        x = histogram_quantile(text, "h", v)
        return None if math.isnan(x) else round(x, 6)
    return {"count": int(count), "p50": q(0.50), "p99": q(0.99)}


def _latency(before: list[Scrape], after: list[Scrape]) -> dict[str, Any]:
    """Quantiles over the decisions made between the scrapes; since start if there were none."""
    prev = {s.url: s for s in before if s.reachable}
    sources = sorted({lab.get("source", "") for s in after for lab, _ in s.series(LATENCY + "_bucket")})

    def merged(window: bool, **labels: str) -> dict[float, float]:
        total: dict[float, float] = {}
        for s in after:
            if not s.reachable:
                continue
            now = _buckets(s, **labels)
            old = _buckets(prev[s.url], **labels) if window and s.url in prev else {}
            for le, c in now.items():
                inc = c - old.get(le, 0.0)
                total[le] = total.get(le, 0.0) + (c if inc < 0 else inc)
        return total

    window = _quantiles(merged(True)) if before else {"count": 0}
    use_window = window["count"] > 0
    out: dict[str, Any] = {"window": "interval" if use_window else "since_start",
                           **(window if use_window else _quantiles(merged(False)))}
    out["by_source"] = {src: _quantiles(merged(use_window, source=src)) for src in sources}
    return out


def snapshot(before: list[Scrape], after: list[Scrape]) -> dict[str, Any]:
    """Everything `vigil status` shows, as plain data (what --json prints)."""
    prev = {s.url: s for s in before}
    seconds = [s.at - prev[s.url].at for s in after if s.url in prev and s.reachable and prev[s.url].reachable]
    dt = max(seconds) if seconds else 0.0
    events, decisions, frames, dead_inc = {}, {}, {}, {}
    dead_total: dict[str, float] = {}
    lag: dict[tuple[str, str], dict[str, float]] = {}
    matchers, targets = [], []
    for s in after:
        targets.append({"url": s.url, "kind": s.kind if s.reachable else "unknown", "reachable": s.reachable,
                        "ready": s.ready, "checks": s.checks, "error": s.error})
        if not s.reachable:
            continue
        p = prev.get(s.url)
        _add(events, _delta(p, s, "vigil_events_total", "topic"))
        _add(decisions, _delta(p, s, "vigil_decisions_total", "decision"))
        _add(frames, _delta(p, s, "vigil_frames_hashed_total", "media_type"))
        _add(dead_inc, _delta(p, s, "vigil_dead_letters_total", "code"))
        _add(dead_total, {lab.get("code", ""): v for lab, v in s.series("vigil_dead_letters_total")})
        for lab, v in s.series("vigil_consumer_lag_messages"):
            parts = lag.setdefault((lab.get("group", ""), lab.get("topic", "")), {})
            parts[lab.get("partition", "")] = max(parts.get(lab.get("partition", ""), 0.0), v)
        if s.kind == "matcher":
            sync = s.value("vigil_bank_last_sync_timestamp_seconds") or 0.0
            matchers.append({"url": s.url, "version": int(s.value("vigil_bank_version") or 0),
                             "entries": {lab.get("signal", ""): int(v) for lab, v in s.series("vigil_bank_entries")},
                             "sync_age_s": round(time.time() - sync, 1) if sync else None})

    def per_s(d: dict[str, float]) -> dict[str, float] | None:
        return {k: round(v / dt, 3) for k, v in sorted(d.items())} if dt > 0 else None

    newest = max(matchers, key=lambda m: m["version"], default=None)
    return {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "interval_s": round(dt, 3),
        "reachable": sum(t["reachable"] for t in targets),
        "targets": targets,
        "events_per_s": per_s(events),
        "decisions_per_s": per_s(decisions),
        "frames_per_s": per_s(frames),
        "decision_latency_s": _latency(before, after),
        "consumer_lag": [{"group": g, "topic": t, "lag": int(sum(parts.values())), "partitions": len(parts)}
                         for (g, t), parts in sorted(lag.items())],
        "dead_letters": {"total": {k: int(v) for k, v in sorted(dead_total.items())}, "per_s": per_s(dead_inc)},
        "bank": {"version": newest["version"] if newest else None, "entries": newest["entries"] if newest else {},
                 "matchers": matchers},
    }


def collect(urls: list[str], interval: float) -> dict[str, Any]:
    """Two scrapes `interval` apart, as one snapshot."""
    before = [scrape(u) for u in urls]
    time.sleep(max(0.0, interval))
    return snapshot(before, [scrape(u) for u in urls])


# -- rendering ---------------------------------------------------------------------------------
def _ms(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:.0f} ms"


def _rates(d: dict[str, float] | None) -> str:
    if d is None:
        return "(first scrape)"
    return ", ".join(f"{k} {v:.1f}/s" for k, v in d.items()) or "0/s"


def render(snap: dict[str, Any]):
    """A rich renderable of one snapshot."""
    from rich.console import Group
    from rich.table import Table

    summary = Table(title=f"vigil status  {snap['at']}  (rates over {snap['interval_s']:.1f}s)",
                    show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("events", _rates(snap["events_per_s"]))
    summary.add_row("decisions", _rates(snap["decisions_per_s"]))
    summary.add_row("frames hashed", _rates(snap["frames_per_s"]))
    lat = snap["decision_latency_s"]
    where = "last interval" if lat["window"] == "interval" else "since start"
    summary.add_row("decision latency", f"p50 {_ms(lat['p50'])}  p99 {_ms(lat['p99'])}  "
                                        f"({lat['count']} decisions, {where})")
    for src, q in lat["by_source"].items():
        summary.add_row(f"  {src}", f"p50 {_ms(q['p50'])}  p99 {_ms(q['p99'])}  ({q['count']})")
    summary.add_row("consumer lag", ", ".join(f"{r['group']} {r['topic']}: {r['lag']}" for r in snap["consumer_lag"])
                    or "-")
    dl = snap["dead_letters"]
    summary.add_row("dead letters", ", ".join(f"{k} {v}" + (f" ({dl['per_s'].get(k, 0):.1f}/s)" if dl["per_s"] else "")
                                              for k, v in dl["total"].items()) or "none")
    bank = snap["bank"]
    entries = ", ".join(f"{k} {v}" for k, v in sorted(bank["entries"].items()) if v) or "empty"
    summary.add_row("bank", f"version {bank['version']}, entries by signal: {entries}"
                    if bank["version"] is not None else "no matcher reachable")

    workers = Table(title="workers", title_justify="left")
    for col in ("target", "kind", "ready", "detail"):
        workers.add_column(col)
    for t in snap["targets"]:
        if not t["reachable"]:
            workers.add_row(t["url"], "-", "[red]unreachable[/]", t["error"] or "")
            continue
        failing = [k for k, ok in t["checks"].items() if not ok]
        workers.add_row(t["url"], t["kind"], "[green]ready[/]" if t["ready"] else "[red]not ready[/]",
                        "failing: " + ", ".join(failing) if failing else "")
    return Group(summary, workers)


def cmd_status(args: argparse.Namespace) -> int:
    urls = [normalise(u) for u in args.metrics]
    if args.json or args.once:
        snap = collect(urls, args.interval)
        if args.json:
            print(json.dumps(snap, indent=2, default=lambda v: None))
        else:
            from rich.console import Console

            Console().print(render(snap))
        return EXIT_OK if snap["reachable"] else EXIT_UNAVAILABLE

    from rich.console import Console
    from rich.live import Live

    before = [scrape(u) for u in urls]
    if not any(s.reachable for s in before):
        Console(stderr=True).print(f"vigil: no target reachable: {', '.join(urls)}")
        return EXIT_UNAVAILABLE
    with Live(render(snapshot([], before)), console=Console(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(args.interval)
                after = [scrape(u) for u in urls]
                live.update(render(snapshot(before, after)), refresh=True)
                before = after
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def add_parser(nouns_subparsers: Any) -> None:
    """Register `vigil status` on the CLI's noun subparsers."""
    p = nouns_subparsers.add_parser(
        "status", help="live view of running workers from their metrics endpoints",
        description="Scrapes each worker's /metrics and /readyz every --interval seconds and shows throughput, "
                    "decision latency (p50/p99), consumer lag, dead letters, the bank version and worker health. "
                    "Exit codes: 0 ok, 3 no target reachable.")
    p.add_argument("--metrics", action="append", required=True, metavar="URL",
                   help="a worker's metrics URL (http://host:port/metrics or host:port); repeatable")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes (default 2)")
    p.add_argument("--once", action="store_true", help="print one snapshot (two scrapes --interval apart) and exit")
    p.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit (implies --once)")
    p.set_defaults(func=cmd_status)


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.ops.status`, until the CLI registers the noun."""
    parser = argparse.ArgumentParser(prog="vigil")
    add_parser(parser.add_subparsers(dest="noun", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
