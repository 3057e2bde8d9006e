"""HMA's names for what vigil has: signal types, content types, and integer content ids.

HMA (OpenMediaMatch) calls a video's MD5 `video_md5` and numbers bank content with integers;
vigil's entries have ids like `f-<16 hex>` (a file) or `h-<16 hex>` (an imported hash). The 16
hex digits are the integer, so an id round-trips without a table (ids above 2^53 need a client
that keeps JSON integers exact, as Python and Go do; JavaScript's Number does not)."""
from __future__ import annotations

import re

from workers.api.problems import Problem
from workers.signals import ALL_SIGNALS, normalise

HMA_TO_VIGIL = {"pdq": "pdq", "video_md5": "md5"}
# What /h/hash returns per content type when `types` is not given; vigil's own names after HMA's.
PHOTO_TYPES = ("pdq", "phash", "md5", "sha256")
VIDEO_TYPES = ("video_md5", "sha256")
CONTENT_TYPES = ("photo", "video")
SIGNAL_TYPES = ("pdq", "video_md5") + tuple(s for s in ALL_SIGNALS if s not in ("pdq",))
HMA_BANK_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")  # HMA's rule for names created through /c/banks
_ID = re.compile(r"^[fh]-([0-9a-f]{16})$")


def vigil_signal(signal_type: str) -> str:
    """HMA's signal type name (or vigil's own) to vigil's, or 400."""
    name = HMA_TO_VIGIL.get(signal_type, signal_type)
    if name not in ALL_SIGNALS:
        raise Problem(400, f"No such SignalType '{signal_type}' (vigil serves {', '.join(SIGNAL_TYPES)})")
    return name


def hma_signal(signal: str, media_type: str | None) -> str:
    return "video_md5" if signal == "md5" and media_type == "video" else signal


def checked_value(signal_type: str, value: str) -> tuple[str, str]:
    name = vigil_signal(signal_type)
    try:
        return name, normalise(name, value)
    except ValueError as exc:
        raise Problem(400, f"invalid signal: {exc}") from None


def content_id(entry_id: str) -> int:
    m = _ID.match(entry_id)
    if m is None:  # an id not made by vigil's id functions: a stable number, but one-way
        import hashlib

        return int(hashlib.sha256(entry_id.encode()).hexdigest()[:13], 16)
    return int(m.group(1), 16)


def entry_ids(content: int) -> list[str]:
    """The vigil entry ids an HMA content id may stand for (a file's, then a hash's)."""
    if not 0 <= content < 1 << 64:
        return []
    hexpart = f"{content:016x}"
    return [f"f-{hexpart}", f"h-{hexpart}"]
