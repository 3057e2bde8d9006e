import os

import pytest

from workers.errors import MediaError
from workers.media.fetch import read_media, resolve_uri


def _code(fn, *a):
    with pytest.raises(MediaError) as err:
        fn(*a)
    return err.value.code


def test_file_under_root_is_read(tmp_path):
    f = tmp_path / "a.jpg"
    f.write_bytes(b"abc")
    assert read_media(resolve_uri(f.as_uri(), (str(tmp_path),)), 100) == b"abc"


def test_refusals(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (root / "link.jpg").symlink_to(outside)
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "big.jpg").write_bytes(b"x" * 101)
    roots = (str(root),)
    assert _code(resolve_uri, outside.as_uri(), roots) == "outside_media_roots"
    assert _code(resolve_uri, f"file://{root}/../secret.jpg", roots) == "outside_media_roots"
    assert _code(resolve_uri, (root / "link.jpg").as_uri(), roots) == "outside_media_roots"
    assert _code(resolve_uri, (root / "nope.jpg").as_uri(), roots) == "media_not_found"
    assert _code(resolve_uri, "http://example.invalid/a.jpg", roots) == "unsupported_uri"
    assert _code(resolve_uri, "/no/scheme.jpg", roots) == "unsupported_uri"
    assert _code(resolve_uri, "file://otherhost/a.jpg", roots) == "unsupported_uri"
    assert _code(resolve_uri, outside.as_uri(), ()) == "outside_media_roots"
    assert _code(read_media, resolve_uri((root / "dir").as_uri(), roots), 100) == "not_a_file"
    assert _code(read_media, resolve_uri((root / "fifo.jpg").as_uri(), roots), 100) == "not_a_file"  # never blocks
    assert _code(read_media, resolve_uri((root / "empty.jpg").as_uri(), roots), 100) == "empty_media"
    assert _code(read_media, resolve_uri((root / "big.jpg").as_uri(), roots), 100) == "media_too_large"


def test_device_file_is_not_media():
    assert _code(read_media, resolve_uri("file:///dev/null", ("/dev",)), 100) == "not_a_file"
