import copy
import json

import jsonschema
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from topics import schema as topic_schema, validate
from workers.errors import CODES, MediaError
from workers.stream.messages import Source, dead_letter, parse_json


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


# -- the compiled validator (fastjsonschema) agrees with the reference (jsonschema) ---------------
_SIGNAL = {"signal": "pdq", "value": "ab" * 32, "quality": 90, "frame_ms": 0, "variant": "rot90"}
_VALID = {
    "upload": {"schema_version": 1, "event_id": "e1", "content_id": "c1", "media_uri": "file:///m/a.jpg",
               "media_type": "image", "metadata": {"k": "v"}},
    "hashes": {"schema_version": 1, "event_id": "e1", "content_id": "c1", "source": "upload",
               "media_type": "video", "submitted_at_ms": 1, "part": 0, "final": True, "partial": False,
               "notes": [], "signals": [_SIGNAL], "hasher": {"worker": "h", "latency_ms": {"decode": 1.5}}},
    "live_hashes": {"schema_version": 1, "stream_id": "s", "seq": 3, "captured_at_ms": 5, "end_of_stream": False,
                    "skipped": 0, "signals": [_SIGNAL], "hasher": {"worker": "h", "latency_ms": {"hash": 2}}},
}
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False)
                     | st.text(max_size=8) | st.sampled_from(["image", "video", "pdq", "ab" * 32, "file:///x"]),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def _mutants(draw):
    name = draw(st.sampled_from(sorted(_VALID)))
    msg = copy.deepcopy(_VALID[name])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(msg))))
        if not path:
            continue
        parent = msg
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(_JSON)
        else:
            parent[path[-1]] = draw(_JSON)
    return name, msg


@hsettings(max_examples=1500, deadline=None)
@given(_mutants())
def test_compiled_validator_agrees_with_jsonschema(case):
    name, msg = case
    reference = topic_schema._validator(name).is_valid(msg)
    try:
        topic_schema._fast(name)(msg)
        fast = True
    except Exception:
        fast = False
    assert fast == reference, (name, msg)


def test_valid_examples_pass_both():
    for name, msg in _VALID.items():
        validate(name, msg)
        assert topic_schema._validator(name).is_valid(msg)
    assert jsonschema  # the reference stays a dependency: it writes the error messages
