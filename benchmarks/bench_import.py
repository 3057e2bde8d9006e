"""Hash-list import throughput: parsing and validating a big list, then the real `vigil bank import`
into Redis (embedded redis-server), with what the import leaves in Redis per entry.

The issue's size is 10M lines; the defaults (1M parsed, 200k imported) keep a run near a minute,
and the 10M time is extrapolated (both stream at a constant rate: time is linear in lines; pass
--redis-lines 10000000 for the real thing, ~10 GB of Redis). Files are generated into a temporary
directory (random PDQ hashes) and deleted afterwards.

    python -m benchmarks.bench_import [--lines 1000000] [--redis-lines 200000]
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


def run(lines: int = 1_000_000, redis_lines: int = 200_000) -> str:
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
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="entries in the local and CSV files")
    ap.add_argument("--redis-lines", type=int, default=200_000, help="lines imported into Redis for real")
    args = ap.parse_args()
    print(run(args.lines, args.redis_lines))


if __name__ == "__main__":
    main()
