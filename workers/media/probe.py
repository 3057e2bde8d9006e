"""What media bytes are: an image vigil decodes, or a video FFmpeg opens. One answer for every
path (`vigil bank add`, the upload hasher, `vigil live push`, later `vigil scan`).

The image formats vigil decodes have few, fixed signatures, so those are recognised from the
first bytes. Everything else is handed to FFmpeg's probe, which knows hundreds of containers
(MPEG-TS and -PS, FLV, Ogg, ASF, MXF, raw H.264/HEVC...): a list of video magic numbers would
let a known video re-muxed into a container missing from it pass as "a broken image".

FFmpeg's probe reads hostile input, so it runs under limits: ``probesize`` (bytes read to find
the streams), ``analyzeduration`` (stream time read for their parameters), a wall-clock timeout
on opening (FFmpeg's interrupt callback), a cap on the number of streams, and a demuxer
allow-list that leaves out what reads other files or the network (HLS and DASH playlists, concat
scripts, IMF compositions, SDP, image sequences): a playlist named clip.mp4 must not make the
hasher read /etc/passwd or fetch a URL. Only the ``file`` protocol is allowed.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

import av
from PIL import Image

from workers.errors import MediaError
from workers.settings import Settings

# Signatures of the image formats vigil decodes (workers.media.image: OpenCV, then Pillow).
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
)
# ISO BMFF brands that are still images (HEIF, AVIF): the rest of ftyp files are videos.
_IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1")
# FFmpeg demuxers that read a single image, not a video: such bytes go to the image decoder.
_FFMPEG_IMAGE_FORMATS = {"ico", "apng", "gif", "image2pipe"}
# Demuxers left out of the allow-list: they open other files or URLs named inside the input.
_REFERENCING_FORMATS = {"hls", "dash", "concat", "imf", "sdp", "webm_dash_manifest", "ffmetadata", "bluray",
                        "dvdvideo", "vapoursynth", "avisynth", "image2"}


@dataclass(frozen=True)
class ProbeLimits:
    """Bounds on FFmpeg's probe. The defaults are FFmpeg's own probesize and analyzeduration
    (enough for every container in tests/test_containers.py), made explicit so a setting, not
    a library default, is what a crafted file runs into."""

    probe_bytes: int = 5_000_000  # probesize
    probe_seconds: float = 5.0  # analyzeduration, of stream time
    open_timeout_s: float = 10.0  # wall clock for opening and probing
    max_streams: int = 64

    def container_options(self) -> dict[str, str]:
        return {
            "probesize": str(max(32, int(self.probe_bytes))),
            "analyzeduration": str(max(0, int(self.probe_seconds * 1_000_000))),
            "max_streams": str(max(1, int(self.max_streams))),
            "format_whitelist": _allowed_formats(),
            "protocol_whitelist": "file",
            "enable_drefs": "0",  # MP4 data references to other files (off by default; stays off)
        }


def probe_limits(settings: Settings) -> ProbeLimits:
    return ProbeLimits(settings.video_probe_bytes, settings.video_probe_seconds, settings.video_open_timeout_s)


@lru_cache(maxsize=1)
def _allowed_formats() -> str:
    names = []
    for name in sorted(av.formats_available):
        try:
            fmt = av.ContainerFormat(name, "r")
        except (ValueError, av.error.FFmpegError):
            continue  # a muxer only
        if not fmt.no_file and name not in _REFERENCING_FORMATS:  # no_file: devices, network
            names.append(name)
    return ",".join(names)


@dataclass(frozen=True)
class MediaKind:
    """What the bytes are. ``format`` is the image format or FFmpeg's demuxer name."""

    kind: str  # image | video
    format: str


def image_signature(head: bytes) -> str | None:
    """The image format these first bytes (16 suffice) start, or None."""
    for sig, name in _IMAGE_SIGNATURES:
        if head.startswith(sig):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
        return "heif"
    return None


def media_kind(source: str | os.PathLike | bytes, limits: ProbeLimits = ProbeLimits()) -> MediaKind:
    """Image or video, from the bytes (a path, or the bytes themselves); the name and the
    uploader's media_type are never asked. MediaError: decode_failed when neither an image
    signature nor FFmpeg recognises them, no_video_stream when FFmpeg finds only audio (or
    subtitles, data): nothing could be checked, so it is not allowed either."""
    if isinstance(source, bytes):
        head = source[:16]
    else:
        with open(source, "rb") as f:
            head = f.read(16)
    fmt = image_signature(head)
    if fmt is not None:
        return MediaKind("image", fmt)
    try:
        container = open_container(source, limits, options={"skip_frame": "all"})  # no probe decode: only streams matter
    except MediaError as exc:
        if _pillow_reads(source):  # an image without a fixed signature (TGA...)
            return MediaKind("image", "pillow")
        raise MediaError("decode_failed", f"neither an image vigil decodes nor a container FFmpeg opens "
                                          f"({exc.message})") from None
    with container:
        name = container.format.name
        if name.endswith("_pipe") or name in _FFMPEG_IMAGE_FORMATS:
            return MediaKind("image", name)
        if not container.streams.video:
            if _pillow_reads(source):
                return MediaKind("image", "pillow")
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise MediaError("no_video_stream", f"no video stream (the {name} file holds {', '.join(kinds)})")
    return MediaKind("video", name)


