"""`vigil scan PATH...`: check a dataset or backlog (directories, tar/WebDataset shards, zips,
Parquet/CSV manifests) against the banks on every core; `vigil scan status SCAN_ID` follows a
scan submitted to the deployed workers with --submit."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from workers.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    need,
    print_json,
    settings_from,
)

DESCRIPTION = """\
Hashes every image and video under PATH with the hasher's own code and matches it with the
matcher's index and policy: the decision a file gets here is the one an upload of it would get.

  vigil scan /data/laion-shard-0000.tar /data/images --bank ncmec --bank tat --out scan-out
  vigil scan manifest.parquet --hash-list ncmec.txt --clean-manifest clean.txt   # no Redis
  vigil scan /backlog --submit             # one upload event per file, for the deployed hashers
  vigil scan status SCAN_ID                # follow a submitted scan until every file is decided

Outputs in --out: matches.jsonl (each match with its key, evidence and hashes), report.json
(counts by outcome and by dead-letter code), duplicates.jsonl with --dedupe, and the state file
that makes a killed scan resume where it stopped (--state FILE).
Exit codes: 0 nothing matched, 1 at least one match, 2 bad usage, 3 Redis/Kafka unreachable,
4 `status` timed out."""


def cmd_scan(args: argparse.Namespace) -> int:
    if args.paths and args.paths[0] == "status":
        return _status(args)
    settings = settings_from(args)
    paths = [Path(p) for p in args.paths]
    if args.submit:
        return _submit(args, settings, paths)
    from workers.scan.run import (
        ScanOptions,
        index_from_hash_list,
        index_from_redis,
        scan,
    )

    if args.hash_list:
        index = index_from_hash_list(settings, Path(args.hash_list), args.hash_list_action)
    else:
        need(settings, "redis")
        index = index_from_redis(settings, args.bank or [])
    if not index.banks:
        raise CliError("no banks to scan against: name them with --bank, or pass --hash-list FILE")
    opts = ScanOptions(paths=paths, out=Path(args.out), state=Path(args.state) if args.state else None,
                       clean_manifest=Path(args.clean_manifest) if args.clean_manifest else None,
                       processes=args.processes or os.cpu_count() or 1, time_limit_s=args.time_limit,
                       path_column=args.path_column, dedupe=args.dedupe)
    with _bar(quiet=args.json) as on_result:
        report = scan(opts, settings, index, on_result=on_result)
    if args.json:
        print_json(report)
    else:
        print(f"scanned {report['files']} files ({report['resumed_from_state']} from an earlier run) in "
              f"{report['seconds']:.1f} s, {report['files_per_s']} files/s on {opts.processes} processes")
        print("outcomes: " + ", ".join(f"{k} {v}" for k, v in report["by_outcome"].items()))
        if report["by_code"]:
            print("errors:   " + ", ".join(f"{k} {v}" for k, v in report["by_code"].items()))
        print(f"results in {opts.out}/ (matches.jsonl, report.json)")
    matched = report["by_outcome"].get("block", 0) + report["by_outcome"].get("review", 0)
    return EXIT_FAILURE if matched else EXIT_OK


class _bar:
    """A progress bar (files, bytes, files/s, matches) on a terminal; nothing otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.progress = None

    def __enter__(self):
        if self.quiet:
            return None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True)
        self.progress.start()
        task = self.progress.add_task("scanning", total=None)

        def on_result(_result, p) -> None:
            rate = p.files / max(1e-6, time.monotonic() - p.started)
            self.progress.update(task, description=f"{p.files:,} files  {p.bytes / 2**20:,.1f} MiB  "
                                                   f"{rate:,.1f} files/s  {p.matches} matches  {p.errors} errors")
        return on_result

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def _submit(args: argparse.Namespace, settings, paths: list[Path]) -> int:
    """One upload event per file on disk (archive members have no URI a hasher could read)."""
    from workers.scan.sources import iter_items
    from workers.stream.client import UploadProducer, upload_event

    need(settings, "kafka")
    scan_id = args.scan_id or uuid.uuid4().hex[:12]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    producer = UploadProducer(settings)
    submitted, refused = 0, []
    with open(out / f"submit-{scan_id}.jsonl", "w") as record:
        for item in iter_items(paths, settings.max_media_bytes, args.path_column):
            if item.path is None:
                refused.append({"key": item.key, "why": item.error[1] if item.error else "an archive member has no file URI"})
                continue
            event = upload_event(Path(item.path), metadata={"scan_id": scan_id, "scan_key": item.key})
            event["event_id"] = f"scan-{scan_id}-{submitted:09d}"
            producer.submit(event)
            record.write(json.dumps({"event_id": event["event_id"], "key": item.key}) + "\n")
            submitted += 1
    producer.flush()
    (out / f"submit-{scan_id}.json").write_text(json.dumps({"scan_id": scan_id, "files": submitted,
                                                            "not_submitted": refused}, indent=2))
    if args.json:
        print_json({"scan_id": scan_id, "submitted": submitted, "not_submitted": len(refused)})
    else:
        print(f"scan {scan_id}: submitted {submitted} files to moderation.uploads"
              + (f"; {len(refused)} not submittable (archive members; scan them locally)" if refused else ""))
        print(f"follow it: vigil scan status {scan_id} --out {out}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    """Counts from moderation.decisions and the dead letters until every submitted file has one."""
    from workers.stream.client import OutcomeWatcher

    if len(args.paths) != 2:
        raise CliError("usage: vigil scan status SCAN_ID [--out DIR] [--timeout S]")
    scan_id = args.paths[1]
    settings = settings_from(args)
    need(settings, "kafka")
    meta = Path(args.out) / f"submit-{scan_id}.json"
    if not meta.exists():
        raise CliError(f"no {meta}: pass the --out directory the scan was submitted with")
    total = json.loads(meta.read_text())["files"]
    prefix = f"scan-{scan_id}-"
    seen: dict[str, str] = {}
    matches = []
    watcher = OutcomeWatcher(settings, from_beginning=True)
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    try:
        while len(seen) < total and time.monotonic() < deadline:
            for topic, msg in watcher.messages(0.5):
                eid = msg.get("event_id") or ""
                if not eid.startswith(prefix) or eid in seen:
                    continue
                outcome = msg["decision"] if topic.endswith("decisions") else f"dead:{msg['code']}"
                seen[eid] = outcome
                if outcome in ("block", "review"):
                    matches.append({"event_id": eid, "key": (msg.get("metadata") or {}).get("scan_key"),
                                    "decision": outcome, "evidence": msg.get("matches", [])[:3]})
                if not args.json and sys.stderr.isatty():
                    print(f"\r{len(seen)}/{total} decided", end="", file=sys.stderr, flush=True)
                if len(seen) >= total:
                    break
    finally:
        watcher.close()
    counts: dict[str, int] = {}
    for outcome in seen.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    elapsed = time.monotonic() - t0
    out = {"scan_id": scan_id, "files": total, "decided": len(seen), "by_outcome": dict(sorted(counts.items())),
           "matches": matches, "complete": len(seen) >= total}
    if args.json:
        print_json(out)
    else:
        print(f"\nscan {scan_id}: {len(seen)} of {total} files decided in {elapsed:.1f} s; "
              + ", ".join(f"{k} {v}" for k, v in out["by_outcome"].items()))
        for m in matches:
            print(f"  {m['decision']:<6} {m['key']}")
    return EXIT_OK if out["complete"] else EXIT_TIMEOUT


def add_parser(nouns: argparse._SubParsersAction) -> None:
    p = nouns.add_parser("scan", help="scan a dataset or backlog against the banks on every core",
                         description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="directories, .tar/.tar.gz/.zip, .parquet/.csv "
                                                            "manifests; or `status SCAN_ID`")
    p.add_argument("--bank", action="append", metavar="NAME", help="bank to match against; repeatable (default: all)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (env VIGIL_REDIS)")
    p.add_argument("--kafka", metavar="HOST:PORT", help="Kafka, for --submit and status (env VIGIL_KAFKA)")
    p.add_argument("--hash-list", metavar="FILE", help="match against this list file instead of Redis")
    p.add_argument("--hash-list-action", choices=("block", "review"), default="block",
                   help="what a match in --hash-list means (default block)")
    p.add_argument("--out", default="scan-out", metavar="DIR", help="where results go (default scan-out)")
    p.add_argument("--state", metavar="FILE", help="progress file: a killed scan resumes from it")
    p.add_argument("--clean-manifest", metavar="FILE", help="write the keys of the files that passed here")
    p.add_argument("--dedupe", action="store_true", help="also report near-duplicate clusters (PDQ d<=31)")
    p.add_argument("--processes", type=int, help="worker processes (default: every core)")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="S", help="seconds per file (default 60)")
    p.add_argument("--path-column", metavar="NAME", help="a manifest's path column (default: path, file, ...)")
    p.add_argument("--submit", action="store_true", help="put one upload event per file on moderation.uploads")
    p.add_argument("--scan-id", help="with --submit: the id (default: random)")
    p.add_argument("--timeout", type=float, default=600.0, help="status: seconds to wait (default 600)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=cmd_scan)
