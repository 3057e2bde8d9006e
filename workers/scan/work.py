"""One scanned item to its outcome, in a worker process: the hasher's reading rules, the
hasher's `hash_media` / `hash_video`, the matcher's `BankIndex.search` and video evidence, the
one policy. A scan's decision is the decision an upload of the same bytes would get.

The index is set once in the parent before the pool forks (`set_index`), so every worker reads
the same pages copy-on-write instead of holding its own copy."""
from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from workers.errors import MediaError
from workers.index.matching import BankIndex
from workers.media.fetch import read_media
from workers.media.probe import media_kind, probe_limits
from workers.policy import decide
from workers.settings import Settings
from workers.signals import file_digests
from workers.signals.hashing import hash_media, hash_video
from workers.uploads import video_evidence

_INDEX: BankIndex | None = None
_SETTINGS: Settings | None = None
_TIME_LIMIT_S = 60.0


class _TimeLimit(Exception):
    pass


def set_index(index: BankIndex, settings: Settings, time_limit_s: float) -> None:
    """Before the pool forks: the read-only index and settings every worker uses."""
    global _INDEX, _SETTINGS, _TIME_LIMIT_S
    _INDEX, _SETTINGS, _TIME_LIMIT_S = index, settings, time_limit_s


def _alarm(_signum, _frame):
    raise _TimeLimit()


def init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    signal.signal(signal.SIGALRM, _alarm)
    from workers.signals import limit_native_threads

    limit_native_threads()


def scan_item(item) -> dict[str, Any]:
    """{key, outcome: block|review|allow|error, code?, message?, evidence?, signals?, pdq?}."""
    if item.error is not None:
        code, message = item.error
        return {"key": item.key, "outcome": "error", "code": code, "message": message}
    signal.setitimer(signal.ITIMER_REAL, _TIME_LIMIT_S)
    t0 = time.perf_counter()
    try:
        out = _scan(item)
    except MediaError as exc:
        out = {"key": item.key, "outcome": "error", "code": exc.code, "message": exc.message}
    except _TimeLimit:
        out = {"key": item.key, "outcome": "error", "code": "decode_too_costly",
               "message": f"decoding and hashing took over the scan's time limit of {_TIME_LIMIT_S:g} s"}
    except Exception as exc:  # a bug must not stop the scan; the file is reported
        out = {"key": item.key, "outcome": "error", "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    out["seconds"] = round(time.perf_counter() - t0, 4)
    return out


def _scan(item) -> dict[str, Any]:
    settings, index = _SETTINGS, _INDEX
    if item.data is None and _is_video_file(item.path, settings):
        return _video(item, Path(item.path), settings, index)
    data = item.data if item.data is not None else read_media(Path(item.path), settings.max_media_bytes)
    if media_kind(data, probe_limits(settings)).kind == "video":
        return _video_bytes(item, data, settings, index)
    result = hash_media(data, settings)
    decision, evidence = decide(index.search(result.signals))
    return _result(item, decision, [m.to_json() for m in evidence], result.signals, result.notes, "image")


def _is_video_file(path: str, settings: Settings) -> bool:
    """Decided from the file (media.probe, bounded), so a video is streamed from disk and never
    read whole; FIFOs and devices are left to read_media, which refuses them."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        return media_kind(path, probe_limits(settings)).kind == "video"
    except (OSError, MediaError):
        return False  # read_media or the decoder reports why


def _video_bytes(item, data: bytes, settings: Settings, index: BankIndex) -> dict[str, Any]:
    """An archive member's video goes to a temp file for the decoder, always removed (the one
    place a scan writes media, and only for the time of the decode)."""
    fd, name = tempfile.mkstemp(prefix="vigil-scan-", suffix=".video")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return _video(item, Path(name), settings, index)
    finally:
        Path(name).unlink(missing_ok=True)


def _video(item, path: Path, settings: Settings, index: BankIndex) -> dict[str, Any]:
    """The matcher's video rule (uploads/video_evidence.py) over every part of the video."""
    digests = file_digests(path, settings.max_video_bytes)
    parts, _sampling = hash_video(path, settings)
    state = video_evidence.new_state()
    video_evidence.fold(state, digests, index.search(digests), index)
    first_pdq = []
    for part in parts:
        video_evidence.fold(state, part.signals, index.search(part.signals), index)
        if not first_pdq:
            first_pdq = [s for s in part.signals if s.signal == "pdq" and not s.variant][:1]
    decision, evidence, notes = video_evidence.verdict(state, index, final=True)
    evidence_json = [{**m.to_json(), **video_evidence.percents(state, index, m)} for m in evidence]
    return _result(item, decision, evidence_json, digests + first_pdq, notes, "video")


def _result(item, decision: str, evidence: list[dict], signals, notes: list[str], media_type: str) -> dict[str, Any]:
    pdq = next((s for s in signals if s.signal == "pdq" and not s.variant and (s.quality or 0) >= 50), None)
    out: dict[str, Any] = {"key": item.key, "outcome": decision, "media_type": media_type}
    if evidence:
        out["evidence"] = evidence
    if notes:
        out["notes"] = notes
    out["signals"] = {s.signal: s.value for s in signals if not s.variant and s.frame_ms in (None, 0)}
    if pdq is not None:
        out["pdq"] = pdq.value
    return out
