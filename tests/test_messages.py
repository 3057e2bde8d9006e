import json

import pytest

from topics import validate
from workers.errors import CODES, MediaError
from workers.messages import Source, dead_letter, parse_json


def _good(**kw):
    e = {"schema_version": 1, "event_id": "e1", "content_id": "c1", "media_uri": "file:///m/a.jpg"}
    e.update(kw)
    return json.dumps(e).encode()


@pytest.mark.parametrize("raw,code", [
    (b"not json at all", "not_json"),
    (b"\xff\xfe\x00garbage", "invalid_utf8"),
    (json.dumps({"schema_version": 1, "event_id": "e1"}).encode(), "schema_invalid"),
    (_good(extra_field=1), "schema_invalid"),
    (_good(event_id=5), "schema_invalid"),
    (_good(media_type="audio"), "schema_invalid"),
    (_good(schema_version=2), "schema_invalid"),
    (b"[1, 2, 3]", "schema_invalid"),
    (None, "schema_invalid"),
])
def test_bad_upload_messages_get_their_code(raw, code):
    with pytest.raises(MediaError) as err:
        parse_json(raw, "upload", 1_000_000)
    assert err.value.code == code and code in CODES


def test_huge_message_is_refused_before_parsing():
    with pytest.raises(MediaError) as err:
        parse_json(_good(metadata={"x": "y" * 2000}), "upload", 1000)
    assert err.value.code == "message_too_large"


def test_missing_field_message_names_it():
    with pytest.raises(MediaError, match="content_id"):
        parse_json(json.dumps({"schema_version": 1, "event_id": "e", "media_uri": "file:///x"}).encode(), "upload", 10**6)


def test_dead_letter_is_schema_valid_and_keeps_the_original():
    src = Source("moderation.uploads", 2, 41, 1700000000000, b"c1", _good())
    dl = dead_letter(src, "media_not_found", "no such file", "hasher", "hasher-1")
    validate("dead_letter", dl)
    assert dl["event_id"] == "e1" and dl["content_id"] == "c1"
    assert json.loads(dl["original"]["value"])["media_uri"] == "file:///m/a.jpg"
    assert dl["original"]["offset"] == 41 and dl["original"]["key"] == "c1"


def test_dead_letter_of_binary_value_is_base64():
    src = Source("moderation.uploads", 0, 1, None, None, b"\xff\x00\x01")
    dl = dead_letter(src, "invalid_utf8", "x", "hasher", "w")
    validate("dead_letter", dl)
    assert dl["original"]["value_encoding"] == "base64" and dl["event_id"] is None


def test_undocumented_code_is_a_bug():
    with pytest.raises(ValueError):
        MediaError("made_up", "x")
