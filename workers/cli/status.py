"""`vigil status`: the pipeline at a glance, read from the workers' /metrics (workers/ops/status.py)."""
from __future__ import annotations

import argparse


HELP_ORDER = 80  # where `vigil --help` lists this noun


def add_parser(nouns: argparse._SubParsersAction) -> None:
    from workers.ops import status

    status.add_parser(nouns)
