"""Still images: bytes to one RGB frame, with the decompression-bomb check before decoding."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from workers.errors import MediaError

# Magic numbers of the containers vigil treats as video (decoded by workers.media.video).
_VIDEO_MAGIC = (b"\x1aE\xdf\xa3",)  # Matroska / WebM


def sniff_media_type(data: bytes) -> str:
    """'video' or 'image' from the first bytes; the uploader's media_type is only a hint."""
    head = data[:16]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "image" if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1") else "video"
    if head.startswith(_VIDEO_MAGIC) or head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    return "image"


def image_size(data: bytes) -> tuple[int, int] | None:
    """Declared (width, height) from the header, without decoding pixels; None if unknown."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """One RGB uint8 frame. Dimensions are checked from the header first: a 50,000 x 50,000 PNG
    of a few KB is refused before a byte of it is inflated."""
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise MediaError("image_too_large", f"image declares {size[0]}x{size[1]} pixels; the limit is {max_pixels}")
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # applies EXIF orientation
    if bgr is None:
        bgr = _decode_with_pillow(data, max_pixels)
    if bgr is None or bgr.size == 0:
        raise MediaError("decode_failed", "the bytes are not a decodable image")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise MediaError("image_too_large", f"decoded image is {bgr.shape[1]}x{bgr.shape[0]}; the limit is {max_pixels}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_with_pillow(data: bytes, max_pixels: int) -> np.ndarray | None:
    """Formats OpenCV lacks (GIF, some WebP/TIFF variants): first frame only."""
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            rgb = np.asarray(im.convert("RGB"))
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception:
        return None