def _pillow_reads(source: str | os.PathLike | bytes) -> bool:
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source):
            return True
    except Image.DecompressionBombError:
        return True  # an image: decode_image refuses it as image_too_large
    except Exception:
        return False


def open_container(source: str | os.PathLike | bytes | BinaryIO, limits: ProbeLimits = ProbeLimits(),
                   options: dict[str, str] | None = None):
    """An FFmpeg input container under the probe limits (the caller closes it); MediaError
    decode_failed when FFmpeg cannot open it, the probe runs out of time, or the demuxer it
    guesses is not allowed. ``options`` reach the probe's decoders as well as the demuxer."""
    if isinstance(source, bytes):
        target: str | BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        target = "file:" + os.path.abspath(source)  # never parsed as another protocol ("http:x.ts")
    else:
        target = source
    try:
        return av.open(target, metadata_errors="ignore", options=options or {},
                       container_options=limits.container_options(), timeout=(limits.open_timeout_s, None))
    except av.error.ExitError:  # the interrupt callback: the open timeout passed
        raise MediaError("decode_failed", f"probing took over {limits.open_timeout_s:g} s") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError("decode_failed", f"not a readable container: {_short(exc)}") from None


def _short(exc: Exception) -> str:
    """FFmpeg's message without the path it was given (logs and dead letters carry no paths)."""
    return re.sub(r": '(?:file:)?/[^']*'", "", str(exc))


def cut_inside_packet(path: str | os.PathLike, format_name: str) -> str | None:
    """A note when the file ends inside one of its container's own packets, which demuxers drop
    without a word: an MPEG-TS file not a whole number of 188/192/204-byte packets, a Matroska
    segment declaring more bytes than the file has, an Ogg file whose last page is cut or does
    not end its stream. None when nothing says it was cut (a cut
    exactly on a packet boundary looks like a shorter file)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(1024)
    if format_name == "mpegts":
        for offset in range(min(len(head), 204)):
            for packet in (188, 192, 204):
                if all(head[offset + k * packet:offset + k * packet + 1] == b"\x47" for k in range(3)):
                    start = offset - 4 if packet == 192 else offset  # M2TS: a 4-byte timecode first
                    tail = (size - start) % packet
                    return (f"the file ends {tail} bytes into a {packet}-byte transport packet: cut short"
                            if tail else None)
        return None
    if format_name.startswith("matroska"):
        declared = _matroska_segment_end(head)
        if declared is not None and declared > size:
            return f"the Matroska segment declares {declared} bytes, the file has {size}: cut short"
    if format_name == "ogg":
        with open(path, "rb") as f:
            f.seek(max(0, size - _OGG_TAIL))
            return _ogg_tail(f.read())
    return None


_OGG_TAIL = 2 * (27 + 255 + 255 * 255)  # two of the largest Ogg pages: the window holds a page start


def _ogg_tail(tail: bytes) -> str | None:
    """Walk the pages of the file's tail from the first true page start: the last page must be
    whole and carry the end-of-stream flag the muxer writes when a recording is finished."""
    start = tail.find(b"OggS")
    while start >= 0:
        pos = start
        while pos + 27 <= len(tail) and tail[pos:pos + 4] == b"OggS" and tail[pos + 4] == 0:
            segments = tail[pos + 26]
            if pos + 27 + segments > len(tail):
                return "the file ends inside an Ogg page header: cut short"
            end = pos + 27 + segments + sum(tail[pos + 27:pos + 27 + segments])
            if end > len(tail):
                return f"the file ends {len(tail) - pos} bytes into an Ogg page of {end - pos}: cut short"
            if end == len(tail):
                return None if tail[pos + 5] & 0x04 else "the last Ogg page does not end its stream: cut short"
            pos = end
        start = tail.find(b"OggS", start + 1)  # a false "OggS" inside page data: try the next
    return None


def _matroska_segment_end(head: bytes) -> int | None:
    """Where the Segment element says it ends (None: unknown size, as live recordings write)."""
    i = head.find(b"\x18\x53\x80\x67")
    if i < 0 or i + 5 > len(head):
        return None
    first = head[i + 4]
    width = next((w for w in range(1, 9) if first & (0x80 >> (w - 1))), 0)
    if not width or i + 4 + width > len(head):
        return None
    value = first & (0xFF >> width)
    for b in head[i + 5:i + 4 + width]:
        value = value << 8 | b
    if value == (1 << (7 * width)) - 1:
        return None  # all ones: unknown size
    return i + 4 + width + value

