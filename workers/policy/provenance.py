"""Provenance to decision: the bank-independent rules that act on what a file claims about its
origin (workers/signals/provenance.py), beside `policy.decide`'s bank matches.

- AI-generated media (a C2PA action or XMP `digitalSourceType` of trainedAlgorithmicMedia or
  compositeWithTrainedAlgorithmicMedia, or a generator's PNG/EXIF marker) gets
  `provenance_ai_generated`: by default `allow` with the `synthetic` label (label, do not queue).
- A C2PA manifest that fails validation (edited after signing, bad signature) gets
  `provenance_invalid` (default off).
- `provenance_source_types` sets an action per digitalSourceType term, and for that term
  replaces the AI-generated rule.

The rules come from Settings (VIGIL_PROVENANCE_*, the matcher's flags), overridden field by field
by the policy stored in Redis like a bank (`vigil policy provenance --ai-generated review`).

Each rule that fires is evidence in the decision's `matches`, shaped like a bank match (bank
`policy:provenance`, the rule as entry_id, the signal `c2pa` / `xmp` / `png-text` / `exif`,
the assertion and the signer), and the decision is the strongest of the bank decision and the
rules' actions. So a block bank match still wins, `allow` here never overrides a bank's review,
and nothing blocks on provenance alone unless a rule is set to `block`. A missing manifest proves
nothing, and a valid one proves only who signed it: these rules label and route, they do not judge.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from workers.policy.banks import STRENGTH
from workers.settings import Settings
from workers.signals.provenance import AI_SOURCE_TYPES

ACTIONS = ("block", "review", "allow", "off")
BANK = "policy:provenance"  # the `bank` of provenance evidence, so it never reads as a hash list


@dataclass(frozen=True)
class ProvenanceRules:
    ai_generated: str = "allow"
    invalid: str = "off"
    label: str = "synthetic"
    source_types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, action in [("ai_generated", self.ai_generated), ("invalid", self.invalid),
                             *self.source_types.items()]:
            if action not in ACTIONS:
                raise ValueError(f"provenance rule {name}: action {action!r} is not one of {', '.join(ACTIONS)}")

    @classmethod
    def from_settings(cls, settings: Settings, stored: dict[str, Any] | None = None) -> "ProvenanceRules":
        """The settings' rules (VIGIL_PROVENANCE_*, flags), overridden field by field by the rules
        stored in Redis with `vigil policy provenance` (BankStore.get_policy("provenance"))."""
        base = {"ai_generated": settings.provenance_ai_generated, "invalid": settings.provenance_invalid,
                "label": settings.provenance_label, "source_types": dict(settings.provenance_source_types)}
        unknown = set(stored or {}) - set(base)
        if unknown:
            raise ValueError(f"stored provenance policy has unknown fields: {', '.join(sorted(unknown))}")
        merged = {**base, **(stored or {})}
        return cls(str(merged["ai_generated"]), str(merged["invalid"]), str(merged["label"] or ""),
                   {str(k): str(v) for k, v in dict(merged["source_types"]).items()})

    def to_json(self) -> dict[str, Any]:
        return {"ai_generated": self.ai_generated, "invalid": self.invalid, "label": self.label,
                "source_types": dict(self.source_types)}

    def key(self) -> str:
        """What a cached decision remembers of the rules it was made under."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def evaluate(provenance: dict[str, Any] | None, rules: ProvenanceRules) -> list[dict[str, Any]]:
    """The evidence of every rule the provenance record triggers (an empty list for none)."""
    if not provenance:
        return []
    out = []
    types = provenance.get("digital_source_types") or []
    for term in types:
        action = rules.source_types.get(term, "off")
        if action != "off":
            out.append(_evidence(f"source-type:{term}", action, None, provenance, term))
    handled = {t for t in types if t in rules.source_types}
    ai_terms = [t for t in types if t in AI_SOURCE_TYPES and t not in handled]
    generator_only = not any(t in AI_SOURCE_TYPES for t in types)
    if provenance.get("ai_generated") and rules.ai_generated != "off" and (ai_terms or generator_only):
        out.append(_evidence("ai-generated", rules.ai_generated, rules.label or None, provenance,
                             ai_terms[0] if ai_terms else None))
    if provenance.get("state") == "invalid" and rules.invalid != "off":
        problems = ", ".join(provenance.get("problems") or []) or "validation failed"
        out.append({**_evidence("invalid-manifest", rules.invalid, None, provenance, None),
                    "signal": "c2pa", "assertion": f"c2pa validation: {problems}"})
    return out


def apply(decision: str, evidence: list[dict[str, Any]], provenance: dict[str, Any] | None,
          rules: ProvenanceRules) -> tuple[str, list[dict[str, Any]]]:
    """The bank decision and evidence with the provenance rules folded in (bank evidence first)."""
    extra = evaluate(provenance, rules)
    for e in extra:
        if STRENGTH[e["action"]] > STRENGTH[decision]:
            decision = e["action"]
    return decision, list(evidence) + extra


def _evidence(rule: str, action: str, label: str | None, provenance: dict[str, Any],
              term: str | None) -> dict[str, Any]:
    """Where the claim was found: the C2PA action that carries the term, else the marker."""
    claim = provenance.get("c2pa") or {}
    wanted = (lambda dst: dst == term) if term else (lambda dst: dst in AI_SOURCE_TYPES)
    for act in claim.get("actions") or []:
        if wanted(act.get("digital_source_type")):
            agent = f" by {act['software_agent']}" if act.get("software_agent") else ""
            return _entry(rule, action, label, "c2pa", provenance,
                          f"c2pa.actions: {act.get('action')} digitalSourceType={act['digital_source_type']}{agent}",
                          claim.get("signer"))
    for m in provenance.get("markers") or []:
        if wanted(m.get("value")) or term is None and m.get("generator"):
            return _entry(rule, action, label, m["signal"], provenance, f"{m['field']}={m['value']}", None)
    markers = provenance.get("markers") or [{}]
    return _entry(rule, action, label, markers[0].get("signal", "c2pa"), provenance,
                  f"digitalSourceType={term}" if term else "ai_generated", claim.get("signer"))


def _entry(rule: str, action: str, label: str | None, signal: str, provenance: dict[str, Any],
           assertion: str, signer: str | None) -> dict[str, Any]:
    return {"bank": BANK, "entry_id": rule, "signal": signal, "distance": 0, "action": action, "label": label,
            "assertion": assertion, "signer": signer, "provenance_state": provenance.get("state", "absent")}
