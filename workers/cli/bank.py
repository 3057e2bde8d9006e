"""`vigil bank ...`: create banks and change what they hold. Reading verbs are in
`bank_read.py`, snapshots and backfills in `bank_snapshot.py`; the parser for all of them is here."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from workers.cli.bank_read import cmd_bank_export, cmd_bank_list, cmd_bank_stats
from workers.cli.bank_snapshot import (
    cmd_bank_backfill,
    cmd_bank_snapshot,
    snapshot_summary,
    write_snapshot,
)
from workers.cli.bank_wait import add_wait_flags, propagate
from workers.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    print_json,
    progress,
    store_from,
)


HELP_ORDER = 30  # where `vigil --help` lists this noun


def _signal_ints(items: list[str] | None, flag: str) -> dict[str, int]:
    from workers.signals import ALL_SIGNALS

    out = {}
    for item in items or ():
        signal_name, _, value = item.partition("=")
        if signal_name not in ALL_SIGNALS or not value.isdigit():
            raise CliError(f"{flag} takes SIGNAL=N with SIGNAL one of {', '.join(ALL_SIGNALS)}, e.g. pdq=31; "
                           f"not {item!r}")
        out[signal_name] = int(value)
    return out


def cmd_bank_create(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    bank = store.create_bank(args.name, args.action, label=args.label, exist_ok=args.exist_ok,
                             thresholds=_signal_ints(args.threshold, "--threshold"), dihedral=args.dihedral,
                             live_strict=_signal_ints(args.live_strict, "--live-strict"),
                             live_frames=args.live_frames, live_window_s=args.live_window)
    print_json(bank.to_json()) if args.json else print(f"bank {bank.name}: action {bank.action}")
    return EXIT_OK


def cmd_bank_add(args: argparse.Namespace) -> int:
    from workers.bank.importer import add_media_file
    from workers.errors import MediaError

    store, settings = store_from(args)
    store.require_bank(args.name)
    added, failed = [], 0
    for path in progress(args.files, "hashing", args.json):
        try:
            entry, version = add_media_file(store, args.name, Path(path), settings, label=args.label, note=args.note,
                                            variants=not args.no_variants)
        except (OSError, MediaError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        added.append({"entry_id": entry.entry_id, "file": str(path), "version": version,
                      "signals": {s.signal: s.value for s in entry.signals if not s.variant}})
    if not args.json:
        for a in added:
            print(f"{a['entry_id']}  {a['file']}  " + "  ".join(f"{k}={v[:16]}" for k, v in a["signals"].items()))
        print(f"added {len(added)} entries to {args.name}" + (f"; {failed} files failed" if failed else ""))
    code, live = propagate(store, args, store.last_version) if added else (EXIT_OK, {})
    if args.json:
        print_json({"added": added, "failed": failed, **live})
    return EXIT_FAILURE if failed else code


def cmd_bank_import(args: argparse.Namespace) -> int:
    from workers.bank.importer import import_file

    store, _ = store_from(args)
    from workers.bank.formats import FormatError

    try:
        report = import_file(store, args.name, Path(args.file), fmt=args.format, skip_invalid=args.skip_invalid,
                             label=args.label, progress=not args.json)
    except FormatError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    if not args.json:
        for line in report.get("invalid", [])[:50]:
            print(f"invalid line {line['line']}: {line['reason']}", file=sys.stderr)
        print(f"{'imported' if report['loaded'] else 'NOT imported'}: {report['added']} new, "
              f"{report['unchanged']} already present, {report['invalid_count']} invalid lines"
              + (f", {report['unsupported_count']} unsupported hashes kept out" if report.get("unsupported_count") else ""))
    if not report["loaded"]:
        if args.json:
            print_json(report)
        return EXIT_USAGE
    # First the wait (the time from the last write to every matcher), then the snapshot, which
    # matchers need only for their next cold start. Nothing new written: the bank's version.
    code, live = propagate(store, args, store.last_version or store.version(), default_on=True)
    report.update(live)
    if not args.no_snapshot:
        if store.has_codes(args.name):
            report["snapshot"] = write_snapshot(store, args.name, quiet=args.json)
        else:
            report["snapshot"] = None
            report["snapshot_skipped"] = f"no packed codes: run `vigil bank backfill {args.name}`"
    if args.json:
        print_json(report)
    elif report.get("snapshot"):
        print(f"snapshot of {args.name} written for matcher cold starts: " + snapshot_summary(report["snapshot"]))
    elif report.get("snapshot_skipped"):
        print(f"no snapshot written ({report['snapshot_skipped']})")
    return code


def cmd_bank_remove(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    version = store.remove_entries(args.name, args.entry_ids)
    if not args.json:
        print(f"removed {len(args.entry_ids)} entries from {args.name}")
    code, live = propagate(store, args, version)
    if args.json:
        print(json.dumps({"removed": args.entry_ids, **live}))
    return code


def cmd_bank_entry_state(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    disable = args.verb == "disable"
    versions = [store.set_entry_disabled(args.name, e, disable) for e in args.entry_ids]
    if not args.json:
        print(f"{'disabled' if disable else 'enabled'} {len(args.entry_ids)} entries in {args.name}")
    code, live = propagate(store, args, versions[-1])
    if args.json:
        print(json.dumps({"entries": args.entry_ids, "disabled": disable, **live}))
    return code


def cmd_bank_update(args: argparse.Namespace) -> int:
    store, _ = store_from(args)
    changes: dict[str, Any] = {}
    if args.action:
        changes["action"] = args.action
    if args.enable or args.disable:
        changes["enabled"] = bool(args.enable)
    if args.label is not None:
        changes["label"] = args.label
    if args.threshold:
        changes["thresholds"] = {**store.require_bank(args.name).thresholds, **_signal_ints(args.threshold, "--threshold")}
    if args.dihedral is not None:
        changes["dihedral"] = args.dihedral == "on"
    if not changes:
        raise CliError("nothing to change: pass --action, --enable/--disable, --label, --threshold or --dihedral")
    bank = store.update_bank(args.name, **changes)
    if not args.json:
        print(f"bank {bank.name} updated: {', '.join(changes)}")
    code, live = propagate(store, args, store.last_version)
    if args.json:
        print_json({**bank.to_json(), **live})
    return code


def add_parser(nouns: argparse._SubParsersAction) -> None:
    bank = nouns.add_parser("bank", help="manage banks of known-bad (or allowlisted) hashes in Redis",
                            description="Banks hold entries; each bank has an action: block, review, or allow "
                                        "(an allowlist that suppresses other banks' matches). Running matchers "
                                        "apply every change without a restart, usually within a second; a write "
                                        "prints the bank version it created, and `--wait` (the default for "
                                        "import) waits until every live matcher reports it, exiting 5 with the "
                                        "matchers behind named after --wait-timeout.")
    bverbs = bank.add_subparsers(dest="verb", metavar="VERB", required=True)

    def bank_cmd(name: str, help_: str, func: Callable, **kw: Any) -> argparse.ArgumentParser:
        b = bverbs.add_parser(name, help=help_, description=help_, **kw)
        b.add_argument("--redis", metavar="URL", help="Redis URL (env VIGIL_REDIS)")
        b.add_argument("--actor", help="who this change is attributed to in the audit stream (env VIGIL_ACTOR)")
        b.add_argument("--json", action="store_true", help="machine-readable output")
        b.set_defaults(func=func)
        return b

    b = bank_cmd("create", "create a bank", cmd_bank_create)
    b.add_argument("name")
    b.add_argument("--action", required=True, choices=("block", "review", "allow"))
    b.add_argument("--label", help="what the bank holds: csam, ncii, terror, deepfake, or your own")
    b.add_argument("--threshold", action="append", metavar="SIGNAL=N", help="per-signal max distance, e.g. pdq=31")
    b.add_argument("--dihedral", action=argparse.BooleanOptionalAction, default=None,
                   help="match flipped and 90°-rotated copies too (default: on for block and review banks, "
                        "off for allow banks; --no-dihedral opts out)")
    b.add_argument("--live-strict", action="append", metavar="SIGNAL=N",
                   help="livestreams: one frame at or under this distance blocks (default pdq=16, phash=4)")
    b.add_argument("--live-frames", type=int, default=2,
                   help="livestreams: this many matched frames within --live-window block (default 2)")
    b.add_argument("--live-window", type=float, default=10.0, metavar="SECONDS",
                   help="livestreams: the sliding window for --live-frames (default 10)")
    b.add_argument("--exist-ok", action="store_true", help="succeed if it already exists with the same action")
    b = bank_cmd("add", "hash media files and add them as entries", cmd_bank_add,
                 epilog="A photo's entry also stores the hashes of its versions rotated by ±2, 3, 4 and 5° and "
                        "centre-cropped by 4, 8, 12 and 15% (variant rotate+3, crop-8%, ...), so rotated, cropped "
                        "and captioned re-uploads match and the evidence names the version that did "
                        "(entry_variant). --no-variants banks the photo as it is only.")
    add_wait_flags(b, default_on=False)
    b.add_argument("name")
    b.add_argument("files", nargs="+", metavar="FILE")
    b.add_argument("--label")
    b.add_argument("--note")
    b.add_argument("--no-variants", action="store_true",
                   help="photos: do not store the rotated / cropped versions (default: store them)")
    b = bank_cmd("import", "import a hash list: ThreatExchange/HMA local file (`<signal> <hex>` lines), CSV, "
                           "StopNCII JSON, NCMEC XML or Tech Against Terrorism JSON", cmd_bank_import)
    b.add_argument("name")
    b.add_argument("file")
    b.add_argument("--format", default="auto", choices=("auto", "local", "csv", "stopncii", "ncmec", "tat"),
                   help="list format (default: detect from the extension and content)")
    b.add_argument("--label", help="label for the imported entries (default: the list's own category)")
    b.add_argument("--skip-invalid", action="store_true",
                   help="load the valid lines and report the rest (default: all or nothing)")
    add_wait_flags(b, default_on=True)
    b.add_argument("--no-snapshot", action="store_true",
                   help="do not write the bank's snapshot at the end (default: write it, as `vigil bank snapshot`)")
    bank_cmd("list", "banks with their enabled entries per signal and snapshot lag, and each live matcher's "
                     "applied bank version and lag", cmd_bank_list)
    b = bank_cmd("snapshot", "write binary snapshots of banks for fast matcher cold starts", cmd_bank_snapshot,
                 epilog="A matcher starting up GETs each bank's snapshot (a few ~8 MB strings per signal) instead of "
                        "scanning its packed codes hash field by field (10M entries: ~26 s of Redis time), then "
                        "replays every change made since the snapshot. Re-run it periodically (e.g. hourly, "
                        "`--all` from a CronJob) so that replay stays short; a snapshot older than the change "
                        "stream's oldest entry (the stream keeps ~1M changes) is ignored and matchers fall back to "
                        "the scan. Writing one is safe while banks change: changes made meanwhile are replayed. "
                        "It then trims the change stream to what readers still need: changes after every bank's "
                        "oldest snapshot, and the last 10 minutes for running matchers.")
    b.add_argument("names", nargs="*", metavar="NAME", help="banks to snapshot")
    b.add_argument("--all", action="store_true", help="every bank with packed codes (others are listed as skipped)")
    b = bank_cmd("backfill", "write the packed codes of a bank created before they existed (codes-v2)",
                 cmd_bank_backfill,
                 epilog="Reads every entry's JSON and writes its packed codes, then marks the bank codes-v2 so "
                        "matchers load it from the codes (and it can be snapshotted). Stop the bank's writers "
                        "(imports, `vigil bank add/remove/disable`) first: a change made during the backfill can be "
                        "overwritten with the entry's older state. Re-running it is harmless.")
    b.add_argument("name")
    b = bank_cmd("remove", "remove entries from a bank", cmd_bank_remove)
    add_wait_flags(b, default_on=False)
    b.add_argument("name")
    b.add_argument("entry_ids", nargs="+", metavar="ENTRY_ID")
    for verb, text in (("disable", "stop entries matching at once, keeping them for audit (a tombstone)"),
                       ("enable", "let disabled entries match again")):
        b = bank_cmd(verb, text, cmd_bank_entry_state)
        add_wait_flags(b, default_on=False)
        b.add_argument("name")
        b.add_argument("entry_ids", nargs="+", metavar="ENTRY_ID")
    b = bank_cmd("update", "change a bank: action, enabled, label, thresholds, dihedral", cmd_bank_update)
    add_wait_flags(b, default_on=False)
    b.add_argument("name")
    b.add_argument("--action", choices=("block", "review", "allow"))
    g = b.add_mutually_exclusive_group()
    g.add_argument("--enable", action="store_true", help="the bank matches again")
    g.add_argument("--disable", action="store_true", help="the whole bank stops matching at once")
    b.add_argument("--label")
    b.add_argument("--threshold", action="append", metavar="SIGNAL=N", help="per-signal max distance, e.g. pdq=20")
    b.add_argument("--dihedral", choices=("on", "off"))
    b = bank_cmd("stats", "entries per signal, snapshot lag, Redis memory, version and last change, and each live "
                          "matcher's applied version and lag", cmd_bank_stats)
    b.add_argument("--count-disabled", action="store_true",
                   help="also count disabled entries (reads every entry's JSON: minutes at 10M entries)")
    b = bank_cmd("export", "write a bank's hashes as a list", cmd_bank_export)
    b.add_argument("name")
    b.add_argument("--format", choices=("local", "csv"), default="local",
                   help="local: `<signal> <hex>` lines (ThreatExchange/HMA); csv: signal,hash,label,source,note")
    b.add_argument("--output", "-o", metavar="FILE", help="default: standard output")

