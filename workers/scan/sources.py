"""What `vigil scan` reads: directory trees, tar / WebDataset shards, zip archives and Parquet or
CSV manifests, each turned into a stream of items without unpacking anything to disk.

An item is either a file on disk (read later, in a worker, with the hasher's rules: regular
files only, bounded size, no FIFOs) or an archive member whose bytes were read here, bounded by
the same size limit. A member too large to hold, a symlink that leads out of the given roots, or
an unreadable archive becomes an item with an error code, so it is reported, never dropped."""
from __future__ import annotations

import csv
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from workers.errors import MediaError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ZIP_SUFFIXES = (".zip",)
MANIFEST_SUFFIXES = (".parquet", ".csv")
PATH_COLUMNS = ("path", "file", "filename", "filepath", "image_path", "url")


@dataclass(frozen=True)
class Item:
    """One file to scan. `key` names it in every output: a path, or `archive::member`."""

    key: str
    path: str | None = None  # a file on disk, read by the worker
    data: bytes | None = None  # an archive member's bytes
    error: tuple[str, str] | None = None  # (dead-letter code, message): reported as is

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.path is not None:
            try:
                return os.stat(self.path).st_size
            except OSError:
                return 0
        return 0


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(TAR_SUFFIXES) or name.endswith(ZIP_SUFFIXES)


def iter_items(paths: list[Path], max_bytes: int, path_column: str | None = None) -> Iterator[Item]:
    """Every item under `paths`, in a stable order (so a resumed scan sees the same keys)."""
    roots = [p.resolve() for p in paths]
    for given, root in zip(paths, roots):
        if not root.exists():
            yield Item(str(given), error=("media_not_found", f"no such file or directory: {given}"))
        elif root.is_dir():
            yield from _walk(root, roots, max_bytes, path_column)
        else:
            yield from _file(root, roots, max_bytes, path_column, top=True)


def _walk(top: Path, roots: list[Path], max_bytes: int, path_column: str | None) -> Iterator[Item]:
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield from _file(Path(dirpath) / name, roots, max_bytes, path_column, top=False)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _file(path: Path, roots: list[Path], max_bytes: int, path_column: str | None, top: bool) -> Iterator[Item]:
    if path.is_symlink():
        real = path.resolve()
        if not _inside(real, roots):
            yield Item(str(path), error=("outside_media_roots", f"symlink to {real}, outside the scanned roots"))
            return
    lower = path.name.lower()
    if lower.endswith(TAR_SUFFIXES):
        yield from _tar(path, max_bytes)
    elif lower.endswith(ZIP_SUFFIXES):
        yield from _zip(path, max_bytes)
    elif top and lower.endswith(MANIFEST_SUFFIXES):
        yield from _manifest(path, max_bytes, path_column)
    else:
        yield Item(str(path), path=str(path))


def _member_item(key: str, size: int, read, max_bytes: int) -> Item:
    if size == 0:
        return Item(key, error=("empty_media", f"{key} is empty"))
    if size > max_bytes:
        return Item(key, error=("media_too_large", f"{key} is {size} bytes; the limit is {max_bytes}"))
    data = read(max_bytes + 1)
    if len(data) > max_bytes:
        return Item(key, error=("media_too_large", f"{key} exceeds {max_bytes} bytes"))
    return Item(key, data=data)


def _tar(path: Path, max_bytes: int) -> Iterator[Item]:
    """Streaming mode (`r|*`): members are read in order, nothing is seeked or extracted."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key = f"{path}::{member.name}"
                fh = tar.extractfile(member)
                yield _member_item(key, member.size, fh.read, max_bytes)
    except (tarfile.TarError, OSError, EOFError) as exc:
        yield Item(f"{path}::", error=("decode_failed", f"unreadable tar archive {path.name}: {exc}"))


def _zip(path: Path, max_bytes: int) -> Iterator[Item]:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                key = f"{path}::{info.filename}"
                try:
                    with zf.open(info) as fh:  # file_size is what the member says: bounded read anyway
                        yield _member_item(key, info.file_size, fh.read, max_bytes)
                except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                    yield Item(key, error=("decode_failed", f"unreadable zip member: {exc}"))
    except (zipfile.BadZipFile, OSError) as exc:
        yield Item(f"{path}::", error=("decode_failed", f"unreadable zip archive {path.name}: {exc}"))


def _manifest(path: Path, max_bytes: int, path_column: str | None) -> Iterator[Item]:
    """A dataset's manifest: one row per file, its path (relative to the manifest) in a column."""
    base = path.parent
    for value in _manifest_paths(path, path_column):
        p = Path(value)
        p = p if p.is_absolute() else base / p
        yield Item(str(p), path=str(p))


def _manifest_paths(path: Path, path_column: str | None) -> Iterator[str]:
    if path.name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        column = _column(pf.schema_arrow.names, path_column, path)
        for batch in pf.iter_batches(columns=[column], batch_size=10_000):
            yield from (str(v) for v in batch.column(0).to_pylist() if v)
    else:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            column = _column(reader.fieldnames or [], path_column, path)
            for row in reader:
                if row.get(column):
                    yield row[column]


def _column(names: list[str], wanted: str | None, path: Path) -> str:
    if wanted:
        if wanted not in names:
            raise MediaError("decode_failed", f"{path.name} has no column {wanted!r} (columns: {', '.join(names)})")
        return wanted
    for name in PATH_COLUMNS:
        if name in names:
            return name
    raise MediaError("decode_failed", f"{path.name}: no path column ({', '.join(PATH_COLUMNS)}); pass --path-column")
