"""The JSON hash lists of StopNCII.org and Tech Against Terrorism (TCAP), saved to a file.

Neither publishes a file format: both are APIs. What is accepted is their API's JSON as you would
save it: one response, an array of records, or JSON Lines of responses/records (see jsonstream).

stopncii: records of the FetchHashes API (api.stopncii.org/v1, as python-threatexchange's client
models them): {"signalType": "ImagePDQ"|"VideoMD5"|"VideoTMK"|"Text"|"URL", "hashValue": ...,
"hashStatus": "Received"|"Active"|"Withdrawn"|"Deleted", "caseNumbers": {...},
"lastModtimestamp": int, "CSPFeedbacks": [{"source", "feedbackValue", "tags"}], "hashRegions": [...]},
wrapped in pages {"count", "nextPageToken", "nextSetTimestamp", "hasMoreRecords", "hashRecords": [...]}.
ImagePDQ -> pdq and VideoMD5 -> md5; other types are unsupported; Withdrawn/Deleted hashes are
removals and are reported, not imported.

tat: entries of the TCAP Content Hash List API (docs.terrorismanalytics.org, hash-list v2, and
python-threatexchange's TATHashListEntry): {"id", "hash_digest", "algorithm": "MD5"|"SHA256"|
"SHA512"|"PDQ"|"TMK", "ideology", "file_type", "deleted", "created_on", "updated_on"}, bare or in
pages {"count", "next", "previous", "checkpoint", "results": [...]}. MD5/SHA256/PDQ are imported
whatever the file type (vigil's digests are of any file's bytes); deleted entries are reported.
"""
from __future__ import annotations

import json
from typing import IO, Any, Iterator

from workers.bank.formats.jsonstream import iter_json_records
from workers.bank.formats.records import InvalidLine, Item, UnsupportedLine, clip, make_record, vigil_signal
from workers.bank.formats.text import as_text

STOPNCII_TYPES = {"ImagePDQ": "pdq", "VideoMD5": "md5"}
STOPNCII_REMOVED = ("Withdrawn", "Deleted")
TAT_ALGORITHMS = ("MD5", "SHA1", "SHA256", "PDQ")


def _snippet(obj: Any) -> str:
    return clip(json.dumps(obj, separators=(",", ":"), default=str))


def _str(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return ",".join(sorted(str(v) for v in value))
    return str(value)


def parse_stopncii(fileobj: IO) -> Iterator[Item]:
    with as_text(fileobj) as text_file:
        for line, rec in iter_json_records(text_file, ("hashRecords",)):
            yield _stopncii_item(line, rec)


def _stopncii_item(line: int, rec: Any) -> Item:
    if not isinstance(rec, dict):
        return InvalidLine(line, "expected a StopNCII hash record object", _snippet(rec))
    kind, value = rec.get("signalType"), rec.get("hashValue")
    if not isinstance(kind, str) or not isinstance(value, str):
        return InvalidLine(line, "a StopNCII record needs string signalType and hashValue", _snippet(rec))
    status = rec.get("hashStatus")
    if status in STOPNCII_REMOVED:
        return UnsupportedLine(line, status.lower(), f"StopNCII hash {status.lower()}: a removal, not a hash", _snippet(rec))
    signal = STOPNCII_TYPES.get(kind)
    if signal is None:
        return UnsupportedLine(line, kind, f"vigil cannot match StopNCII {kind} hashes", _snippet(rec))
    extra: dict[str, str] = {}
    if status is not None:
        extra["hash_status"] = str(status)
    if "lastModtimestamp" in rec:
        extra["last_modified"] = str(rec["lastModtimestamp"])
    cases = rec.get("caseNumbers")
    if isinstance(cases, (dict, list)):
        extra["cases"] = str(len(cases))
    if rec.get("hashRegions"):
        extra["regions"] = _str(rec["hashRegions"])
    feedbacks = rec.get("CSPFeedbacks") or []
    if isinstance(feedbacks, list) and feedbacks:
        extra["feedback"] = _str(
            [f"{fb.get('source', '')}:{fb.get('feedbackValue', '')}" for fb in feedbacks if isinstance(fb, dict)]
        )
        tags = {t for fb in feedbacks if isinstance(fb, dict) for t in (fb.get("tags") or ())}
        if tags:
            extra["tags"] = _str(tags)
    return make_record(line, signal, value, lambda: _snippet(rec), source="stopncii", extra=extra)


def parse_tat(fileobj: IO) -> Iterator[Item]:
    with as_text(fileobj) as text_file:
        for line, rec in iter_json_records(text_file, ("results",)):
            yield _tat_item(line, rec)


def _tat_item(line: int, rec: Any) -> Item:
    if not isinstance(rec, dict):
        return InvalidLine(line, "expected a TCAP hash list entry object", _snippet(rec))
    algorithm, value = rec.get("algorithm"), rec.get("hash_digest")
    if not isinstance(algorithm, str) or not isinstance(value, str):
        return InvalidLine(line, "a TCAP entry needs string algorithm and hash_digest", _snippet(rec))
    if rec.get("deleted") is True:
        return UnsupportedLine(line, "deleted", "TCAP entry deleted: a removal, not a hash", _snippet(rec))
    signal = vigil_signal(algorithm) if algorithm.upper() in TAT_ALGORITHMS else None
    if signal is None:
        return UnsupportedLine(line, algorithm, f"vigil cannot match TCAP {algorithm} hashes", _snippet(rec))
    extra = {
        key: _str(rec[key])
        for key in ("id", "ideology", "file_type", "created_on", "updated_on")
        if rec.get(key) not in (None, "")
    }
    ideology = rec.get("ideology")
    return make_record(
        line, signal, value, lambda: _snippet(rec),
        label=str(ideology) if ideology else None, source="tat", extra=extra,
    )
