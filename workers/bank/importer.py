"""Loading a hash list into a bank: validate, then write in batches; idempotent on re-import.

All-or-nothing by default: the file is scanned once and nothing is written if any line is
invalid. With skip_invalid the valid lines load as they stream and the report lists the rest."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

from workers.bank import formats
from workers.bank.model import Entry, entry_id_for_file
from workers.bank.store import BankStore
from workers.signals.hashing import hash_media
from workers.media.probe import media_kind, probe_limits
from workers.ops.logs import now_ms
from workers.settings import Settings
from workers.signals import SignalValue, file_digests

BATCH = 2000  # entries per atomic write: one version bump and one change-stream record per batch


def import_file(store: BankStore, bank: str, path: Path, fmt: str = "auto", skip_invalid: bool = False,
                label: str | None = None, progress: bool = True) -> dict[str, Any]:
    store.require_bank(bank)
    fmt = None if fmt in (None, "auto") else fmt
    if not path.is_file():
        raise formats.FormatError(0, f"no such file: {path}")
    fmt = fmt or formats.detect_format(path)
    report = formats.ImportReport()
    total = None
    if not skip_invalid:
        scanned = formats.scan(path, fmt)
        if not scanned.ok:
            return _result(scanned, fmt, loaded=False, added=0, unchanged=0)
        total = scanned.records
    added = unchanged = 0
    batch: list[formats.HashRecord] = []
    for rec in _progress(formats.iter_records(path, fmt, report=report), total, progress):
        batch.append(rec)
        if len(batch) >= BATCH:
            a, u = _write(store, bank, batch, label, path.name)
            added, unchanged, batch = added + a, unchanged + u, []
    if batch:
        a, u = _write(store, bank, batch, label, path.name)
        added, unchanged = added + a, unchanged + u
    return _result(report, fmt, loaded=True, added=added, unchanged=unchanged)


def _write(store: BankStore, bank: str, records: list[formats.HashRecord], label: str | None,
           source: str) -> tuple[int, int]:
    ids = [formats.entry_id_for(r.signal, r.value) for r in records]
    present = store.existing_ids(bank, ids)
    now = now_ms()
    fresh, seen = [], set()
    for entry_id, r in zip(ids, records):
        if entry_id in present or entry_id in seen:
            continue
        seen.add(entry_id)
        fresh.append(Entry(entry_id, bank, (SignalValue(r.signal, r.value),), label=label or r.label,
                           source=r.source or source, note=r.note, added_at_ms=now, added_by=store.actor))
    store.add_entries(bank, fresh, new=True)  # ids are the hash itself: none present had other signals
    return len(fresh), len(records) - len(fresh)


def _result(report: formats.ImportReport, fmt: str, loaded: bool, added: int, unchanged: int) -> dict[str, Any]:
    out = report.to_json()
    out.update(format=fmt, loaded=loaded, added=added, unchanged=unchanged,
               unsupported_count=sum(report.unsupported.values()), summary=report.lines())
    return out


def _progress(items: Iterator, total: int | None, show: bool) -> Iterator:
    if not show or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("import", total=total)
        for i, item in enumerate(items, 1):
            yield item
            if i % 1000 == 0:
                bar.update(task, completed=i)


def export_records(store: BankStore, bank: str) -> Iterator[formats.HashRecord]:
    """Every active signal of every entry, as list records (disabled entries are left out)."""
    store.require_bank(bank)
    for entry in store.iter_entries(bank):
        if entry.disabled:
            continue
        for sv in entry.signals:
            yield formats.HashRecord(sv.signal, sv.value, label=entry.label, source=entry.source, note=entry.note)


def add_media_file(store: BankStore, bank: str, path: Path, settings: Settings, label: str | None = None,
                   note: str | None = None, variants: bool = True) -> tuple[Entry, int]:
    """Hash a media file as it is (no query variants) and bank it; returns the entry and version.
    A photo's entry also holds the hashes of its slightly rotated and cropped versions
    (variants=True, workers.signals.bank_variants): rotated and cropped re-uploads then match,
    which an imported hash list cannot offer. A video becomes one entry holding the hashes of all
    its frames, with runs of near-identical consecutive frames collapsed. Raises OSError or MediaError."""
    if media_kind(path, probe_limits(settings)).kind == "video":
        digests = file_digests(path, settings.max_video_bytes)
        signals, media_type = digests + video_entry_signals(path, settings), "video"
    else:
        result = hash_media(path.read_bytes(), settings, query=False, bank_variants=variants)
        signals, media_type = result.signals, result.media_type
    sha = next(s.value for s in signals if s.signal == "sha256")
    entry = Entry(entry_id_for_file(sha), bank, tuple(signals), label=label, source=path.name, note=note,
                  added_at_ms=now_ms(), added_by=store.actor, media_type=media_type)
    return entry, store.add_entries(bank, [entry])


BANK_VIDEO_MAX_FRAMES = 500_000  # a bank entry holds the whole video, not the upload sampling cap


def video_entry_signals(path: Path, settings: Settings) -> list[SignalValue]:
    """Every frame's hashes (vPDQ banks every frame), consecutive near-duplicates collapsed.
    Banking is offline work, so the upload path's frame cap does not apply; if a limit still
    stops the sampler (duration, bytes, a damaged file), the entry is refused rather than
    banked incomplete without a word."""
    from dataclasses import replace

    from workers.errors import MediaError
    from workers.signals.hashing import hash_video
    from workers.signals.video_match import FrameHash, dedupe_frames

    parts, sampling = hash_video(path, replace(settings, video_max_frames=BANK_VIDEO_MAX_FRAMES),
                                 query=False, strategy="all")
    signals = [sv for part in parts for sv in part.signals]
    if sampling.partial:
        code = "media_too_large" if sampling.partial_reason in ("max_seconds", "max_frames", "max_bytes") \
            else "truncated_media"
        raise MediaError(code, f"{path.name}: only part of the video could be hashed "
                               f"({sampling.partial_reason}); not banked")
    pdq = [FrameHash(sv.value, sv.quality or 0, sv.frame_ms) for sv in signals if sv.signal == "pdq" and not sv.variant]
    kept = {f.frame_ms for f in dedupe_frames(pdq)}
    return [sv for sv in signals if sv.frame_ms in kept]
