"""Hash-list import throughput: how long parsing and validating a big list takes, before Redis.

The issue's size is 10M lines; the default is 1M so a run takes well under a minute, and the 10M
time is extrapolated (parsing streams at a constant rate: time is linear in lines). Files are
generated into a temporary directory (random PDQ hashes) and deleted afterwards.

    python -m benchmarks.bench_import [--lines 1000000]
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


def run(lines: int = 1_000_000) -> str:
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
        f"`python -m benchmarks.bench_import --lines {lines}`: one process, one core; random PDQ hashes.",
        "",
        "| format | entries | file | time | entries/s | 10M extrapolated |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Peak RSS of the whole run: {peak_mb:,.0f} MB (streaming: independent of file size).",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="entries in the local and CSV files")
    print(run(ap.parse_args().lines))


if __name__ == "__main__":
    main()
