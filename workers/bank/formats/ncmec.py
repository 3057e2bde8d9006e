"""NCMEC hash-sharing XML (the v2 API's `entries` response, saved to a file).

Shape (namespace https://hashsharing.ncmec.org/hashsharing/v2, as python-threatexchange's NCMEC
client and its test fixtures show it):

    <queryResult><images count=.. maxTimestamp=..>
      <image><member id="42">Name</member><timestamp>..</timestamp><id>image1</id>
             <classification>A1</classification>
             <fingerprints><md5>..</md5><sha1>..</sha1><pdna>..</pdna><pdq>..</pdq></fingerprints>
             <feedback>..</feedback></image>
      <deletedImage><member id=".."/><id>image4</id><timestamp>..</timestamp></deletedImage>
    </images><videos>.. <video> .. <tmk-pdqf rel="self" href=".."/> .. </video> ..</videos>
    <paging><next>..</next></paging></queryResult>

md5, sha1, pdq (and sha256, should it appear) become records, one per fingerprint, numbered with
the fingerprint element's line; other fingerprints (pdna = PhotoDNA, tmk-pdqf, videntifier...) are
reported as unsupported; deleted entries are reported as removals.

Parsed with expat directly rather than ElementTree.iterparse: it streams the same way but tells
each element's line number. Documents with a DTD are refused (no entity expansion surprises).
"""
from __future__ import annotations

from typing import IO, Iterator
from xml.parsers import expat

from workers.bank.formats.records import FormatError, InvalidLine, Item, UnsupportedLine, clip, make_record, vigil_signal

CHUNK_BYTES = 1 << 16
ENTRY_TAGS = {"image": "image", "video": "video", "deletedImage": "image", "deletedVideo": "video"}
ENTRY_FIELDS = ("id", "member", "timestamp", "classification")
NCMEC_SIGNALS = ("md5", "sha1", "sha256", "pdq")


class _Collector:
    """expat callbacks: gathers one entry at a time and turns it into items when it closes."""

    def __init__(self, parser: expat.XMLParserType):
        self.p = parser
        self.out: list[Item] = []
        self.entry: dict | None = None
        self.entry_depth = 0
        self.depth = 0
        self.text: list[str] | None = None  # collecting character data of a wanted element
        self.fingerprint: tuple[str, int, str | None] | None = None  # tag, line, href
        self.in_fingerprints = False
        self.names: dict[str, str] = {}  # expat's `namespace-uri name` -> name

    def local(self, name: str) -> str:
        tag = self.names.get(name)
        if tag is None:
            tag = name.rpartition(" ")[2]
            if len(self.names) < 1024:
                self.names[name] = tag
        return tag

    def start(self, name: str, attrs: dict) -> None:
        self.depth += 1
        if self.entry is None:
            tag = self.local(name)
            if tag in ENTRY_TAGS:
                self.entry = {"tag": tag, "line": self.p.CurrentLineNumber, "fingerprints": []}
                self.entry_depth = self.depth
            return
        rel = self.depth - self.entry_depth
        if rel == 1:
            tag = self.local(name)
            if tag in ENTRY_FIELDS:
                if tag == "member" and attrs.get("id"):
                    self.entry["member_id"] = attrs["id"]
                self.text = []
            elif tag == "fingerprints":
                self.in_fingerprints = True
        elif rel == 2 and self.in_fingerprints:
            self.fingerprint = (self.local(name), self.p.CurrentLineNumber, attrs.get("href"))
            self.text = []

    def chars(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def end(self, name: str) -> None:
        if self.entry is not None:
            rel = self.depth - self.entry_depth
            if rel == 0:
                self.out.extend(_entry_items(self.entry))
                self.entry = None
            elif rel == 1:
                if self.text is not None:
                    self.entry[self.local(name)] = "".join(self.text).strip()
                    self.text = None
                elif self.in_fingerprints:
                    self.in_fingerprints = False
            elif rel == 2 and self.fingerprint is not None:
                fp_tag, line, href = self.fingerprint
                self.entry["fingerprints"].append((fp_tag, line, "".join(self.text or ()).strip(), href))
                self.fingerprint = None
                self.text = None
        self.depth -= 1


def _entry_items(entry: dict) -> Iterator[Item]:
    tag, media = entry["tag"], ENTRY_TAGS[entry["tag"]]
    ident = entry.get("id", "")
    if tag.startswith("deleted"):
        yield UnsupportedLine(entry["line"], "deleted", f"NCMEC {tag} {ident}: a removal, not a hash", f"<{tag}> {ident}")
        return
    if not entry["fingerprints"]:
        yield InvalidLine(entry["line"], f"NCMEC {tag} {ident} has no fingerprints", f"<{tag}> {ident}")
        return
    extra = {"ncmec_id": ident, "media": media}
    for key in ("member_id", "member", "timestamp"):
        if entry.get(key):
            extra[key] = entry[key]
    classification = entry.get("classification") or None
    for fp_tag, line, value, href in entry["fingerprints"]:
        text = f"<{fp_tag}>{value}</{fp_tag}>" if value else f'<{fp_tag} href="{href or ""}"/>'
        signal = vigil_signal(fp_tag) if fp_tag.lower() in NCMEC_SIGNALS else None
        if signal is None:
            yield UnsupportedLine(line, fp_tag, f"vigil cannot match NCMEC {fp_tag} fingerprints", clip(text))
        elif not value and href:
            yield UnsupportedLine(line, f"{fp_tag}-by-reference", "fingerprint given by reference, not inline", clip(text))
        else:
            yield make_record(line, signal, value, text, label=classification, source="ncmec", extra=dict(extra))


def _refuse_dtd(*_args: object) -> None:
    raise FormatError(0, "XML with a DOCTYPE is refused (NCMEC lists have none)")


def parse_ncmec(fileobj: IO) -> Iterator[Item]:
    """Stream NCMEC entries: memory is one read chunk plus the entry being read."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.buffer_text = True
    collector = _Collector(parser)
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    parser.CharacterDataHandler = collector.chars
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    while True:
        chunk = fileobj.read(CHUNK_BYTES)
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        try:
            parser.Parse(chunk, not chunk)
        except expat.ExpatError as e:
            raise FormatError(e.lineno, f"invalid XML: {expat.errors.messages[e.code]}") from None
        if collector.out:
            yield from collector.out
            collector.out.clear()
        if not chunk:
            return
