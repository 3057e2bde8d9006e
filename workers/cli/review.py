"""`vigil review`: the review service (queue, pages, verdicts), and `vigil review user add`."""
from __future__ import annotations

import argparse
import getpass
import signal
import sys

from workers.cli.common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CliError, need, print_json, service_flags, \
    settings_from


HELP_ORDER = 48  # where `vigil --help` lists this noun


def review_settings(args: argparse.Namespace):
    s = settings_from(args)
    return s.with_overrides(review_port=getattr(args, "port", None), review_host=getattr(args, "host", None),
                            review_db=getattr(args, "db", None), review_qa_sample=getattr(args, "qa_sample", None),
                            data_dir=getattr(args, "data_dir", None))


def cmd_review_serve(args: argparse.Namespace) -> int:
    from workers.ops import logs
    from workers.review.service import ReviewService

    settings = review_settings(args)
    need(settings, "kafka", "redis")
    if not settings.media_roots:
        raise CliError("no media roots: pass --media-root DIR (previews and banking read media from there)")
    logs.setup(settings.log_level)
    try:
        service = ReviewService(settings).start()
    except Exception as exc:  # the database or Redis unreachable at start
        raise CliError(f"cannot start the review service: {type(exc).__name__}: {exc}", EXIT_UNAVAILABLE) from None
    print(f"review  {service.url}  (database {settings.review_db or 'sqlite in the data directory'})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: setattr(service.server, "should_exit", True))
    try:
        service.serve()
    finally:
        service.stop()
    return EXIT_OK


def cmd_review_user_add(args: argparse.Namespace) -> int:
    from workers.review import auth, db

    settings = review_settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.no_password:
        password = None
    else:
        password = getpass.getpass(f"password for {args.name}: ")
    if password is not None and len(password) < 8:
        raise CliError("a password has at least 8 characters")
    try:
        auth.add_user(db.open_store(settings), args.name, args.role, password)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    out = {"name": args.name, "role": args.role, "password": password is not None}
    print_json(out) if args.json else print(f"reviewer {args.name}: role {args.role}")
    return EXIT_OK


def _db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/vigil "
                                               "(env VIGIL_REVIEW_DB; default SQLite <data-dir>/review.db)")
    p.add_argument("--data-dir", metavar="DIR", help="where the default SQLite file lives (env VIGIL_DATA_DIR)")


def add_parser(nouns: argparse._SubParsersAction) -> None:
    p = nouns.add_parser(
        "review", help="the review queue and page: people confirm or overturn what the matchers flag",
        description="Consumes moderation.decisions (every `review`, and --qa-sample of the `block`s) and "
                    "moderation.reports into cases, serves the review page, and applies verdicts: confirm adds "
                    "the item's hashes to the reviewed-bad bank (block) and publishes on moderation.actions; "
                    "overturn adds them to the reviewed-ok allowlist. Example: `vigil review user add alice --role "
                    "lead`, then `vigil review --port 8081 --media-root /srv/media` and open the URL it prints.",
        epilog="Exit codes: 0 ok, 2 bad usage, 3 Kafka/Redis/database unreachable.")
    service_flags(p, media=True)
    _db_flags(p)
    p.add_argument("--port", type=int, help="HTTP port of the page (env VIGIL_REVIEW_PORT, default 8081)")
    p.add_argument("--host", help="address to listen on (env VIGIL_REVIEW_HOST, default 127.0.0.1)")
    p.add_argument("--qa-sample", type=float, metavar="RATE",
                   help="share of automatic blocks sent to review as QA, 0..1 (env VIGIL_REVIEW_QA_SAMPLE, default 0.01)")
    p.set_defaults(func=cmd_review_serve)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    user = verbs.add_parser("user", help="reviewer accounts").add_subparsers(dest="user_verb", metavar="VERB",
                                                                               required=True)
    add = user.add_parser("add", help="create a reviewer or lead (or change an existing one's role or password)",
                          description="Creates a local account with an argon2 password hash. Roles: reviewer "
                                      "decides cases; lead also sees escalated cases and can reverse verdicts. "
                                      "Example: `echo \"$PW\" | vigil review user add alice --role lead --password-stdin`.")
    add.add_argument("name")
    add.add_argument("--role", choices=("reviewer", "lead"), default="reviewer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.add_argument("--no-password", action="store_true",
                     help="no local password (the identity header of a trusted proxy logs this person in)")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    _db_flags(add)
    add.set_defaults(func=cmd_review_user_add)
