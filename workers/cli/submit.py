"""`vigil submit`: put local files on moderation.uploads and, with --wait, print their decisions."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from workers.cli.common import (
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    need,
    print_json,
    service_flags,
    settings_from,
)


HELP_ORDER = 40  # where `vigil --help` lists this noun


def cmd_submit(args: argparse.Namespace) -> int:
    from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event

    settings = settings_from(args)
    need(settings, "kafka")
    paths = [Path(f) for f in args.files]
    for p in paths:
        if not p.is_file():
            raise CliError(f"no such file: {p}")
    watcher = OutcomeWatcher(settings) if args.wait else None
    producer = UploadProducer(settings)
    events = [upload_event(p, metadata={"path": str(p)} if args.with_path else None) for p in paths]
    for e in events:
        producer.submit(e)
        if not args.json and not args.wait:
            print(f"submitted {e['event_id']}  {e['content_id']}  {e['media_uri']}")
    producer.flush()
    if watcher is None:
        if args.json:
            print_json(events)
        return EXIT_OK
    names = {e["event_id"]: Path(e["media_uri"]).name for e in events}
    pending = set(names)
    deadline = time.monotonic() + args.timeout
    for topic, msg in watcher.messages(args.timeout):
        eid = msg.get("event_id")
        if eid not in pending:
            continue
        pending.discard(eid)
        if args.json:
            print(json.dumps({"topic": topic, **msg}))
        elif topic == "moderation.decisions":
            top = msg["matches"][0] if msg["matches"] else None
            ev = f"{top['bank']}/{top['entry_id']} {top['signal']} d={top['distance']}" if top else "-"
            print(f"{msg['decision']:<6} {names[eid]:<30} {ev}  {msg['latency_ms']['total']} ms")
        else:
            print(f"DEAD   {names[eid]:<30} {msg['code']}: {msg['message']}")
        if not pending or time.monotonic() > deadline:
            break
    watcher.close()
    if pending:
        print(f"timed out: {len(pending)} of {len(events)} not decided within {args.timeout:.0f}s", file=sys.stderr)
        return EXIT_TIMEOUT
    return EXIT_OK


def add_parser(nouns: argparse._SubParsersAction) -> None:
    sub = nouns.add_parser("submit", help="submit local files as upload events",
                           description="Produces one moderation.uploads event per file (media_uri=file://...). "
                                       "The files must be under a hasher's media roots.")
    service_flags(sub)
    sub.add_argument("files", nargs="+", metavar="FILE")
    sub.add_argument("--wait", action="store_true", help="print each decision (or dead letter) as it arrives")
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait with --wait (default 60)")
    sub.add_argument("--with-path", action="store_true", help="put the local path in the event's metadata")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.set_defaults(func=cmd_submit)

