"""`vigil worker hasher|matcher|retro` (one process of a deployment) and `vigil topics create`."""
from __future__ import annotations

import argparse
import json
import signal

from workers.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CliError,
    need,
    service_flags,
    settings_from,
)


HELP_ORDER = 20  # where `vigil --help` lists this noun


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.ops import logs

    from workers.cli.provenance import settings_with_rules

    settings = settings_with_rules(args)
    logs.setup(settings.log_level)
    need(settings, "kafka")
    if args.kind == "hasher":
        from workers.uploads.hasher import Hasher

        hasher = Hasher(settings)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: hasher.stop())
        hasher.run()
    elif args.kind == "retro":
        need(settings, "redis")
        from workers.retro.members import MembershipError
        from workers.retro.worker import RetroWorker

        retro = RetroWorker(settings)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: retro.stop())
        try:
            retro.run()
        except MembershipError as exc:  # a fleet configured to split the history wrongly: refuse
            raise CliError(str(exc)) from None
    else:
        need(settings, "redis")
        from workers.uploads.matcher import Matcher

        matcher = Matcher(settings)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: matcher.stop())
        matcher.run()
    return EXIT_OK


def cmd_topics_create(args: argparse.Namespace) -> int:
    from workers.stream.kafka import create_topics

    settings = settings_from(args)
    need(settings, "kafka")
    try:
        created = create_topics(settings)
    except RuntimeError as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    print(json.dumps({"created": created}) if args.json else f"created: {', '.join(created) or 'nothing (all exist)'}")
    return EXIT_OK


def add_parser(nouns: argparse._SubParsersAction) -> None:
    worker = nouns.add_parser("worker", help="run one worker process (for deployments that scale them apart)")
    kinds = worker.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, text in (("hasher", "consume uploads, decode media, publish hashes"),
                       ("matcher", "match hashes against the bank, publish decisions"),
                       ("retro", "rescan the hash history when a bank learns new entries, publish retro decisions")):
        k = kinds.add_parser(kind, help=text, description=text)
        service_flags(k, media=(kind == "hasher"))
        k.add_argument("--metrics-port", type=int, help="port for /metrics, /healthz, /readyz (env VIGIL_METRICS_PORT)")
        if kind == "matcher":
            from workers.cli.provenance import rule_flags

            rule_flags(k)
        if kind == "hasher":
            k.add_argument("--hasher-threads", type=int, help="decode/hash threads (env VIGIL_HASHER_THREADS)")
        k.set_defaults(func=cmd_worker)

    tp = nouns.add_parser("topics", help="create the topics on a broker")
    tverbs = tp.add_subparsers(dest="verb", metavar="VERB", required=True)
    tc = tverbs.add_parser("create", help="create missing topics (existing ones are left alone)")
    service_flags(tc)
    tc.add_argument("--partitions", type=int, help="partitions for uploads/hashes/decisions (default 6)")
    tc.add_argument("--json", action="store_true", help="machine-readable output")
    tc.set_defaults(func=cmd_topics_create)

