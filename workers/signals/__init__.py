"""Signals: the hashes vigil computes and matches.

Perceptual signals (pdq, phash, dhash) are computed from decoded RGB frames; byte digests
(md5, sha256) from the file's bytes. Hex encoding follows the industry lists: bit i of the
hash is the i-th most significant bit of the hex string (as python-threatexchange writes PDQ).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

PERCEPTUAL_BITS: dict[str, int] = {"pdq": 256, "phash": 64, "dhash": 64}
DIGEST_HEX_LEN: dict[str, int] = {"md5": 32, "sha1": 40, "sha256": 64}
ALL_SIGNALS = tuple(PERCEPTUAL_BITS) + tuple(DIGEST_HEX_LEN)
# What the hasher computes for every frame unless told otherwise.
DEFAULT_PERCEPTUAL = ("pdq", "phash")


@dataclass(frozen=True)
class SignalValue:
    signal: str
    value: str  # lower-case hex
    quality: int | None = None  # PDQ quality, or the pHash detail score (0-100)
    frame_ms: int | None = None
    variant: str | None = None

    def to_json(self) -> dict:
        out: dict = {"signal": self.signal, "value": self.value}
        for key in ("quality", "frame_ms", "variant"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "SignalValue":
        return cls(obj["signal"], obj["value"], obj.get("quality"), obj.get("frame_ms"), obj.get("variant"))


def limit_native_threads() -> None:
    """One BLAS and one OpenCV thread per process. The hashes' matrix products are tiny, and a
    worker already runs frames in parallel: letting OpenBLAS spread each product over every core
    made a 512 px image cost ~28 ms instead of ~1.3 ms on a busy 2-core machine."""
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    cv2.setNumThreads(1)


def is_perceptual(signal: str) -> bool:
    return signal in PERCEPTUAL_BITS


def bits_to_hex(bits: np.ndarray) -> str:
    """A 0/1 vector, most significant bit first, as hex."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value)


def normalise(signal: str, value: str) -> str:
    """Validate and canonicalise a hash as written in a list or by a user; raises ValueError."""
    signal = signal.strip().lower()
    value = value.strip().lower()
    if signal in PERCEPTUAL_BITS:
        want = PERCEPTUAL_BITS[signal] // 4
    elif signal in DIGEST_HEX_LEN:
        want = DIGEST_HEX_LEN[signal]
    else:
        raise ValueError(f"unknown signal {signal!r} (known: {', '.join(ALL_SIGNALS)})")
    if len(value) != want:
        raise ValueError(f"{signal} hash must be {want} hex characters, got {len(value)}")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{signal} hash is not hex: {value[:80]!r}") from None
    return value


def hash_bytes(data: bytes) -> list[SignalValue]:
    """Exact digests of the file: catch byte-identical re-uploads without decoding."""
    return [
        SignalValue("md5", hashlib.md5(data).hexdigest()),
        SignalValue("sha256", hashlib.sha256(data).hexdigest()),
    ]


def file_digests(path, max_bytes: int) -> list[SignalValue]:
    """hash_bytes for a file too large to hold in memory (a video), read in chunks."""
    from workers.media.fetch import iter_media

    md5, sha256 = hashlib.md5(), hashlib.sha256()
    for chunk in iter_media(path, max_bytes):
        md5.update(chunk)
        sha256.update(chunk)
    return [SignalValue("md5", md5.hexdigest()), SignalValue("sha256", sha256.hexdigest())]


def hash_frames(
    frames: Sequence[np.ndarray],
    signals: Iterable[str] = DEFAULT_PERCEPTUAL,
    impl: str = "fast",
    dihedral: bool = False,
) -> list[list[SignalValue]]:
    """Perceptual hashes of RGB uint8 frames (H, W, 3): one list of SignalValue per frame.

    impl="fast" is the vectorised path the hasher uses; impl="reference" calls pdqhash and
    imagehash directly and is kept as the definition the fast path is checked against.
    dihedral=True appends the rotated/flipped variants (variant='rot90', 'flip-h', ...).
    """
    signals = tuple(signals)
    if impl == "reference":
        from workers.signals import reference as backend
    elif impl == "fast":
        from workers.signals import fast as backend
    else:
        raise ValueError(f"unknown signal implementation {impl!r} (fast | reference)")
    return backend.hash_frames(list(frames), signals, dihedral=dihedral)
