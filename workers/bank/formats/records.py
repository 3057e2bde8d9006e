"""What every list parser yields: a hash vigil can bank, a line it could not read, or an entry it skips.

Parsers never raise for one bad entry: they yield an InvalidLine with its line number, so an import
can report every problem of a file at once and the CLI can choose all-or-nothing or skip-invalid.
Only a file that is not of the format at all (bad CSV header, broken XML/JSON) raises FormatError.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from workers.bank.model import entry_id_for_hash
from workers.signals import normalise

TEXT_LIMIT = 120  # characters of an offending line kept in a report


@dataclass(slots=True)
class HashRecord:
    """One hash to bank, in vigil's signal names and canonical lower-case hex.

    Treat as immutable. Not frozen only because a frozen dataclass takes five times longer to
    build, which was most of the time spent parsing a ten-million-line list.
    """

    signal: str
    value: str
    label: str | None = None  # the list's own category (NCMEC classification, TAT ideology, CSV label)
    source: str | None = None  # which list it came from: ncmec, stopncii, tat, or a CSV column
    note: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # other fields of the entry, as strings
    line: int = 0  # where it was read (1-based); 0 for records not read from a file

    def key(self) -> tuple:
        """Everything but the position: two records with equal keys bank the same thing."""
        return (self.signal, self.value, self.label, self.source, self.note, tuple(sorted(self.extra.items())))


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """An entry that claims to be a hash vigil knows but is malformed (wrong length, not hex...)."""

    line: int
    reason: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class UnsupportedLine:
    """An entry vigil does not import: a hash type it cannot match (PhotoDNA, TMK, SHA-512...),
    or a list entry that is a removal (NCMEC deleted entries, withdrawn StopNCII cases)."""

    line: int
    kind: str  # the list's own name for it: pdna, tmk-pdqf, VideoTMK, SHA512, deleted...
    reason: str
    text: str = ""


Item = Union[HashRecord, InvalidLine, UnsupportedLine]


class FormatError(ValueError):
    """The file is not of the expected format at all; nothing after `line` can be trusted."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


def clip(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 3] + "..."


# The names lists use for the hashes vigil matches. python-threatexchange (and so HMA's local
# files) name signal types after their classes: VideoMD5Signal -> video_md5, PdqSignal -> pdq.
# vigil's md5/sha256 are digests of the file's bytes whatever the media, so photo_/video_ variants
# all mean the same thing here.
SIGNAL_ALIASES: dict[str, str] = {
    "pdq": "pdq",
    "phash": "phash",
    "dhash": "dhash",
    "md5": "md5",
    "sha1": "sha1",
    "sha256": "sha256",
    "video_md5": "md5",
    "photo_md5": "md5",
    "image_md5": "md5",
    "video_sha256": "sha256",
    "photo_sha256": "sha256",
    "image_sha256": "sha256",
    "imagepdq": "pdq",  # StopNCII
    "videomd5": "md5",  # StopNCII
    "sha-1": "sha1",
    "sha-256": "sha256",
}

# Names of hash types other systems share that vigil cannot match: reported, never an error.
FOREIGN_SIGNALS = frozenset(
    {
        "pdq_ocr", "video_tmk_pdqf", "video_tmkpdqf", "tmk", "tmk_pdqf", "tmk-pdqf", "videotmk",
        "vpdq", "photodna", "pdna", "videntifier", "netclean", "sha512", "sha-512", "tlsh",
        "tlsh_pdf", "clip", "url", "url_md5", "raw_text", "text", "text_md5", "trend_query",
    }
)


def vigil_signal(name: str) -> str | None:
    """vigil's name for a list's hash type, or None if vigil cannot match it."""
    return SIGNAL_ALIASES.get(name.strip().lower())


def is_foreign(name: str) -> bool:
    return name.strip().lower() in FOREIGN_SIGNALS


def make_record(
    line: int,
    signal: str,
    value: str,
    text: str | Callable[[], str],
    label: str | None = None,
    source: str | None = None,
    note: str | None = None,
    extra: dict[str, str] | None = None,
) -> HashRecord | InvalidLine:
    """Validate `value` as a vigil `signal` hash; an InvalidLine says why it is not one.

    `text` (the offending entry, for the report) may be a function: only called for bad entries.
    """
    try:
        value = normalise(signal, value)
    except ValueError as e:
        return InvalidLine(line, str(e), clip(text() if callable(text) else text))
    return HashRecord(signal, value, label, source, note, extra if extra is not None else {}, line)


def entry_id_for(signal: str, value: str) -> str:
    """The bank entry id of an imported hash: the store and the importer must agree on it."""
    return entry_id_for_hash(signal, value)
