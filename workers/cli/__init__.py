"""vigil <noun> <verb>: the command line. `vigil --help` and `vigil <noun> --help` teach the rest.

One module per noun (`bank.py`, `live.py`, `submit.py`, ...), each with an `add_parser`; what
they share is in `common.py`. A new noun is a new module listed in NOUNS.

Exit codes: 0 success; 1 failure while running; 2 bad usage or input; 3 a service (Kafka, Redis)
is unreachable; 4 timed out waiting for decisions.
"""
from __future__ import annotations

import argparse
import logging
import sys

from workers.cli import bank, demo, live, retro, status, submit, up, worker
from workers.cli.common import EXIT_UNAVAILABLE, EXIT_USAGE, CliError

NOUNS = (up, worker, bank, submit, live, retro, status, demo)  # in the order `vigil --help` lists them


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil",
        description="Moderation workers: match uploads against banks of known harmful media by hash.",
        epilog="Start here: `vigil up` runs the embedded stack; in another shell `vigil bank create demo "
               "--action block`, `vigil bank add demo photo.jpg`, `vigil submit copy.jpg --wait`. "
               "Exit codes: 0 ok, 1 failure, 2 bad usage/input, 3 service unreachable, 4 timeout.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    nouns = p.add_subparsers(dest="noun", metavar="NOUN", required=True)
    for noun in NOUNS:
        noun.add_parser(nouns)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    from workers.signals import limit_native_threads

    limit_native_threads()
    try:
        return args.func(args)
    except CliError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from workers.bank.store import BankError

        if isinstance(exc, BankError):
            print(f"vigil: {exc}", file=sys.stderr)
            return EXIT_USAGE
        import redis

        if isinstance(exc, redis.ConnectionError):
            print(f"vigil: Redis unreachable: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
