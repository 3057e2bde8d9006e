"""`vigil bank snapshot|backfill`: the binary snapshots matchers cold-start from."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from workers.cli.common import EXIT_OK, CliError, print_json, store_from


def write_snapshot(store, name: str, quiet: bool) -> dict[str, dict[str, Any]]:
    """BankStore.write_snapshot with a progress bar on a terminal."""
    if quiet or not sys.stderr.isatty():
        return store.write_snapshot(name)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(signal_name: str, done: int, total: int) -> None:
            if signal_name not in tasks:
                tasks[signal_name] = bar.add_task(f"snapshot {name} {signal_name}", total=total)
            bar.update(tasks[signal_name], completed=done)

        return store.write_snapshot(name, progress=progress)


def snapshot_summary(per_signal: dict[str, dict[str, Any]]) -> str:
    written = {s: r for s, r in per_signal.items() if r["entries"]}
    return ", ".join(f"{s} {r['entries']:,} entries / {r['rows']:,} rows / {r['bytes'] / 2**20:.1f} MiB "
                     f"in {r['seconds']:.1f} s" for s, r in written.items()) or "no entries"


def cmd_bank_snapshot(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    if bool(args.names) == bool(args.all):
        raise CliError("name the banks to snapshot, or pass --all (not both)")
    names = sorted(store.banks()) if args.all else args.names
    written, skipped = {}, {}
    for name in names:
        if args.all and not store.has_codes(name):
            skipped[name] = f"no packed codes: run `vigil bank backfill {name}`"
            continue
        written[name] = write_snapshot(store, name, quiet=args.json)  # BankError for unknown / no codes
        if not args.json:
            for signal_name, r in written[name].items():
                if r["entries"]:
                    print(f"{name:<20} {signal_name:<7} {r['entries']:>10,} entries {r['rows']:>10,} rows "
                          f"{r['bytes'] / 2**20:>9.1f} MiB {r['seconds']:>7.1f} s  (version {r['version']})")
            if not any(r["entries"] for r in written[name].values()):
                print(f"{name:<20} empty: no snapshot needed")
    if args.json:
        print_json({"version": store.version(), "banks": written, "skipped": skipped})
    else:
        for name, why in skipped.items():
            print(f"{name:<20} skipped ({why})", file=sys.stderr)
    return EXIT_OK


def cmd_bank_backfill(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    store.require_bank(args.name)
    if not args.json:
        print(f"backfilling the packed codes of {args.name} from its JSON entries "
              "(the bank's writers should be stopped meanwhile)", file=sys.stderr)
    t0 = time.perf_counter()
    n = store.backfill_codes(args.name)
    out = {"bank": args.name, "entries": n, "seconds": round(time.perf_counter() - t0, 3)}
    print_json(out) if args.json else print(
        f"wrote the packed codes of {n:,} entries of {args.name} in {out['seconds']:.1f} s; "
        f"now `vigil bank snapshot {args.name}`")
    return EXIT_OK


