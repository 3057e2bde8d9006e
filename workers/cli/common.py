"""What every `vigil <noun>` module shares: exit codes, service flags, settings from flags and
`VIGIL_*`, JSON output and progress bars.

Exit codes: 0 success; 1 failure while running; 2 bad usage or input; 3 a service (Kafka, Redis)
is unreachable; 4 timed out waiting for decisions; 5 a bank change is written but not yet live in
every matcher after --wait-timeout (the matchers behind are named).
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_TIMEOUT, EXIT_BEHIND = 0, 1, 2, 3, 4, 5


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def service_flags(p: argparse.ArgumentParser, media: bool = False) -> None:
    p.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers (env VIGIL_KAFKA)")
    p.add_argument("--redis", metavar="URL", help="Redis URL, e.g. redis://host:6379/0 (env VIGIL_REDIS)")
    if media:
        p.add_argument("--media-root", action="append", metavar="DIR", dest="media_roots",
                       help="directory file:// media may be read from; repeatable (env VIGIL_MEDIA_ROOTS)")


def settings_from(args: argparse.Namespace):
    from workers.settings import Settings
    try:
        s = Settings.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    over: dict[str, Any] = {"kafka": getattr(args, "kafka", None), "redis": getattr(args, "redis", None)}
    if getattr(args, "media_roots", None):
        over["media_roots"] = tuple(str(Path(d).resolve()) for d in args.media_roots)
    for name in ("metrics_port", "partitions", "hasher_threads"):
        over[name] = getattr(args, name, None)
    if not s.actor:
        over["actor"] = getattr(args, "actor", None) or _whoami()
    return s.with_overrides(**over)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def need(settings, *names: str) -> None:
    for name in names:
        if not getattr(settings, name):
            flag = {"kafka": "--kafka / VIGIL_KAFKA", "redis": "--redis / VIGIL_REDIS"}[name]
            raise CliError(f"no {name} configured: pass {flag} (or run the embedded stack with `vigil up`)")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))



def progress(items: list, what: str, quiet: bool):
    if quiet or len(items) < 2 or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=what, console=None, transient=True)


def store_from(args: argparse.Namespace):
    from workers.bank.store import BankStore

    settings = settings_from(args)
    need(settings, "redis")
    store = BankStore.from_url(settings.redis, actor=settings.actor, socket_connect_timeout=5)
    try:
        store.r.ping()
    except Exception as exc:
        raise CliError(f"cannot reach Redis at {settings.redis}: {exc}", EXIT_UNAVAILABLE) from None
    return store, settings
