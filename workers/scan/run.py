"""`vigil scan`: a dataset or a backlog through the pipeline's own hashing, index and policy,
on every core, resumable, with one result per file.

Results go to a state file as they come (one JSON line per file, flushed), so a killed scan
restarts where it stopped: files already in the state are not scanned again. The outputs
(matches.jsonl, report.json, the clean manifest) are written from the state file at the end,
so a resumed scan gives the same outputs as one that ran through."""
from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

from workers.bank import formats
from workers.bank.model import Bank, Entry
from workers.index.matching import BankIndex
from workers.scan import work
from workers.scan.sources import Item, iter_items
from workers.settings import Settings
from workers.signals import SignalValue


@dataclass
class ScanOptions:
    paths: list[Path]
    out: Path
    state: Path | None = None  # None: out/state.jsonl, started afresh
    clean_manifest: Path | None = None
    processes: int = 1
    time_limit_s: float = 60.0
    path_column: str | None = None
    dedupe: bool = False
    dedupe_distance: int = 31
    in_flight_per_process: int = 8  # bounds memory: archive members' bytes wait in this window only


@dataclass
class Progress:
    files: int = 0
    bytes: int = 0
    matches: int = 0
    errors: int = 0
    skipped: int = 0  # already in the state file from an earlier run
    started: float = field(default_factory=time.monotonic)


def index_from_hash_list(settings: Settings, path: Path, action: str, fmt: str | None = None) -> BankIndex:
    """A bank named after the list file, held only in this process: no Redis needed."""
    bank = Bank(name=path.stem, action=action)
    entries = (Entry(formats.entry_id_for(r.signal, r.value), bank.name, (SignalValue(r.signal, r.value),),
                     label=r.label) for r in formats.iter_records(path, fmt or formats.detect_format(path)))
    index = BankIndex(settings)
    index.load_entries([bank], entries)
    return index


def index_from_redis(settings: Settings, banks: list[str]) -> BankIndex:
    """The matcher's load of the bank, restricted to the named banks (all of them when none)."""
    from workers.bank.store import BankStore

    store = BankStore.from_url(settings.redis, socket_connect_timeout=5)
    for name in banks:
        store.require_bank(name)
    index = BankIndex(settings)
    index.load(store)
    if banks:
        index.banks = {n: b for n, b in index.banks.items() if n in banks}
    return index


def _done_keys(state: Path) -> set[str]:
    done = set()
    if state.exists():
        for line in state.read_text().splitlines():
            try:
                done.add(json.loads(line)["key"])
            except (ValueError, KeyError):
                continue  # a line cut short by a kill: that file is scanned again
    return done


def scan(opts: ScanOptions, settings: Settings, index: BankIndex,
         on_result: Callable[[dict[str, Any], Progress], None] | None = None) -> dict[str, Any]:
    """Scan everything under opts.paths; returns the report (also written to out/report.json)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    state_path = opts.state or opts.out / "state.jsonl"
    resume = opts.state is not None
    done = _done_keys(state_path) if resume else set()
    progress = Progress(skipped=len(done))
    work.set_index(index, settings, opts.time_limit_s)
    items = (i for i in iter_items(opts.paths, settings.max_media_bytes, opts.path_column) if i.key not in done)
    with open(state_path, "a" if resume else "w") as state:
        for result in _run_pool(items, opts):
            progress.bytes += result.pop("_size", 0)
            state.write(json.dumps(result, sort_keys=True) + "\n")
            state.flush()
            progress.files += 1
            progress.matches += result["outcome"] in ("block", "review")
            progress.errors += result["outcome"] == "error"
            if on_result:
                on_result(result, progress)
    report = write_outputs(state_path, opts, index, time.monotonic() - progress.started, progress)
    return report


def _run_pool(items: Iterator[Item], opts: ScanOptions) -> Iterator[dict[str, Any]]:
    """Results in completion order, with at most processes x in_flight_per_process items
    submitted at once. A worker that dies (a decoder crash) fails only the files it held: they are
    reported as internal_error and the pool is started again."""
    window = max(1, opts.processes * opts.in_flight_per_process)
    pool = _pool(opts)
    pending: dict[Future, Item] = {}
    exhausted = False
    try:
        while pending or not exhausted:
            while not exhausted and len(pending) < window:
                item = next(items, None)
                if item is None:
                    exhausted = True
                    break
                pending[pool.submit(work.scan_item, item)] = item
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                item = pending.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    result = {"key": item.key, "outcome": "error", "code": "internal_error",
                              "message": "the worker decoding this file died (a crash in a decoder)"}
                result["_size"] = item.size
                yield result
            if broken:
                for fut, item in list(pending.items()):
                    pending.pop(fut)
                    yield {"key": item.key, "outcome": "error", "code": "internal_error", "_size": item.size,
                           "message": "the worker decoding this file died (a crash in a decoder)"}
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _pool(opts)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool(opts: ScanOptions) -> ProcessPoolExecutor:
    # fork: the workers inherit the index the parent loaded, page by page, without copying it
    return ProcessPoolExecutor(max(1, opts.processes), mp_context=get_context("fork"), initializer=work.init_worker)


def write_outputs(state_path: Path, opts: ScanOptions, index: BankIndex, seconds: float,
                  progress: Progress) -> dict[str, Any]:
    """matches.jsonl, report.json and the clean manifest, from the state file alone."""
    outcomes: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    banks: Counter[str] = Counter()
    pdqs: list[tuple[str, str]] = []
    clean = open(opts.clean_manifest, "w") if opts.clean_manifest else None
    with open(opts.out / "matches.jsonl", "w") as matches, open(state_path) as state:
        for line in state:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            outcomes[r["outcome"]] += 1
            if r["outcome"] == "error":
                codes[r["code"]] += 1
            elif r["outcome"] in ("block", "review"):
                matches.write(json.dumps(r, sort_keys=True) + "\n")
                for m in r.get("evidence", []):
                    banks[m["bank"]] += 1
            elif clean is not None:
                clean.write(r["key"] + "\n")
            if opts.dedupe and r.get("pdq"):
                pdqs.append((r["key"], r["pdq"]))
    if clean is not None:
        clean.close()
    files = sum(outcomes.values())
    report: dict[str, Any] = {
        "files": files, "by_outcome": dict(sorted(outcomes.items())), "by_code": dict(sorted(codes.items())),
        "matches_by_bank": dict(sorted(banks.items())), "bank_version": index.version,
        "banks": sorted(index.banks), "seconds": round(seconds, 2),
        "files_per_s": round(progress.files / seconds, 1) if seconds > 0 else None,
        "scanned_this_run": progress.files, "resumed_from_state": progress.skipped,
        "processes": opts.processes,
    }
    if opts.dedupe:
        from workers.scan.dedupe import clusters

        groups = clusters(pdqs, opts.dedupe_distance)
        (opts.out / "duplicates.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
        report["duplicate_clusters"] = len(groups)
        report["files_in_duplicate_clusters"] = sum(len(g["keys"]) for g in groups)
    (opts.out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
