"""Building and parsing the wire messages (topics/schemas). The only place that knows their shapes."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from topics import SCHEMA_VERSION, SchemaError, validate
from workers.errors import MediaError
from workers.ops.logs import now_ms

DLQ_VALUE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Source:
    """Where an input message came from: enough to find it again, and its submit time."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def parse_json(raw: bytes | None, schema: str, max_bytes: int) -> dict[str, Any]:
    """Bytes to a schema-valid dict, or MediaError with the dead-letter code that says why not."""
    if raw is None:
        raise MediaError("schema_invalid", "the message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise MediaError("message_too_large", f"message is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MediaError("invalid_utf8", f"value is not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MediaError("not_json", f"value is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MediaError("not_json", "value nests deeper than the JSON parser allows") from None
    if "\\u" in text:  # valid UTF-8 can still spell a lone surrogate as an escape
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MediaError("invalid_utf8", "a \\u escape spells a lone surrogate, not a character") from None
    try:
        validate(schema, obj)
    except SchemaError as exc:
        raise MediaError("schema_invalid", str(exc)) from None
    return obj


def dead_letter(src: Source, code: str, message: str, stage: str, worker: str,
                event: dict[str, Any] | None = None) -> dict[str, Any]:
    value, encoding, truncated = None, "utf-8", False
    if src.value is not None:
        raw = src.value[:DLQ_VALUE_LIMIT]
        truncated = len(src.value) > DLQ_VALUE_LIMIT
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    key = src.key.decode("utf-8", "replace") if src.key is not None else None
    ids = _ids(event, src)
    return {
        "schema_version": SCHEMA_VERSION,
        "code": code,
        "message": message[:2000],
        "stage": stage,
        "worker": worker,
        "failed_at_ms": now_ms(),
        "event_id": ids[0],
        "content_id": ids[1],
        "original": {"topic": src.topic, "partition": src.partition, "offset": src.offset,
                     "timestamp_ms": src.timestamp_ms, "key": key, "value": value,
                     "value_encoding": encoding, "value_truncated": truncated},
    }


def _ids(event: dict[str, Any] | None, src: Source) -> tuple[str | None, str | None]:
    """Best-effort ids for a message that may be malformed, so dead letters can be traced."""
    if event is None and src.value is not None and len(src.value) <= DLQ_VALUE_LIMIT:
        try:
            event = json.loads(src.value)
        except (ValueError, UnicodeDecodeError):
            event = None
    if not isinstance(event, dict):
        return None, None
    ids = tuple(v if isinstance(v, str) else None for v in (event.get("event_id"), event.get("content_id")))
    return ids  # type: ignore[return-value]


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
