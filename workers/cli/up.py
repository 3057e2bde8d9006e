"""`vigil up`: the whole embedded stack in the foreground."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from workers.cli.common import EXIT_FAILURE, EXIT_OK, service_flags, settings_from


HELP_ORDER = 10  # where `vigil --help` lists this noun


def cmd_up(args: argparse.Namespace) -> int:
    from workers.stack.cluster import Cluster

    settings = settings_from(args)
    if not settings.media_roots:
        settings = settings.with_overrides(media_roots=(str(Path.cwd()),))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Cluster(settings, hashers=args.hashers, matchers=args.matchers, api=not args.no_api,
                 review=not args.no_review, retros=args.retros) as cluster:
        s = cluster.settings
        print(f"kafka   {s.kafka}" + ("  (embedded tansu)" if cluster.services.broker else ""))
        print(f"redis   {s.redis}" + ("  (embedded redis-server)" if cluster.services.redis_server else ""))
        print(f"media   {', '.join(s.media_roots)}")
        for w in cluster.workers:
            print(f"{w.name:<10} metrics {w.metrics_url}  log {w.log_path}")
        if cluster.api_url:
            print(f"api     {cluster.api_url}  (HMA routes and /v1; docs {cluster.api_url}/docs)")
        for w in (w for w in cluster.workers if w.kind == "review"):
            print(f"review page {w.metrics_url.removesuffix('metrics')}  (accounts: vigil review user add NAME "
                  f"--data-dir {s.data_dir})")
        cluster.wait_ready(timeout=args.ready_timeout)
        print(f"ready: export VIGIL_KAFKA={s.kafka} VIGIL_REDIS={s.redis}  (Ctrl-C stops everything)", flush=True)
        while not stop.wait(0.5):
            for w in cluster.workers:
                if w.proc.poll() is not None:
                    print(f"{w.name} exited with code {w.proc.returncode}; stopping", file=sys.stderr)
                    return EXIT_FAILURE
    print("stopped")
    return EXIT_OK



def add_parser(nouns: argparse._SubParsersAction) -> None:
    up = nouns.add_parser("up", help="run broker, Redis, topics and all workers in the foreground",
                          description="Starts the embedded broker (tansu) and redis-server on free loopback ports "
                                      "unless --kafka/--redis point at real ones, creates the topics, starts the "
                                      "workers and prints where everything listens. Ctrl-C stops everything.")
    service_flags(up, media=True)
    up.add_argument("--hashers", type=int, default=1, help="hasher processes (default 1)")
    up.add_argument("--matchers", type=int, default=1, help="matcher processes (default 1)")
    up.add_argument("--retros", type=int, default=1, help="retro workers: rescan history on bank changes (default 1)")
    up.add_argument("--partitions", type=int, help="partitions per topic when creating them (default 6)")
    up.add_argument("--metrics-port", type=int, help="first worker's metrics port; the rest count up (default: free)")
    up.add_argument("--no-api", action="store_true", help="do not start the HTTP API (`vigil api`)")
    up.add_argument("--no-review", action="store_true", help="do not start the review service (vigil review)")
    up.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for workers to be ready")
    up.set_defaults(func=cmd_up)
