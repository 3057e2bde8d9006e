"""Line formats: the ThreatExchange/HMA local file and CSV with a header. Both read and written.

local: one `<signal> <hash>` per line, as python-threatexchange's LocalFileSignalExchangeAPI reads
and appends them (signal type name, one space, the hash). Blank lines and lines starting with `#`
are skipped here (pytx itself does not skip comments, so writers never emit them). A file of bare
hashes is accepted when the caller names the signal (pytx's `signal_type` collab option).

csv: RFC 4180 with a header row. Recognised columns (case-insensitive): signal (or signal_type,
type, hash_type, algorithm), hash (or value, hash_value, signal_value, hash_digest), label, source,
note; every other non-empty cell goes to `extra` under its header name.
"""
from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from typing import IO, Iterable, Iterator, Sequence

from workers.bank.formats.records import (
    SIGNAL_ALIASES,
    FormatError,
    HashRecord,
    InvalidLine,
    Item,
    UnsupportedLine,
    clip,
    is_foreign,
    vigil_signal,
)
from workers.signals import normalise

SIGNAL_COLUMNS = ("signal", "signal_type", "type", "hash_type", "algorithm")
HASH_COLUMNS = ("hash", "value", "hash_value", "signal_value", "hash_digest")
NAMED_COLUMNS = ("label", "source", "note")
CSV_HEADER = ("signal", "hash", "label", "source", "note")


@contextmanager
def as_text(fileobj: IO, newline: str | None = None) -> Iterator[IO[str]]:
    """Accept text or binary file objects; binary ones are read as UTF-8 (a BOM is dropped).

    The wrapper is detached afterwards, so the caller's binary file stays open (a TextIOWrapper
    would otherwise close it when garbage-collected).
    """
    if isinstance(fileobj, io.TextIOBase):
        yield fileobj
        return
    wrapper = io.TextIOWrapper(fileobj, encoding="utf-8-sig", newline=newline)
    try:
        yield wrapper
    finally:
        wrapper.detach()


def _signal_or_problem(line: int, name: str, text: str) -> str | Item:
    signal = vigil_signal(name)
    if signal is not None:
        return signal
    if is_foreign(name):
        return UnsupportedLine(line, name.strip().lower(), f"vigil cannot match {name.strip()!r} hashes", clip(text))
    return InvalidLine(line, f"unknown signal {name.strip()!r}", clip(text))


def parse_local(fileobj: IO, default_signal: str | None = None) -> Iterator[Item]:
    """Read a local hash file line by line; `default_signal` names the type of bare-hash lines."""
    default = vigil_signal(default_signal) if default_signal else None
    if default_signal and default is None:
        raise ValueError(f"unknown signal {default_signal!r}")
    with as_text(fileobj) as text_file:
        yield from _local_lines(text_file, default)


def _local_lines(text_file: IO[str], default: str | None) -> Iterator[Item]:
    exact = SIGNAL_ALIASES.get  # the hot loop: most lines name their signal exactly
    for lineno, raw in enumerate(text_file, 1):
        text = raw.strip()
        if not text or text[0] == "#":
            continue
        parts = text.split(None, 1)
        if len(parts) == 1:
            if default is None:
                yield InvalidLine(lineno, "expected '<signal> <hash>'", clip(text))
                continue
            signal, value = default, parts[0]
        else:
            name, value = parts
            signal = exact(name) or vigil_signal(name)
            if signal is None:
                yield _signal_or_problem(lineno, name, text)  # type: ignore[misc]
                continue
            if " " in value or "\t" in value:
                yield InvalidLine(lineno, "unexpected text after the hash", clip(text))
                continue
        try:
            value = normalise(signal, value)
        except ValueError as e:
            yield InvalidLine(lineno, str(e), clip(text))
            continue
        yield HashRecord(signal, value, None, None, None, {}, lineno)


def write_local(records: Iterable[HashRecord], fileobj: IO[str]) -> int:
    """Write `<signal> <hash>` lines (what pytx/HMA read); labels and notes do not fit and are dropped."""
    n = 0
    for rec in records:
        fileobj.write(f"{rec.signal} {rec.value}\n")
        n += 1
    return n


def _find(header: list[str], names: Sequence[str]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def parse_csv(fileobj: IO, default_signal: str | None = None) -> Iterator[Item]:
    """Read a CSV hash list; line numbers are those of the file (a quoted multi-line cell counts)."""
    with as_text(fileobj, newline="") as text_file:
        reader = csv.reader(text_file)
        try:
            yield from _csv_rows(reader, default_signal)
        except csv.Error as e:
            raise FormatError(reader.line_num, f"invalid CSV: {e}") from None


def _csv_rows(reader, default_signal: str | None) -> Iterator[Item]:
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip().lstrip("\ufeff").lower() for cell in row]
            break
    if header is None:
        return
    header_line = reader.line_num
    sig_i = _find(header, SIGNAL_COLUMNS)
    hash_i = _find(header, HASH_COLUMNS)
    default = vigil_signal(default_signal) if default_signal else None
    if hash_i is None or (sig_i is None and default is None):
        raise FormatError(header_line, f"CSV header must name a signal and a hash column, got {','.join(header)!r}")
    label_i, source_i, note_i = (_find(header, (name,)) for name in NAMED_COLUMNS)
    used = {i for i in (sig_i, hash_i, label_i, source_i, note_i) if i is not None}
    extra_cols = [(i, name) for i, name in enumerate(header) if i not in used and name]
    width = len(header)
    exact = SIGNAL_ALIASES.get
    for row in reader:
        lineno = reader.line_num
        if not any(row):
            continue
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            yield InvalidLine(lineno, f"row has {len(row)} fields, the header {width}", clip(",".join(row)))
            continue
        if len(row) < width:
            row = row + [""] * (width - len(row))
        if sig_i is None:
            signal = default
        else:
            name = row[sig_i]
            signal = exact(name) or vigil_signal(name)
            if signal is None:
                yield _signal_or_problem(lineno, name, ",".join(row))  # type: ignore[misc]
                continue
        try:
            value = normalise(signal, row[hash_i])  # type: ignore[arg-type]
        except ValueError as e:
            yield InvalidLine(lineno, str(e), clip(",".join(row)))
            continue
        extra = {name: cell for i, name in extra_cols if (cell := row[i].strip())} if extra_cols else {}
        label = row[label_i].strip() or None if label_i is not None else None
        source = row[source_i].strip() or None if source_i is not None else None
        note = row[note_i].strip() or None if note_i is not None else None
        yield HashRecord(signal, value, label, source, note, extra, lineno)  # type: ignore[arg-type]


def write_csv(records: Iterable[HashRecord], fileobj: IO[str], extra_columns: Sequence[str] = ()) -> int:
    """Write a CSV parse_csv reads back: signal,hash,label,source,note plus the named `extra` keys.

    Extra columns are named up front because the file is streamed; keys not named are not written.
    Rows end in CRLF (RFC 4180; it also makes the writer quote cells holding a lone CR): open
    files with newline="".
    """
    writer = csv.writer(fileobj)
    writer.writerow([*CSV_HEADER, *extra_columns])
    n = 0
    for rec in records:
        writer.writerow(
            [rec.signal, rec.value, rec.label or "", rec.source or "", rec.note or "",
             *(rec.extra.get(col, "") for col in extra_columns)]
        )
        n += 1
    return n
