"""Resolving media_uri to bytes, safely: only regular files under the configured media roots.

Upload events come from other systems; a media_uri must not become a way to read /etc/shadow,
block on a FIFO or exhaust memory, so every check happens on the resolved path.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote_to_bytes, urlparse

from workers.errors import MediaError


def resolve_uri(uri: str, roots: tuple[str, ...]) -> Path:
    """The real path a file:// URI names, or MediaError saying why it may not be read."""
    try:
        parsed = urlparse(uri)
    except ValueError as exc:  # e.g. an unbalanced '[' in the authority
        raise MediaError("unsupported_uri", f"not a parseable URI: {exc}") from None
    if parsed.scheme != "file":
        raise MediaError("unsupported_uri", f"only file:// media is fetched, not {parsed.scheme or 'a bare path'!r}")
    if parsed.netloc not in ("", "localhost"):
        raise MediaError("unsupported_uri", f"file:// URIs must not name a host ({parsed.netloc!r})")
    if not roots:
        raise MediaError("outside_media_roots", "no media roots are configured (--media-root / VIGIL_MEDIA_ROOTS)")
    try:
        # Percent-escapes are file-name bytes (not necessarily UTF-8); os.fsdecode keeps them exact.
        name = os.fsdecode(unquote_to_bytes(parsed.path))
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        raise MediaError("unsupported_uri", "media_uri holds characters that are not valid Unicode") from None
    if "\0" in name:
        raise MediaError("unsupported_uri", "media_uri holds a NUL byte")
    raw = Path(name)
    if not raw.is_absolute():
        raise MediaError("unsupported_uri", "file:// URIs must carry an absolute path")
    try:
        real = raw.resolve(strict=True)  # follows symlinks and '..', so the root check sees the truth
    except FileNotFoundError:
        raise MediaError("media_not_found", f"no such file: {raw}") from None
    except (OSError, RuntimeError) as exc:
        raise MediaError("media_not_found", f"cannot resolve {raw}: {exc}") from None
    for root in roots:
        real_root = Path(root).resolve()
        if real == real_root or real_root in real.parents:
            return real
    raise MediaError("outside_media_roots", f"{raw} is not under any configured media root")


def read_media(path: Path, max_bytes: int) -> bytes:
    """Read a regular file of bounded size without ever blocking on FIFOs or devices."""
    return b"".join(iter_media(path, max_bytes))


def iter_media(path: Path, max_bytes: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes in chunks, with read_media's checks; for files too large to hold (videos)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise MediaError("media_not_found", f"no such file: {path}") from None
    except OSError as exc:
        raise MediaError("not_a_file", f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MediaError("not_a_file", f"{path} is not a regular file")
        if st.st_size == 0:
            raise MediaError("empty_media", f"{path} is empty")
        if st.st_size > max_bytes:
            raise MediaError("media_too_large", f"{path} is {st.st_size} bytes; the limit is {max_bytes}")
        total = 0
        while True:
            data = os.read(fd, chunk)
            if not data:
                break
            total += len(data)
            if total > max_bytes:  # grew while we read it
                raise MediaError("media_too_large", f"{path} exceeds {max_bytes} bytes")
            yield data
    finally:
        os.close(fd)
