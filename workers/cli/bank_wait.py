"""`vigil bank <write> --wait`: say which bank version a change created and wait until every live
matcher has applied it (workers.bank.propagation), with a progress bar and how long it took."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from workers.bank import propagation
from workers.cli.common import EXIT_BEHIND, EXIT_OK

DEFAULT_TIMEOUT_S = 300.0


def add_wait_flags(p: argparse.ArgumentParser, default_on: bool) -> None:
    """--wait/--no-wait and --wait-timeout for a bank write."""
    when = ("default: on when live matchers are known" if default_on else "default: off")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help=f"wait until every live matcher has applied the change ({when}); "
                        f"exit {EXIT_BEHIND} naming the matchers behind if --wait-timeout passes first")
    p.add_argument("--wait-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long --wait waits (default {DEFAULT_TIMEOUT_S:.0f})")


def propagate(store: Any, args: argparse.Namespace, version: int, default_on: bool = False) -> tuple[int, dict]:
    """Wait for `version` if asked (or by default); returns (exit code, what to add to --json).
    Prints the version and the outcome unless --json (the progress bar goes to stderr)."""
    wait = args.wait if args.wait is not None else default_on and bool(propagation.live_matchers(store.r))
    if not wait:
        if not args.json:
            print(f"bank version {version} written; matchers apply it within seconds "
                  f"(`--wait` waits and says when)")
        return EXIT_OK, {"version": version}
    with _Bar(args.json) as bar:
        result = propagation.wait_for_version(store.r, version, args.wait_timeout, progress=bar.update)
    if not args.json:
        print(result.summary())
    return (EXIT_OK if result.ok else EXIT_BEHIND), {"version": version, "propagation": result.to_json()}


class _Bar:
    """Matchers at the version / live matchers, on a terminal only."""

    def __init__(self, quiet: bool):
        self.progress = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("matchers live"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self) -> "_Bar":
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("wait", total=None)
        return self

    def update(self, done: int, live: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=live)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
