"""Decision messages (topics/schemas/decision.json), and the cache that lets an identical
re-upload be decided again without decoding."""
from __future__ import annotations

import json
from typing import Any

import redis

import topics
from workers.ops import metrics
from workers.ops.logs import now_ms
from workers.bank.store import POLICY, VERSION
from workers.index.matching import BankIndex
from workers.policy.provenance import ProvenanceRules
from workers.settings import Settings

MAX_EVIDENCE = 50  # matches listed in one decision; the strongest and closest are kept
CACHE_KEY = "vigil:decision-cache:{sha256}"


def decision_message(event: dict[str, Any], decision: str, evidence: list[dict], notes: list[str],
                     index: BankIndex, worker: str, match_s: float) -> dict[str, Any]:
    """The decision for an upload, from the hashes message it answers and its evidence."""
    decided = now_ms()
    latency = dict(event["hasher"]["latency_ms"])
    latency["match"] = round(match_s * 1000, 3)
    latency["total"] = max(0, decided - event["submitted_at_ms"])
    out = {
        "schema_version": topics.SCHEMA_VERSION,
        "event_id": event["event_id"],
        "content_id": event["content_id"],
        "source": event.get("source", "upload"),
        "media_type": event.get("media_type", "image"),
        "decision": decision,
        "partial": bool(event.get("partial", False)),
        "notes": list(event.get("notes", [])) + notes,
        "matches": evidence[:MAX_EVIDENCE],
        "bank_version": index.version,
        "latency_ms": latency,
        "submitted_at_ms": event["submitted_at_ms"],
        "decided_at_ms": decided,
        "worker": worker,
    }
    if "provenance" in event:  # what the file claims about its origin, on every decision about it
        out["provenance"] = event["provenance"]
    if len(evidence) > MAX_EVIDENCE:
        out["notes"].append(f"{len(evidence) - MAX_EVIDENCE} further matches omitted")
    if "metadata" in event:
        out["metadata"] = event["metadata"]
    if "media_uri" in event:
        out["media_uri"] = event["media_uri"]
    metrics.STAGE_DURATION.labels("match").observe(match_s)
    return out


class DecisionCache:
    """Decisions by file SHA-256, valid only under the bank version and the provenance rules they
    were made with: any bank or stored-policy change bumps the version and so invalidates them
    all, and a decision made under other VIGIL_PROVENANCE_* rules is not reused. Entries also
    expire after a TTL. Workers write only these keys, never the bank."""

    def __init__(self, client: redis.Redis, ttl_s: int, settings: Settings | None = None):
        self.r = client
        self.ttl_s = ttl_s
        self.settings = settings or Settings()

    def get(self, sha256: str) -> dict[str, Any] | None:
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.mget(VERSION, CACHE_KEY.format(sha256=sha256))
            pipe.hget(POLICY, "provenance")
            (version, raw), stored = pipe.execute()
        except redis.RedisError:
            return None  # the cache is an optimisation: without Redis, decode as usual
        if raw is None:
            return None
        cached = json.loads(raw)
        if cached["bank_version"] != int(version or 0):
            return None
        try:
            rules = ProvenanceRules.from_settings(self.settings, json.loads(stored) if stored else None)
        except ValueError:
            return None
        return cached if cached.get("policy") == rules.key() else None

    def put(self, sha256: str, decision: dict[str, Any], rules: ProvenanceRules | None = None) -> None:
        if decision.get("partial") or decision.get("source") != "upload":
            return
        blob = {k: decision[k] for k in ("decision", "matches", "bank_version", "media_type", "notes")}
        blob["policy"] = (rules or ProvenanceRules.from_settings(self.settings)).key()
        if "provenance" in decision:
            blob["provenance"] = decision["provenance"]
        try:
            self.r.set(CACHE_KEY.format(sha256=sha256), json.dumps(blob), ex=self.ttl_s)
        except redis.RedisError:
            pass


def sha256_of(event: dict[str, Any]) -> str | None:
    return next((s["value"] for s in event["signals"] if s["signal"] == "sha256"), None)
