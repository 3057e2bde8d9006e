"""`vigil bank list|stats|export`: what the banks hold, read from counters Redis keeps, and which
bank version each live matcher has applied."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from workers.cli.common import EXIT_OK, print_json, store_from


def _bank_rows(store, count_disabled: bool = False) -> list[dict[str, Any]]:
    """Per bank, from counters Redis keeps (HLEN), not by reading every entry: entries, enabled
    entries per signal (the packed codes hashes), and how far its snapshot lags the change stream.
    `disabled` needs a scan of every entry's JSON, so it is counted only when asked."""
    from workers.bank.store import codes_key, entries_key
    from workers.signals import ALL_SIGNALS

    version, now_ms = store.version(), time.time() * 1000
    rows = []
    for name, bank in sorted(store.banks().items()):
        codes = store.has_codes(name)
        per_signal = {s: n for s in ALL_SIGNALS if (n := int(store.r.hlen(codes_key(name, s))))} if codes else None
        snaps = {s: {"version": m.version, "behind": max(version - m.version, 0),
                     "age_s": round((now_ms - m.at_ms) / 1000, 1), "entries": m.entries, "rows": m.rows,
                     "bytes": m.bytes} for s, m in store.snapshot_metas(name).items()}
        disabled = None
        if count_disabled:
            disabled = sum(e.disabled for e in store.iter_entries(name))
        rows.append({"bank": name, "action": bank.action, "enabled": bank.enabled, "label": bank.label,
                     "entries": store.entry_count(name), "disabled": disabled, "packed_codes": codes,
                     "per_signal": per_signal, "snapshot": snaps,
                     "snapshot_behind": max((x["behind"] for x in snaps.values()), default=None),
                     "redis_bytes": store.r.memory_usage(entries_key(name)) or 0,
                     "thresholds": bank.thresholds, "dihedral": bank.dihedral})
    return rows


def _matcher_rows(store) -> list[dict[str, Any]]:
    """Each live matcher's applied bank version and how far it lags the store (heartbeats:
    workers.bank.propagation); a matcher gone for HEARTBEAT_TTL_S is not listed."""
    from workers.bank.propagation import live_matchers

    version, now_ms = store.version(), time.time() * 1000
    return [{"name": m.name, "version": m.version, "behind": max(version - m.version, 0),
             "loaded": m.loaded, "catching_up": m.catching_up, "beat_age_s": round((now_ms - m.at_ms) / 1000, 1),
             "host": m.host, "pid": m.pid} for m in live_matchers(store.r)]


def _print_matchers(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("matchers: none live (no heartbeat in the last 10 s)")
        return
    for m in rows:
        state = "loading" if not m["loaded"] else "catching up" if m["catching_up"] else \
            "current" if not m["behind"] else "behind"
        print(f"matcher {m['name']:<24} applied v{m['version']} ({m['behind']} versions behind, {state}; "
              f"beat {m['beat_age_s']:.0f}s ago)")


def _signals_text(r: dict[str, Any], none: str) -> str:
    """A bank row's enabled entries per signal, for list and stats."""
    if r["per_signal"] is None:
        return "per-signal counts need `vigil bank backfill`"
    return ", ".join(f"{k} {v}" for k, v in sorted(r["per_signal"].items())) or none


def _snapshot_text(r: dict[str, Any]) -> str:
    if not r["snapshot"]:
        return "no snapshot" + ("" if r["packed_codes"] else " (needs `vigil bank backfill`)")
    oldest = min(r["snapshot"].values(), key=lambda x: x["version"])
    return f"snapshot v{oldest['version']}, {_age(oldest['age_s'])} old, {r['snapshot_behind']} changes behind"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_bank_list(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    rows = _bank_rows(store)
    matchers = _matcher_rows(store)
    if args.json:
        print_json({"version": store.version(), "banks": rows, "matchers": matchers})
    else:
        print(f"bank version {store.version()}")
        for r in rows:
            sig = _signals_text(r, "no signals")
            print(f"{r['bank']:<20} {r['action']:<7} {'enabled' if r['enabled'] else 'DISABLED':<9}"
                  f" {r['entries']:>8} entries ({sig}); {_snapshot_text(r)}")
        _print_matchers(matchers)
    return EXIT_OK


def cmd_bank_stats(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    last = store.audit(count=1)
    rows = _bank_rows(store, count_disabled=args.count_disabled)
    info = store.r.info("memory")
    out = {"version": store.version(), "last_change": last[0] if last else None, "banks": rows,
           "redis_used_memory_bytes": info.get("used_memory"), "matchers": _matcher_rows(store)}
    if args.json:
        print_json(out)
        return EXIT_OK
    lc = out["last_change"]
    print(f"bank version {out['version']}; redis uses {out['redis_used_memory_bytes'] / 2**20:.1f} MiB"
          + (f"; last change {lc['op']} on {lc['bank']} by {lc['actor']} at {lc['at_ms']}" if lc else ""))
    for r in rows:
        sig = _signals_text(r, "no hashes")
        disabled = "" if r["disabled"] is None else f" ({r['disabled']} disabled)"
        print(f"{r['bank']:<20} {r['action']:<7} {'enabled' if r['enabled'] else 'DISABLED':<9} "
              f"{r['entries']:>9} entries{disabled}  {r['redis_bytes'] / 2**20:8.2f} MiB  enabled: {sig}; "
              f"{_snapshot_text(r)}")
    _print_matchers(out["matchers"])
    return EXIT_OK


def cmd_bank_export(args: argparse.Namespace) -> int:
    from workers.bank import formats
    from workers.bank.importer import export_records

    store, _ = store_from(args)
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = formats.WRITERS[args.format]
        count = writer(export_records(store, args.name), out)
    finally:
        if args.output:
            out.close()
    print(f"exported {count} hashes from {args.name}", file=sys.stderr)
    return EXIT_OK


