"""Hash-list import throughput: parsing and validating a big list, then the real `vigil bank import`
into Redis (embedded redis-server), with what the import leaves in Redis per entry.

The issue's size is 10M lines; the defaults (1M parsed, 200k imported) keep a run near a minute,
and the 10M time is extrapolated (both stream at a constant rate: time is linear in lines; pass
--redis-lines 10000000 for the real thing, ~10 GB of Redis). Files are generated into a temporary
directory (random PDQ hashes) and deleted afterwards.

    python -m benchmarks.bench_import [--lines 1000000] [--redis-lines 200000] [--propagation-lines 200000]
    python -m benchmarks.bench_import --only-propagation --propagation-lines 1000000  # issue 22's measure
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from typing import Callable

from workers.bank import formats

ISSUE_LINES = 10_000_000


def _pdq_values(n: int, seed: int = 1):
    rng = random.Random(seed)
    for _ in range(n):
        yield f"{rng.getrandbits(256):064x}"


def _write_local(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.writelines(f"pdq {v}\n" for v in _pdq_values(n))


def _write_csv(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write("signal,hash,label,source,note\n")
        f.writelines(f"pdq,{v},csam,partner-{i % 5},\n" for i, v in enumerate(_pdq_values(n)))


def _write_stopncii(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write('{"count": %d, "hashRecords": [\n' % n)
        f.write(",\n".join(
            json.dumps({"lastModtimestamp": 1625167804 + i, "signalType": "ImagePDQ", "hashValue": v,
                        "hashStatus": "Active", "caseNumbers": {f"case-{i}": "Active"}})
            for i, v in enumerate(_pdq_values(n))
        ))
        f.write('\n], "hasMoreRecords": false}\n')


def _write_ncmec(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2"><images>\n')
        f.writelines(
            f'<image><member id="42">M</member><id>i{i}</id><classification>A1</classification>'
            f"<fingerprints><pdq>{v}</pdq></fingerprints></image>\n"
            for i, v in enumerate(_pdq_values(n))
        )
        f.write("</images></queryResult>\n")


def _write_tat(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write("[\n")
        f.write(",\n".join(
            json.dumps({"id": i, "hash_digest": v, "algorithm": "PDQ", "ideology": "islamist",
                        "file_type": "png", "deleted": False})
            for i, v in enumerate(_pdq_values(n))
        ))
        f.write("\n]\n")


WRITERS: dict[str, Callable[[str, int], None]] = {
    "local": _write_local, "csv": _write_csv, "stopncii": _write_stopncii, "ncmec": _write_ncmec, "tat": _write_tat,
}


def _time_scan(path: str, fmt: str, n: int) -> float:
    start = time.perf_counter()
    report = formats.scan(path, fmt)
    elapsed = time.perf_counter() - start
    assert report.records == n and report.ok, report.lines()
    return elapsed


def _time_convert(src: str, dst: str) -> float:
    """Export path: read a local list and write it as CSV, both streamed."""
    start = time.perf_counter()
    with open(dst, "w", newline="") as out:
        formats.write_csv(formats.iter_records(src, "local"), out)
    return time.perf_counter() - start


def redis_import(lines: int) -> list[str]:
    """`import_file` (what `vigil bank import` runs) of a CSV list into a fresh embedded Redis: lines
    per second end to end, a re-import (idempotent: nothing added), and Redis bytes per entry."""
    from pathlib import Path

    from workers.bank.importer import import_file
    from workers.bank.store import AUDIT, CHANGES, BankStore, codes_key, entries_key
    from workers.stack.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="vigil-bench-import-redis-") as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            store = BankStore.from_url(server.url, actor="bench")
            store.r.config_set("appendonly", "no")  # measures the import, not AOF rewrites
            store.create_bank("imported", "block", label="csam")
            path = Path(tmp) / "list.csv"
            _write_csv(str(path), lines)
            start = time.perf_counter()
            report = import_file(store, "imported", path, progress=False)
            first = time.perf_counter() - start
            assert report["loaded"] and report["added"] == lines, report
            start = time.perf_counter()
            again = import_file(store, "imported", path, progress=False)
            second = time.perf_counter() - start
            assert again["added"] == 0 and again["unchanged"] == lines, again
            keys = {"entries (JSON)": entries_key("imported"), "packed codes": codes_key("imported", "pdq"),
                    "change stream": CHANGES, "audit stream": AUDIT}
            keys.update({f"snapshot {k}": k for k in store.r.scan_iter("vigil:bank:imported:snap*")})
            sizes = {name: int(store.r.memory_usage(k, samples=0) or 0) for name, k in keys.items()}
            snap = sum(v for name, v in sizes.items() if name.startswith("snapshot"))
            parts = [f"{name} {v / lines:.0f}" for name, v in sizes.items() if not name.startswith("snapshot")]
            if snap:
                parts.append(f"snapshot {snap / lines:.0f}")
        finally:
            server.stop()
    return [
        f"`vigil bank import` of a {lines:,}-line CSV into Redis (`import_file`, all-or-nothing: validated "
        f"first, then written in batches): **{lines / first:,.0f} lines/s** ({first:.1f} s; 10M lines "
        f"≈ {ISSUE_LINES / (lines / first) / 60:.0f} min). Re-import of the same file: {lines / second:,.0f} "
        f"lines/s, nothing added. Redis bytes per entry afterwards: {', '.join(parts)}.",
    ]


def import_propagation(lines: int, matchers: int = 1) -> list[str]:
    """`import_file` of a local PDQ list into a new block bank while `matchers` real matcher
    processes run (embedded broker and Redis, `Cluster`), then `wait_for_version` (what `vigil bank
    import --wait` runs): how far the matchers lagged during the import, how long after the last
    write every matcher had the import's version, and the matchers' peak RSS."""
    import threading
    from pathlib import Path

    from workers.bank.importer import import_file
    from workers.bank.propagation import live_matchers, wait_for_version
    from workers.bank.store import BankStore
    from workers.settings import Settings
    from workers.stack.cluster import Cluster

    with tempfile.TemporaryDirectory(prefix="vigil-bench-propagation-") as tmp:
        with Cluster(Settings(data_dir=tmp, partitions=1), hashers=0, matchers=matchers) as cluster:
            cluster.wait_ready(timeout=180)
            store = BankStore.from_url(cluster.settings.redis, actor="bench")
            store.r.config_set("appendonly", "no")
            store.create_bank("imported", "block", label="csam")
            path = Path(tmp) / "list.txt"
            _write_local(str(path), lines)
            lag = {"versions": 0}
            stop = threading.Event()

            def watch() -> None:
                while not stop.wait(0.5):
                    head = store.version()
                    lag["versions"] = max([lag["versions"]] + [head - m.version for m in live_matchers(store.r)])

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            start = time.perf_counter()
            report = import_file(store, "imported", path, progress=False)
            imported = time.perf_counter() - start
            result = wait_for_version(store.r, store.last_version, timeout_s=3600)
            stop.set()
            watcher.join()
            assert report["added"] == lines and result.ok, (report, result.summary())
            rss = [_peak_rss_mb(w.proc.pid) for w in cluster.workers if w.kind == "matcher"]
    return [
        f"**Propagation of a {lines:,}-line import** (`python -m benchmarks.bench_import --only-propagation --propagation-lines {lines}`): "
        f"`import_file` wrote it in {imported:.1f} s ({lines / imported:,.0f} lines/s) while {matchers} matcher "
        f"process(es) applied it as it arrived (at most {lag['versions']} bank versions, ≈{lag['versions'] * 2000:,} "
        f"entries, behind); **every matcher had the import's last version {result.seconds:.2f} s after its last "
        f"write** (`wait_for_version`, what `vigil bank import --wait` runs). Matcher peak RSS: "
        f"{', '.join(f'{x:,.0f} MB' for x in rss)}.",
    ]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def run(lines: int = 1_000_000, redis_lines: int = 200_000, propagation_lines: int = 200_000) -> str:
    """Parse+validate throughput per format; markdown section."""
    rows = []
    # the JSON/XML exchanges' lists are far smaller than 10M in practice: measured at a fifth
    sizes = {"local": lines, "csv": lines, "stopncii": lines // 5, "ncmec": lines // 5, "tat": lines // 5}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-import-") as tmp:
        for fmt, n in sizes.items():
            path = os.path.join(tmp, f"list.{fmt}")
            WRITERS[fmt](path, n)
            size = os.path.getsize(path)
            elapsed = _time_scan(path, fmt, n)
            rate = n / elapsed
            rows.append(
                f"| {fmt} | {n:,} | {size / 1e6:,.0f} MB | {elapsed:.2f} s | {rate:,.0f} | {ISSUE_LINES / rate:.0f} s |"
            )
            if fmt == "local":
                convert = _time_convert(path, os.path.join(tmp, "export.csv"))
                rows.append(
                    f"| local → csv export | {n:,} | | {convert:.2f} s | {n / convert:,.0f} | {ISSUE_LINES * convert / n:.0f} s |"
                )
            os.remove(path)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return "\n".join([
        "## Hash-list import (parse + validate, no Redis)",
        "",
        f"`python -m benchmarks.bench_import --lines {lines} --redis-lines {redis_lines}`: one process, one core; random PDQ hashes.",
        "",
        "| format | entries | file | time | entries/s | 10M extrapolated |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Peak RSS of the whole run: {peak_mb:,.0f} MB (streaming: independent of file size).",
        "",
        *redis_import(redis_lines),
        "",
        *(import_propagation(propagation_lines) if propagation_lines else []),
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="entries in the local and CSV files")
    ap.add_argument("--redis-lines", type=int, default=200_000, help="lines imported into Redis for real")
    ap.add_argument("--propagation-lines", type=int, default=200_000,
                    help="lines imported while a real matcher runs, timing propagation (0: skip)")
    ap.add_argument("--only-propagation", action="store_true", help="skip the parse and Redis import sections")
    args = ap.parse_args()
    if args.only_propagation:
        print("\n".join(import_propagation(args.propagation_lines)))
    else:
        print(run(args.lines, args.redis_lines, args.propagation_lines))


if __name__ == "__main__":
    main()
