"""`vigil retro run`: rescan the hash history against a bank by hand (the retro worker does it by
itself for every addition; this is for a bank imported before the worker ran, or a check)."""
from __future__ import annotations

import argparse
import re
import sys
import time

from workers.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    print_json,
    store_from,
)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


HELP_ORDER = 46  # where `vigil --help` lists this noun


def parse_since(text: str) -> int:
    """'30d', '12h', '90m', '45s', '2w' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise CliError(f"--since takes a number and a unit (s, m, h, d, w), e.g. 30d; not {text!r}", EXIT_USAGE)
    return int(float(m.group(1)) * UNITS[m.group(2)])


def cmd_run(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from workers.cli.common import need
    from workers.ops.logs import now_ms
    from workers.retro.announce import Announcer
    from workers.retro.new_entries import NewEntries
    from workers.retro.rescan import Segment, SegmentScan, history_bounds, run_segment
    from workers.stream.kafka import producer_config

    store, settings = store_from(args)
    need(settings, "kafka")
    seconds = parse_since(args.since)
    bank = store.require_bank(args.bank)
    if bank.action not in ("block", "review"):
        raise CliError(f"bank {bank.name!r} has action {bank.action}: only block and review banks are rescanned")
    entries = list(store.iter_entries(bank.name))
    index = NewEntries(entries, {bank.name: bank}, settings)
    since = now_ms() - seconds * 1000
    try:
        start, end = history_bounds(settings, since)
    except Exception as exc:  # noqa: BLE001  (no broker, or no history topic yet)
        raise CliError(f"cannot read the history topic at {settings.kafka}: {exc}", EXIT_UNAVAILABLE) from None
    version = store.version()
    seg = Segment(f"manual-{bank.name}-{now_ms()}", version, now_ms(), [(bank.name, e.entry_id) for e in entries],
                  start, end, since)
    producer = None if args.dry_run else Producer(producer_config(settings))
    announcer = Announcer(settings, store.r, producer, settings.worker_name("retro-cli"), dry_run=args.dry_run)
    scan = SegmentScan(settings, seg, index, announcer, producer)
    t0 = time.monotonic()
    bar = _Bar(scan.progress.total, quiet=args.json or not sys.stderr.isatty())
    run_segment(scan, stop=lambda: False, on_batch=bar.update)
    bar.close()
    p = scan.progress
    took = time.monotonic() - t0
    out = {"bank": bank.name, "entries": len(index), "since_ms": since, "bank_version": version,
           "records": p.read, "matched": p.matched, "announced": p.announced, "dry_run": args.dry_run,
           "seconds": round(took, 2), "records_per_s": round(p.read / took) if took > 0 else None}
    if args.dry_run:
        out["decisions"] = announcer.found
    if args.json:
        print_json(out)
    else:
        verb = "would announce" if args.dry_run else "announced"
        print(f"{p.read:,} history records since {args.since} read in {took:.1f} s; {p.matched} matched "
              f"{len(index)} entries of {bank.name}; {verb} {p.announced} retro decisions")
        for d in announcer.found[:20]:
            print(f"  {d['decision']:<6} {d['content_id']}  event {d['event_id']}  "
                  f"{d['matches'][0]['entry_id']} ({d['matches'][0]['signal']} distance {d['matches'][0]['distance']})")
    return EXIT_OK


def cmd_members(args: argparse.Namespace) -> int:
    """Show the retro fleet, or change its member count (every retro worker stopped)."""
    from workers.cli.common import need
    from workers.retro import members
    from workers.retro.rescan import history_partitions

    store, settings = store_from(args)
    if args.count is not None:
        need(settings, "kafka")
        try:
            partitions = len(history_partitions(settings))
        except Exception as exc:  # noqa: BLE001  (no broker, or no history topic yet)
            raise CliError(f"cannot read the history topic at {settings.kafka}: {exc}", EXIT_UNAVAILABLE) from None
        try:
            members.reconfigure(store.r, args.count, partitions)
        except members.MembershipError as exc:
            raise CliError(str(exc)) from None
    out = members.status(store.r)
    if args.json:
        print_json(out)
    else:
        print(f"retro fleet: {out['members']} member(s)")
        for m in out["fleet"]:
            print(f"  member {m['member']}: {'running as ' + m['alive'] if m['alive'] else 'stopped'}, "
                  f"{m['queued_rescans']} queued rescans, {m['pending']} pending announcements")
    return EXIT_OK


class _Bar:
    """records read, matches, rate and ETA on stderr (rich), or nothing when not a terminal."""

    def __init__(self, total: int, quiet: bool):
        self.p = None
        if quiet:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("rescan"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} records"),
                          TextColumn("{task.fields[matches]} matches"), TextColumn("{task.fields[rate]}/s"),
                          TimeRemainingColumn(), transient=True)
        self.task = self.p.add_task("rescan", total=total, matches=0, rate=0)
        self.p.start()

    def update(self, prog) -> None:
        if self.p is not None:
            rate = int(prog.read / max(1e-6, time.monotonic() - prog.started))
            self.p.update(self.task, completed=prog.read, matches=prog.matched, rate=f"{rate:,}")

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def add_parser(nouns: argparse._SubParsersAction) -> None:
    from workers.cli.common import service_flags

    retro = nouns.add_parser("retro", help="retroactive matching: rescan the hash history against a bank",
                             description="The hash history (topic moderation.hash-history) keeps the signals of "
                                         "every decided upload. A rescan matches it against a bank's entries and "
                                         "publishes source=retro decisions for content that carries them and was "
                                         "not blocked. `vigil worker retro` does this by itself when entries are "
                                         "added; `retro run` does it by hand.")
    verbs = retro.add_subparsers(dest="verb", metavar="VERB", required=True)
    run = verbs.add_parser("run", help="rescan the history since a time against every entry of one bank",
                           description="Reads the history from --since ago to its current end, matches it against "
                                       "every enabled entry of --bank, and publishes one retro decision per "
                                       "content not already blocked (deduplicated with the retro worker's). "
                                       "Example: vigil retro run --bank ncmec --since 30d --dry-run")
    service_flags(run)
    run.add_argument("--bank", required=True, help="the bank whose entries to look for (action block or review)")
    run.add_argument("--since", default="30d", help="how far back: 30d, 12h, 90m, 2w (default 30d; the topic's "
                                                    "retention bounds it)")
    run.add_argument("--dry-run", action="store_true", help="match and report, publish nothing")
    run.add_argument("--json", action="store_true", help="machine-readable summary (with the decisions of a dry run)")
    run.set_defaults(func=cmd_run)
    mem = verbs.add_parser("members", help="show the retro fleet, or change how many retro workers split rescans",
                           description="Retro workers split every rescan by history partition: member i of N reads "
                                       "the partitions p with p % N == i. Every worker must be started with the "
                                       "recorded VIGIL_RETRO_MEMBERS. To change it: stop every retro worker, run "
                                       "`vigil retro members N` (it refuses while a member runs or has queued "
                                       "rescans), then start N workers. Example: vigil retro members 4")
    service_flags(mem)
    mem.add_argument("count", nargs="?", type=int, help="the new member count (at most the history's partitions)")
    mem.add_argument("--json", action="store_true", help="machine-readable fleet status")
    mem.set_defaults(func=cmd_members)
