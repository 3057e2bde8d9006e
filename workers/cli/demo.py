"""`vigil demo`: the whole pipeline on the embedded stack with sample photos (workers/stack/demo.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


HELP_ORDER = 90  # where `vigil --help` lists this noun


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.stack.demo import run_demo

    return run_demo(keep_going=args.keep, report_dir=Path(args.report_dir) if args.report_dir else None)


def add_parser(nouns: argparse._SubParsersAction) -> None:
    demo = nouns.add_parser("demo", help="run the whole pipeline on the embedded stack with sample photos")
    demo.add_argument("--keep", action="store_true", help="keep going after a wrong decision (exit 1 at the end)")
    demo.add_argument("--report-dir", metavar="DIR",
                      help="also write the transparency report of the demo's decisions here (docs/reports.md)")
    demo.set_defaults(func=cmd_demo)
