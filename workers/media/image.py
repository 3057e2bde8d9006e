"""Still images: bytes to one RGB frame, refusing hostile input before any pixel is decoded.

The order matters. First the header: an image whose dimensions cannot be read from it (Pillow
does not know the format, or the bytes are not an image) is not decoded at all, since without
dimensions there is no memory bound, and declared dimensions over max_pixels are refused, so a
50,000 x 50,000 PNG of a few KB is refused before a byte of it is inflated. Then the container
structure is walked (JPEG markers, PNG chunks, the WebP RIFF length, GIF blocks) so a file with a
readable header that stops before its end marker is refused as ``truncated_media`` rather than
hashed from a half-grey decode (a file cut inside its header is ``decode_failed``: nothing says
it was ever an image). Only then is it decoded.

Whether bytes are an image at all is decided before this, from their signature
(workers.media.probe.media_kind).

Polyglots (bytes appended after the image's end marker: a JPEG with a ZIP or HTML behind it, a
GIFAR) are hashed as the image they display. A matcher must not let a known image evade it by
appending junk: a dead letter is not a block. Legitimate photos carry trailers too (MPF second
images, vendor trailers). ``image_notes`` reports the appended bytes so the decision says so.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from workers.errors import MediaError

# A progressive JPEG has about 10 scans; every scan re-walks every coefficient block, so
# thousands of tiny scans make a small file cost minutes of CPU (3,000 scans: 27 s in OpenCV,
# which sets no limit). Encoders write about 10; libjpeg-turbo's fuzz targets stop at 500.
MAX_JPEG_SCANS = 200
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Structure:
    """What walking the container found. ``end`` is the offset just past the image's last
    structure (None for formats not walked); bytes after it are appended data."""

    format: str | None
    end: int | None
    scans: int = 0  # JPEG SOS markers


def image_structure(data: bytes) -> Structure:
    """Walk JPEG/PNG/WebP/GIF structure without decoding; MediaError(truncated_media) when the
    bytes stop before the format's end marker (JPEG EOI, PNG IEND, the RIFF length, GIF trailer).

    Decoders are not trusted with this: libjpeg fills a cut-off scan with grey and calls it a
    warning, libpng happily stops before IEND, and a grey half-image still gets hashed."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:8] == _PNG_SIG:
        return Structure("png", _png(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = int.from_bytes(data[4:8], "little")
        end = 8 + size + (size & 1)
        if len(data) < 8 + size:
            raise MediaError("truncated_media", f"WebP RIFF declares {8 + size} bytes; the file has {len(data)}")
        return Structure("webp", min(end, len(data)))
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return Structure("gif", _gif(data))
    return Structure(None, None)


def _truncated(fmt: str, what: str) -> MediaError:
    return MediaError("truncated_media", f"{fmt} ends before its {what}: the file is cut short")


def _jpeg(data: bytes) -> Structure:
    """Marker segments up to the first scan, then the EOI. Inside entropy-coded data 0xFF is
    always stuffed (FF00) or a restart marker, so the first FFD9 after the first scan is the EOI
    and every FFDA between them starts another scan (an EXIF thumbnail's EOI comes before)."""
    n, i = len(data), 2
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 2 > n:
            raise _truncated("JPEG", "first scan")
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7 or marker == 0x00:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            raise MediaError("decode_failed", "JPEG ends (EOI) before any scan: there is no image in it")
        if i + 4 > n:
            raise _truncated("JPEG", "first scan")
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            raise MediaError("decode_failed", f"JPEG marker segment of length {length} at byte {i}")
        i += 2 + length
        if i > n:
            raise _truncated("JPEG", "first scan")
        if marker == 0xDA:
            break
    eoi = data.find(b"\xff\xd9", i)
    if eoi < 0:
        raise _truncated("JPEG", "end-of-image marker (EOI)")
    scans = 1 + data.count(b"\xff\xda", i, eoi)
    if scans > MAX_JPEG_SCANS:
        raise MediaError("decode_too_costly", f"JPEG has {scans} scans; the limit is {MAX_JPEG_SCANS}")
    return Structure("jpeg", eoi + 2, scans)


def _png(data: bytes) -> int:
    n, i = len(data), 8
    while True:
        if i + 12 > n:
            raise _truncated("PNG", "IEND chunk")
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        i += 12 + length
        if i > n:
            raise _truncated("PNG", "IEND chunk")
        if kind == b"IEND":
            return i


def _gif(data: bytes) -> int:
    """Header, colour table, then extension and image blocks (each a chain of length-prefixed
    sub-blocks) up to the 0x3B trailer. Linear in the bytes, never in the frame count's claims."""
    n = len(data)
    if n < 13:
        raise _truncated("GIF", "logical screen descriptor")
    flags = data[10]
    i = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    while True:
        if i >= n:
            raise _truncated("GIF", "trailer")
        block = data[i]
        if block == 0x3B:
            return i + 1
        if block == 0x21:  # extension: label, then sub-blocks
            i += 2
        elif block == 0x2C:  # image descriptor (10 bytes), local colour table, LZW code size
            if i + 10 > n:
                raise _truncated("GIF", "trailer")
            lflags = data[i + 9]
            i += 10 + (3 * (2 << (lflags & 7)) if lflags & 0x80 else 0) + 1
        else:
            raise MediaError("decode_failed", f"GIF block 0x{block:02x} at byte {i} is not an image or extension")
        while True:  # sub-blocks until the zero-length terminator
            if i >= n:
                raise _truncated("GIF", "trailer")
            size = data[i]
            i += 1 + size
            if size == 0:
                break


def image_size(data: bytes) -> tuple[int, int] | None:
    """Declared (width, height) from the header, without decoding pixels; None if unknown.

    Pillow refuses headers past twice its own MAX_IMAGE_PIXELS at open time; that refusal is a
    decompression bomb and is reported as one (image_too_large), not as 'unknown'."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as exc:
        raise MediaError("image_too_large", f"decompression bomb: {exc}") from None
    except Exception:
        return None


def image_notes(data: bytes) -> list[str]:
    """Facts about the container worth carrying on the decision (appended bytes: a polyglot)."""
    try:
        end = image_structure(data).end
    except MediaError:
        return []
    if end is None or end >= len(data):
        return []
    return [f"{len(data) - end} bytes follow the image's end marker (appended data or a polyglot); "
            f"the image part was hashed"]


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """One RGB uint8 frame (the first, for animations); MediaError for anything else."""
    size = image_size(data)
    if size is None:
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            image_structure(data)  # libwebp will not parse a cut RIFF; its length says what happened
        raise MediaError("decode_failed", "not an image format vigil can read the dimensions of")
    if size[0] * size[1] > max_pixels:
        raise MediaError("image_too_large", f"image declares {size[0]}x{size[1]} pixels; the limit is {max_pixels}")
    image_structure(data)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
    except cv2.error:
        bgr = None
    if bgr is None:
        bgr = _decode_with_pillow(data, max_pixels)
    if bgr is None or bgr.size == 0:
        raise MediaError("decode_failed", "the bytes are not a decodable image")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise MediaError("image_too_large", f"decoded image is {bgr.shape[1]}x{bgr.shape[0]}; the limit is {max_pixels}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# libjpeg scales by 1/2, 1/4 or 1/8 while decoding (the DCT does the work), and decodes luma
# alone when asked: the fast signals read nothing else. Largest factor first.
_REDUCED = {False: ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)),
            True: ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                   (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))}


def decode_for_signals(data: bytes, max_pixels: int, min_side: int, grey: bool) -> np.ndarray:
    """The frame the fast signals need, at the least cost: a JPEG at the largest libjpeg
    reduction that keeps its short side >= min_side, luma only when `grey`; everything else
    through decode_image (then to luma). The same checks as decode_image come first (pixel
    limit, truncated_media, decode_too_costly), so a hostile file is refused the same way."""
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise MediaError("image_too_large", f"image declares {size[0]}x{size[1]} pixels; the limit is {max_pixels}")
    if size is not None and data[:3] == b"\xff\xd8\xff":
        image_structure(data)
        flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
        for factor, reduced in _REDUCED[grey]:
            if min(size) // factor >= min_side:
                flag = reduced
                break
        try:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag)  # applies EXIF orientation
        except cv2.error:
            pixels = None
        if pixels is not None and pixels.size:
            return pixels if grey else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    rgb = decode_image(data, max_pixels)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if grey else rgb


def _decode_with_pillow(data: bytes, max_pixels: int) -> np.ndarray | None:
    """Formats or variants OpenCV lacks: the first frame only, never the rest of an animation.
    Each frame is checked against max_pixels (a GIF frame may be larger than its screen)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            if im.size[0] * im.size[1] > max_pixels:
                return None
            rgb = np.asarray(im.convert("RGB"))
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception:
        return None
