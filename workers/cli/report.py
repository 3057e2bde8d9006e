"""`vigil report aggregate|transparency|sor|evidence|preserve|keygen`: the documents the people
who answer to regulators and law enforcement file (workers/reports, docs/reports.md)."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import date
from pathlib import Path

from workers.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, CliError, need, print_json, service_flags, settings_from

log = logging.getLogger("vigil.reports")


HELP_ORDER = 60  # where `vigil --help` lists this noun


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _settings(args: argparse.Namespace, *needs: str):
    settings = settings_from(args)
    need(settings, *needs)
    return settings


def _redis(settings):
    import redis

    client = redis.Redis.from_url(settings.redis, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CliError(f"cannot reach Redis at {settings.redis}: {exc}", EXIT_UNAVAILABLE) from None
    return client


def _period(args: argparse.Namespace) -> tuple[int | None, int | None]:
    from workers.reports.figures import day_ms

    if args.start and args.end and args.end <= args.start:
        raise CliError("--to must be after --from (it is exclusive)")
    return (day_ms(args.start) if args.start else None), (day_ms(args.end) if args.end else None)


def cmd_aggregate(args: argparse.Namespace) -> int:
    from workers.reports.consumer import ReportsConsumer

    settings = _settings(args, "kafka", "redis")
    consumer = ReportsConsumer(settings, _redis(settings))
    if args.rebuild:
        consumer.aggregate.clear()
    if args.once or args.rebuild:
        n = consumer.catch_up()
        print(json.dumps({"counted": n}) if args.json else f"counted {n} messages into the hourly aggregate")
        return EXIT_OK
    return _serve(consumer, settings)


def cmd_transparency(args: argparse.Namespace) -> int:
    from workers.reports import transparency

    if not args.start or not args.end:
        raise CliError("a transparency report needs --from and --to")
    _period(args)
    settings = _settings(args, "redis", *(() if args.no_catch_up else ("kafka",)))
    figs, paths = transparency.build(settings, _redis(settings), args.start, args.end, Path(args.out),
                                     catch_up=not args.no_catch_up)
    if args.json:
        print_json({"files": {k: str(v) for k, v in paths.items()}, "totals": figs["totals"]})
    else:
        t = figs["totals"]
        print(f"{t['decisions']} decisions ({t['decisions_block']} blocked), {t['human_decisions']} verdicts, "
              f"{t['dead_letters']} dead letters; wrote {', '.join(str(p) for p in paths.values())}")
    return EXIT_OK


def cmd_sor(args: argparse.Namespace) -> int:
    import topics
    from workers.reports import sor
    from workers.reports.consumer import ACTIONS
    from workers.reports.source import read_period

    start, end = _period(args)
    settings = _settings(args, "kafka")

    def in_period(m) -> bool:
        at = m.get("decided_at_ms") or 0
        return (start is None or at >= start) and (end is None or at < end)
    decisions = [d for _, _, d in read_period(settings, topics.DECISIONS, start, end, keep=in_period)]
    verdicts = [v for _, _, v in read_period(settings, ACTIONS, start, end, keep=in_period)]
    decisions.sort(key=lambda d: (d.get("decided_at_ms", 0), d.get("event_id", "")))
    verdicts.sort(key=lambda v: (v.get("decided_at_ms", 0), str(v.get("case_id"))))
    result = sor.build(decisions, verdicts, settings)
    import jsonschema

    for s in result.statements:
        try:
            sor.validate(s)  # never write a statement the database would refuse
        except jsonschema.ValidationError as exc:
            raise CliError(f"statement {s['puid']} is not what the DSA database accepts ({exc.message}); "
                           "check VIGIL_SOR_CATEGORIES / VIGIL_SOR_TERRITORY / VIGIL_SOR_TERMS_URL") from None
    out = Path(args.out)
    out.write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in result.statements))
    unmapped_path = out.with_suffix(".unmapped.jsonl")
    if result.unmapped:
        unmapped_path.write_text("".join(json.dumps(u, sort_keys=True) + "\n" for u in result.unmapped))
    elif unmapped_path.exists():
        unmapped_path.unlink()
    summary = {"statements": len(result.statements), "unmapped": len(result.unmapped), "file": str(out),
               "unmapped_file": str(unmapped_path) if result.unmapped else None}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {len(result.statements)} statements of reasons to {out}")
        if result.unmapped:
            print(f"{len(result.unmapped)} restricting decisions have no category for their label; listed in "
                  f"{unmapped_path} (map the labels with VIGIL_SOR_CATEGORIES)", file=sys.stderr)
    return EXIT_FAILURE if result.unmapped and args.strict else EXIT_OK


def cmd_evidence(args: argparse.Namespace) -> int:
    from workers.reports import evidence
    from workers.reports.preserve import PreserveError, PreserveStore

    if not args.content_id and not args.label:
        raise CliError("name the incident: --content-id ID, or --label LABEL with --from/--to")
    start, end = _period(args)
    settings = _settings(args, "kafka")
    store = None
    if settings.preserve_dir and settings.preserve_key:
        try:
            store = PreserveStore(settings.preserve_dir, settings.preserve_key)
        except PreserveError as exc:
            raise CliError(str(exc)) from None
    ids = set(args.content_id or ()) or evidence.incidents(settings, args.label, start, end)
    if not ids:
        raise CliError(f"no blocked content with label {args.label!r} in the period")
    # --content-id reads the topics' whole retention unless --from/--to narrow it; --label reads
    # from --from to now, so verdicts given after the period are in the package too
    facts = evidence.gather(settings, ids, start, None if args.label and not args.content_id else end)
    audit = _redis(settings) if args.include_media and settings.redis else None
    written = []
    for cid in sorted(ids):
        try:
            written.append(str(evidence.write_package(Path(args.out), cid, facts[cid], store, settings,
                                                      include_media=args.include_media, actor=settings.actor,
                                                      audit=audit)))
        except PreserveError as exc:
            raise CliError(f"refused: {exc}") from None
        except LookupError as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print_json({"packages": written})
    else:
        print("\n".join(f"wrote {p}" for p in written))
    return EXIT_OK


def cmd_preserve(args: argparse.Namespace) -> int:
    from workers.reports.preserve_consumer import PreserveConsumer, enabled

    settings = _settings(args, "kafka")
    if not enabled(settings):
        raise CliError("preservation is off: set VIGIL_PRESERVE_DIR and VIGIL_PRESERVE_KEY (docs/reports.md)")
    consumer = PreserveConsumer(settings)
    if args.once:
        n = consumer.catch_up()
        print(json.dumps({"custody_records": n}) if args.json else f"{n} custody records written")
        return EXIT_OK
    return _serve(consumer, settings)


def _serve(consumer, settings) -> int:
    """A reports consumer in the foreground until SIGTERM or Ctrl-C (it commits as it goes), with
    /metrics, /healthz and /readyz on VIGIL_METRICS_PORT like every worker, so a deployment can
    probe it (deploy/k8s/reports.yaml)."""
    from workers.ops import metrics

    stop = threading.Event()
    health = metrics.Health()
    health.checks["running"] = lambda: not stop.is_set()
    server = metrics.serve(settings.metrics_host, settings.metrics_port, health)
    log.info("reports consumer serving health", extra={"metrics": f"http://{settings.metrics_host}:{server.server_address[1]}/metrics"})
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        consumer.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from workers.reports.preserve import new_key

    print(new_key())
    return EXIT_OK


def _period_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD", help="first day (UTC, inclusive)")
    p.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD", help="end day (UTC, exclusive)")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")


def add_parser(nouns: argparse._SubParsersAction) -> None:
    rep = nouns.add_parser(
        "report", help="transparency reports, DSA statements of reasons, evidence packages",
        description="Documents for regulators and law enforcement, built from vigil's decisions. The "
                    "transparency report reads an hourly aggregate kept by `vigil report aggregate`; statements "
                    "of reasons and evidence read the raw topics, so they need the period within their retention "
                    "(docs/reports.md). vigil never submits anything itself.",
        epilog="Example: vigil report transparency --from 2026-11-01 --to 2026-12-01 --out report/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = rep.add_subparsers(dest="verb", metavar="VERB", required=True)

    a = verbs.add_parser("aggregate", help="keep the hourly aggregate current (runs until stopped)")
    service_flags(a)
    a.add_argument("--once", action="store_true", help="count everything up to the current end, then exit")
    a.add_argument("--rebuild", action="store_true",
                   help="drop the aggregate and count again from what the topics still hold (their retention "
                        "bounds how far back: docs/reports.md), then exit")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_aggregate)

    t = verbs.add_parser("transparency", help="report.html, report.json and report.csv for a period",
                         description="Totals and charts: decisions per day by action, matches by bank and label, "
                                     "media type and source, automated versus human decisions, review outcomes and "
                                     "the overturn rate of automatic blocks, median time to block, live streams "
                                     "terminated, dead letters by code. One self-contained HTML page.")
    service_flags(t)
    _period_flags(t)
    t.add_argument("--out", required=True, metavar="DIR")
    t.add_argument("--no-catch-up", action="store_true",
                   help="read the aggregate as it is (by default it first counts what is new on the topics)")
    t.set_defaults(func=cmd_transparency)

    s = verbs.add_parser("sor", help="DSA statements of reasons, one JSON line per restricting decision",
                         description="Field names and values of the DSA Transparency Database API. Bank labels map "
                                     "to categories through VIGIL_SOR_CATEGORIES; decisions that cannot be mapped "
                                     "go to FILE.unmapped.jsonl and are counted on stderr.")
    service_flags(s)
    _period_flags(s)
    s.add_argument("--out", required=True, metavar="FILE.jsonl")
    s.add_argument("--strict", action="store_true", help="exit 1 when any decision could not be mapped")
    s.set_defaults(func=cmd_sor)

    e = verbs.add_parser("evidence", help="an evidence package per incident (manifest, CyberTipline XML, SHA256SUMS)")
    service_flags(e)
    _period_flags(e)
    e.add_argument("--content-id", action="append", metavar="ID", help="the incident's content id; repeatable")
    e.add_argument("--label", help="every content blocked with this label in --from/--to")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--include-media", action="store_true",
                   help="decrypt the preserved files into the package (needs the key; audited)")
    e.add_argument("--actor", help="who is accessing the evidence, for the custody chain (env VIGIL_ACTOR)")
    e.set_defaults(func=cmd_evidence)

    p = verbs.add_parser("preserve", help="the opt-in preservation consumer (VIGIL_PRESERVE_DIR + _KEY)")
    service_flags(p, media=True)
    p.add_argument("--once", action="store_true", help="handle decisions up to the current end, then exit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_preserve)

    k = verbs.add_parser("keygen", help="print a new VIGIL_PRESERVE_KEY")
    k.set_defaults(func=cmd_keygen)
