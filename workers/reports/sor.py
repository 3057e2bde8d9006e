"""Statements of reasons (DSA Art. 17, submitted under Art. 24(5)) in the field names and value
vocabulary of the DSA Transparency Database API; schemas/dsa_statement.json is that API's shape.

One statement per restricting decision: an automatic `block`, or a reviewer's `block` verdict
(moderation.actions, issue 16). The category comes from the bank label through configuration
(Settings.sor_categories); a label with no mapping is returned as unmapped, never guessed.

The ground is the platform's terms (DECISION_GROUND_INCOMPATIBLE_CONTENT): what a hash match
establishes is that the media is a copy of an item a bank of known harmful media lists, which
the terms prohibit. Whether it is also illegal where it was shared is a legal judgement; the
mapping's `illegal` flag says the platform has made it for that label (incompatible_content_illegal).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import jsonschema

from workers.settings import Settings

EEA = ("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK").split()
EU = [c for c in EEA if c not in ("IS", "LI", "NO")]
CONTENT_TYPE = {"image": "CONTENT_TYPE_IMAGE", "video": "CONTENT_TYPE_VIDEO"}


@lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    return json.loads(resources.files("workers.reports").joinpath("schemas", "dsa_statement.json").read_text())


def validate(statement: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when a statement is not what the API accepts."""
    jsonschema.validate(statement, schema(), format_checker=jsonschema.FormatChecker())


@dataclass
class Statements:
    statements: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[dict[str, Any]] = field(default_factory=list)  # decisions that could not be mapped


def _day(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).date().isoformat()


def territories(settings: Settings) -> list[str]:
    out: list[str] = []
    for t in settings.sor_territory:
        for code in {"EEA": EEA, "EU": EU}.get(t.upper(), [t.upper()]):
            if code not in out:
                out.append(code)
    return out


def _mapping(settings: Settings, label: str | None) -> tuple[str, list[str], bool] | None:
    raw = settings.sor_categories.get(label or "")
    if not raw:
        return None
    words = raw.split()
    cats = [w for w in words if w.startswith("STATEMENT_CATEGORY_")]
    if len(cats) != 1:
        return None
    return cats[0], [w for w in words if w.startswith("KEYWORD_")], "illegal" in words


def _restricting_match(decision: dict[str, Any]) -> dict[str, Any] | None:
    """The evidence a block rests on: the strongest block-bank match."""
    return next((m for m in decision.get("matches", ()) if m.get("action") == "block"), None)


def from_decision(decision: dict[str, Any], settings: Settings, out: Statements) -> None:
    match = _restricting_match(decision)
    label = match.get("label") if match else None
    mapped = _mapping(settings, label)
    if match is None or mapped is None:
        out.unmapped.append({"event_id": decision.get("event_id"), "content_id": decision.get("content_id"),
                             "label": label, "bank": match.get("bank") if match else None,
                             "reason": "no block match in the evidence" if match is None else
                             f"bank label {label!r} has no category in VIGIL_SOR_CATEGORIES"})
        return
    live = decision.get("source") == "live"
    facts = (f"The {'live stream' if live else 'uploaded ' + decision.get('media_type', 'image')} matched entry "
             f"{match['entry_id']} of the hash bank {match['bank']} (label {label}) by {match['signal']} at distance "
             f"{match['distance']} (threshold {match.get('threshold', 'default')}), and was "
             f"{'terminated' if live else 'removed'} automatically.")
    out.statements.append(_statement(settings, mapped, label, decision, facts,
                                     puid=f"vigil-{decision['event_id']}",
                                     automated="AUTOMATED_DECISION_FULLY", live=live))


def from_verdict(verdict: dict[str, Any], decision: dict[str, Any] | None, settings: Settings,
                 out: Statements) -> None:
    """A reviewer's block verdict: a person decided on what the matcher flagged."""
    label = verdict.get("label")
    mapped = _mapping(settings, label)
    if mapped is None:
        out.unmapped.append({"event_id": verdict.get("event_id"), "content_id": verdict.get("content_id"),
                             "label": label, "bank": None, "case_id": verdict.get("case_id"),
                             "reason": f"verdict label {label!r} has no category in VIGIL_SOR_CATEGORIES"})
        return
    base = decision or {"media_type": "image", "submitted_at_ms": verdict.get("decided_at_ms")}
    facts = (f"A reviewer confirmed case {verdict.get('case_id')} as {label} after vigil's hash matching flagged "
             f"it, and the content was removed.")
    out.statements.append(_statement(settings, mapped, label, {**base, "decided_at_ms": verdict.get("decided_at_ms")},
                                     facts, puid=f"vigil-case-{verdict.get('case_id')}",
                                     automated="AUTOMATED_DECISION_PARTIALLY", live=base.get("source") == "live"))


def _statement(settings: Settings, mapped: tuple[str, list[str], bool], label: str | None, d: dict[str, Any],
               facts: str, puid: str, automated: str, live: bool) -> dict[str, Any]:
    category, keywords, illegal = mapped
    s: dict[str, Any] = {
        "decision_visibility": ["DECISION_VISIBILITY_CONTENT_DISABLED" if live else "DECISION_VISIBILITY_CONTENT_REMOVED"],
        "decision_ground": "DECISION_GROUND_INCOMPATIBLE_CONTENT",
        "incompatible_content_ground": f"Terms of service: known {label} media (hash-bank match)",
        "incompatible_content_explanation": facts,
        "incompatible_content_illegal": "Yes" if illegal else "No",
        "category": category,
        "content_type": [CONTENT_TYPE.get(d.get("media_type", "image"), "CONTENT_TYPE_OTHER")],
        "content_date": _day(d.get("submitted_at_ms") or d.get("decided_at_ms")),
        "application_date": _day(d.get("decided_at_ms")),
        "territorial_scope": territories(settings),
        "source_type": "SOURCE_VOLUNTARY",
        "automated_detection": "Yes",
        "automated_decision": automated,
        "puid": puid,
        "decision_facts": facts,
    }
    if keywords:
        s["category_specification"] = keywords
    if settings.sor_terms_url:
        s["decision_ground_reference_url"] = settings.sor_terms_url
    return s


def build(decisions: Iterable[dict[str, Any]], verdicts: Iterable[dict[str, Any]], settings: Settings) -> Statements:
    """Statements for the restricting decisions and verdicts given, in the order given."""
    out = Statements()
    by_content: dict[str, dict[str, Any]] = {}
    for d in decisions:
        if "summary" in d:
            continue
        by_content[d.get("content_id", "")] = d  # the latest decision on the content
        if d.get("decision") == "block":
            from_decision(d, settings, out)
    seen: set[str] = set()
    for v in verdicts:
        if v.get("event_id") in seen:  # a verdict published again after a crash
            continue
        seen.add(v.get("event_id", ""))
        prior = by_content.get(v.get("content_id", ""))
        # confirming an automatic block restricts nothing new: its statement is already there
        if v.get("action") == "block" and (prior is None or prior.get("decision") != "block"):
            from_verdict(v, by_content.get(v.get("content_id", "")), settings, out)
    return out
