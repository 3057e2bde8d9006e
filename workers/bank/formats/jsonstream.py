"""Stream the record objects out of a large JSON (or JSON Lines) export, in bounded memory.

The exchanges' exports are a list of record objects, either bare (`[{...}, ...]`), wrapped in an
API page (`{"count": .., "hashRecords": [{...}, ...]}`), or one page/record per line (JSON Lines,
i.e. saved paginated fetches). The stdlib json module only parses whole documents, so this walks
the outer structure itself and hands each record, usually small, to json's C decoder. Memory is
one read chunk plus one record; a single value over MAX_VALUE_CHARS is refused.
Each record comes with the line its opening brace is on.
"""
from __future__ import annotations

import json
import re
from typing import IO, Any, Iterator

from workers.bank.formats.records import FormatError

CHUNK_CHARS = 1 << 16
MAX_VALUE_CHARS = 16 << 20
MAX_DEPTH = 4  # pages inside arrays inside pages... deeper values are records or nothing
_WS = re.compile(r"[ \t\r\n]*")


class _Cursor:
    """A window on the text being parsed, with the line number of the current position."""

    def __init__(self, fileobj: IO[str]):
        self.f = fileobj
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.decoder = json.JSONDecoder()

    def fill(self) -> bool:
        data = self.f.read(CHUNK_CHARS)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str:
        """The next non-blank character ('' at end of input), skipping blanks."""
        while True:
            self.advance(_WS.match(self.buf, self.pos).end())  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def expect(self, ch: str) -> None:
        got = self.peek()
        if got != ch:
            raise FormatError(self.line, f"expected {ch!r}, found {got!r}" if got else f"expected {ch!r}, found end of file")
        self.advance(self.pos + 1)

    def try_decode_buffered(self) -> tuple[Any, int] | None:
        """Decode the value at the cursor if it lies wholly in the buffer (the fast path)."""
        try:
            obj, end = self.decoder.raw_decode(self.buf, self.pos)
        except json.JSONDecodeError:
            return None
        if end == len(self.buf) and not self.eof:
            return None  # a number may go on in the next chunk
        return obj, end

    def decode(self) -> Any:
        """Decode the value at the cursor, reading more input as needed (up to MAX_VALUE_CHARS)."""
        self.peek()
        while True:
            got = self.try_decode_buffered()
            if got is not None:
                self.advance(got[1])
                return got[0]
            if self.eof:
                try:
                    self.decoder.raw_decode(self.buf, self.pos)
                except json.JSONDecodeError as e:
                    line = self.line + self.buf.count("\n", self.pos, e.pos)
                    raise FormatError(line, f"invalid JSON: {e.msg}") from None
            if len(self.buf) - self.pos > MAX_VALUE_CHARS:
                raise FormatError(self.line, f"a JSON value longer than {MAX_VALUE_CHARS} characters")
            self.fill()


def iter_json_records(fileobj: IO[str], array_keys: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
    """Yield (line, value) for every record: items of top-level arrays, items of `array_keys`
    arrays inside objects, and top-level objects holding none of `array_keys` (JSON Lines records).
    Non-object items are yielded as they are, for the caller to report."""
    cur = _Cursor(fileobj)
    while cur.peek():
        yield from _walk(cur, array_keys, 0)


def _walk(cur: _Cursor, keys: tuple[str, ...], depth: int) -> Iterator[tuple[int, Any]]:
    ch = cur.peek()
    line = cur.line
    if ch == "[" and depth < MAX_DEPTH:
        yield from _walk_array(cur, keys, depth)
    elif ch == "{" and depth < MAX_DEPTH:
        fast = cur.try_decode_buffered()
        if fast is not None and isinstance(fast[0], dict) and not any(k in fast[0] for k in keys):
            cur.advance(fast[1])
            yield line, fast[0]
        else:
            yield from _walk_object(cur, keys, depth)
    elif ch == "":
        raise FormatError(cur.line, "unexpected end of file")
    else:
        yield line, cur.decode()


def _walk_array(cur: _Cursor, keys: tuple[str, ...], depth: int) -> Iterator[tuple[int, Any]]:
    cur.expect("[")
    if cur.peek() == "]":
        cur.advance(cur.pos + 1)
        return
    while True:
        yield from _walk(cur, keys, depth + 1)
        ch = cur.peek()
        if ch == ",":
            cur.advance(cur.pos + 1)
        elif ch == "]":
            cur.advance(cur.pos + 1)
            return
        else:
            raise FormatError(cur.line, f"expected ',' or ']' in an array, found {ch!r}")


def _walk_object(cur: _Cursor, keys: tuple[str, ...], depth: int) -> Iterator[tuple[int, Any]]:
    """An object too big for the buffer or holding a record array: walk it member by member."""
    line = cur.line
    cur.expect("{")
    rest: dict[str, Any] = {}
    held_records = False
    if cur.peek() == "}":
        cur.advance(cur.pos + 1)
        yield line, rest
        return
    while True:
        if cur.peek() != '"':
            raise FormatError(cur.line, "expected a member name in an object")
        key = cur.decode()
        cur.expect(":")
        if key in keys and cur.peek() == "[":
            held_records = True
            yield from _walk_array(cur, keys, depth + 1)
        else:
            rest[key] = cur.decode()
        ch = cur.peek()
        if ch == ",":
            cur.advance(cur.pos + 1)
        elif ch == "}":
            cur.advance(cur.pos + 1)
            break
        else:
            raise FormatError(cur.line, f"expected ',' or '}}' in an object, found {ch!r}")
    if not held_records:
        yield line, rest
