"""Dead-letter codes: the documented list. Each failure that stops an event carries one."""
from __future__ import annotations

CODES: dict[str, str] = {
    "not_json": "the message value is not a JSON document",
    "invalid_utf8": "the message value is not valid UTF-8",
    "schema_invalid": "the JSON does not match the topic's schema (missing, extra or mistyped fields)",
    "message_too_large": "the message exceeds VIGIL_MAX_MESSAGE_BYTES",
    "unsupported_uri": "media_uri has a scheme vigil does not fetch (only file:// today)",
    "outside_media_roots": "media_uri resolves outside every configured media root (incl. '..' and symlinks)",
    "media_not_found": "media_uri names no existing file",
    "not_a_file": "media_uri names a directory, device, FIFO or socket",
    "media_too_large": "the file exceeds VIGIL_MAX_MEDIA_BYTES",
    "empty_media": "the file is zero bytes",
    "image_too_large": "the image's declared dimensions exceed VIGIL_MAX_IMAGE_PIXELS (decompression bomb guard)",
    "decode_failed": "the bytes are not a decodable image or video (no image signature, and FFmpeg's bounded probe cannot open them)",
    "no_video_stream": "a video container without a video stream (audio only): dead-lettered, not allowed, since nothing was checked",
    "unsupported_media": "a media type vigil does not process yet (for example video before video support)",
    "truncated_media": "the file stops before its format's end marker (JPEG EOI, PNG IEND, WebP RIFF length, GIF trailer)",
    "decode_too_costly": "the image's structure would cost far more to decode than its size suggests (JPEG with over 200 scans)",
    "incomplete_video": "a video's hashes stopped arriving before its final part (VIGIL_VIDEO_PART_TIMEOUT_S); nothing was decided",
    "host_not_allowed": "a media URL names a host outside VIGIL_FETCH_ALLOWED_HOSTS, or a scheme other than http(s)",
    "private_address": "a media URL (or one of its redirects) resolves to a private, loopback, link-local or reserved address",
    "fetch_failed": "a media URL could not be downloaded (DNS, connection, HTTP status, timeout or too many redirects)",
    "internal_error": "an unexpected error in vigil itself; the event is not retried forever",
}


class MediaError(Exception):
    """A failure caused by the input, not by vigil: the event goes to the dead-letter topic."""

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"undocumented dead-letter code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
