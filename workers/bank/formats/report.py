"""What an import found in a file: counts per signal, every problem with its line, skipped kinds.

The CLI builds one while validating (all-or-nothing) or while loading (--skip-invalid).
Invalid lines are kept up to a limit so a file of ten million bad lines stays in bounded memory;
the count is always exact.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workers.bank.formats.records import HashRecord, InvalidLine, Item, UnsupportedLine

KEEP_INVALID = 1000


@dataclass
class ImportReport:
    records: int = 0
    per_signal: Counter = field(default_factory=Counter)
    invalid_count: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)  # the first KEEP_INVALID of them
    unsupported: Counter = field(default_factory=Counter)  # kind -> count
    unsupported_first_line: dict[str, int] = field(default_factory=dict)

    def add(self, item: Item) -> None:
        if type(item) is HashRecord:
            self.records += 1
            self.per_signal[item.signal] += 1
        elif type(item) is InvalidLine:
            self.invalid_count += 1
            if len(self.invalid) < KEEP_INVALID:
                self.invalid.append(item)
        elif type(item) is UnsupportedLine:
            self.unsupported[item.kind] += 1
            self.unsupported_first_line.setdefault(item.kind, item.line)
        else:
            raise TypeError(f"not an import item: {item!r}")

    @property
    def ok(self) -> bool:
        """No invalid lines: an all-or-nothing import may go ahead."""
        return self.invalid_count == 0

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"{self.records} hashes: " + (", ".join(f"{n} {s}" for s, n in sorted(self.per_signal.items())) or "none")]
        for kind, n in sorted(self.unsupported.items()):
            out.append(f"skipped {n} {kind} (first at line {self.unsupported_first_line[kind]})")
        if self.invalid_count:
            out.append(f"{self.invalid_count} invalid lines:")
            out.extend(f"  line {bad.line}: {bad.reason}: {bad.text}" for bad in self.invalid)
            if self.invalid_count > len(self.invalid):
                out.append(f"  ... and {self.invalid_count - len(self.invalid)} more")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "per_signal": dict(self.per_signal),
            "invalid_count": self.invalid_count,
            "invalid": [{"line": b.line, "reason": b.reason, "text": b.text} for b in self.invalid],
            "unsupported": dict(self.unsupported),
        }
