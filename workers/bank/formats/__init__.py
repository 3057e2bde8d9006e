"""The industry's hash-list formats: streaming, storage-free import and export.

    local     `<signal> <hash>` lines (ThreatExchange / HMA local file)        read + write
    csv       CSV with a header: signal,hash,label,source,note,...             read + write
    stopncii  StopNCII.org FetchHashes JSON                                    read
    ncmec     NCMEC hash-sharing v2 entries XML                                read
    tat       Tech Against Terrorism TCAP hash list JSON                       read

Every parser yields HashRecord / InvalidLine / UnsupportedLine with line numbers and never holds
more than one chunk and one entry in memory. The importer validates a whole file first
(`scan`, all-or-nothing) or loads as it goes (`iter_records` with a report, --skip-invalid);
keeping entries idempotent is the store's job, with ids from `entry_id_for`.
"""
from __future__ import annotations

import os
from typing import IO, Callable, Iterator

from workers.bank.formats.exchanges import parse_stopncii, parse_tat
from workers.bank.formats.ncmec import parse_ncmec
from workers.bank.formats.records import (  # noqa: F401
    FormatError,
    HashRecord,
    InvalidLine,
    Item,
    UnsupportedLine,
    entry_id_for,
)
from workers.bank.formats.report import ImportReport
from workers.bank.formats.text import parse_csv, parse_local, write_csv, write_local

PARSERS: dict[str, Callable[..., Iterator[Item]]] = {
    "local": parse_local,
    "csv": parse_csv,
    "stopncii": parse_stopncii,
    "ncmec": parse_ncmec,
    "tat": parse_tat,
}
FORMATS = tuple(PARSERS)
WRITERS = {"local": write_local, "csv": write_csv}
SNIFF_BYTES = 1 << 16

__all__ = [
    "FORMATS", "FormatError", "HashRecord", "ImportReport", "InvalidLine", "Item", "UnsupportedLine",
    "detect_format", "entry_id_for", "iter_records", "parse", "read_all", "scan",
    "parse_local", "parse_csv", "parse_stopncii", "parse_ncmec", "parse_tat", "write_local", "write_csv",
]


def parse(fileobj: IO, fmt: str, **options) -> Iterator[Item]:
    """Parse an open file (binary preferred; text works) of format `fmt`.

    options: `default_signal` for local/csv files without a signal per line.
    """
    try:
        parser = PARSERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})") from None
    return parser(fileobj, **options)


def read_all(path: str | os.PathLike, fmt: str | None = None, **options) -> Iterator[Item]:
    """Every item of the file at `path`, format detected when not given. Streams; opens the file
    lazily and closes it when the iteration ends."""
    fmt = fmt or detect_format(path)
    with open(path, "rb") as f:
        yield from parse(f, fmt, **options)


def scan(path: str | os.PathLike, fmt: str | None = None, **options) -> ImportReport:
    """Read the whole file without keeping it: the report an all-or-nothing import checks first."""
    report = ImportReport()
    add = report.add
    for item in read_all(path, fmt, **options):
        add(item)
    return report


def iter_records(
    path: str | os.PathLike, fmt: str | None = None, report: ImportReport | None = None, **options
) -> Iterator[HashRecord]:
    """Only the bankable records; everything else goes into `report` (for --skip-invalid)."""
    for item in read_all(path, fmt, **options):
        if report is not None:
            report.add(item)
        if type(item) is HashRecord:
            yield item


def detect_format(path: str | os.PathLike) -> str:
    """Guess a list's format from its extension, then from its first bytes; raises FormatError."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in (".csv",):
        return "csv"
    if ext in (".xml",):
        return "ncmec"
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if head.startswith("<"):
        return "ncmec"
    if head.startswith(("{", "[")) or ext in (".json", ".jsonl", ".ndjson"):
        if '"hashValue"' in head or '"hashRecords"' in head or '"signalType"' in head:
            return "stopncii"
        if '"hash_digest"' in head:
            return "tat"
        raise FormatError(0, f"{os.fspath(path)}: JSON, but neither a StopNCII nor a TCAP hash list (pass a format)")
    for line in head.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip().strip('"').lower() for c in line.split(",")]
        if len(cells) > 1 and any(c in ("hash", "value", "hash_value", "signal_value", "hash_digest") for c in cells):
            return "csv"
        return "local"
    raise FormatError(0, f"{os.fspath(path)}: empty, cannot tell its format (pass a format)")
