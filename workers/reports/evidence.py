"""Evidence packages for law enforcement: one directory per incident (content id) with

  manifest.json        the content's ids, every decision and verdict about it with its evidence,
                       each upload's metadata as the platform submitted it, the file's hashes
                       (MD5, SHA-1, SHA-256, PDQ) and the preservation records, if any
  cybertip-report.xml  the same facts as a CyberTipline /submit body (cybertip.py)
  cybertip-file-N.xml  one /fileinfo body per upload
  media/<sha256>       the preserved file itself, only with --include-media and the key
  SHA256SUMS           the SHA-256 of every other file in the package

Reproducible: the manifest is built from sorted inputs, with sorted keys and no time of its own,
so the same inputs give the same bytes; a package can be rebuilt and compared with `sha256sum -c`.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import redis

import topics
from workers.ops.logs import now_ms
from workers.reports import cybertip
from workers.reports.consumer import ACTIONS
from workers.reports.preserve import PreserveError, PreserveStore
from workers.reports.source import read_period
from workers.settings import Settings

AUDIT_STREAM = "vigil:reports:audit"
AUDIT_MAXLEN = 100_000


def package_dir_name(content_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", content_id)[:80]
    return f"{safe}-{hashlib.sha256(content_id.encode()).hexdigest()[:8]}"


def gather(settings: Settings, content_ids: set[str], start_ms: int | None = None,
           end_ms: int | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every decision, verdict, upload event and hashes message about these content ids."""
    out = {c: {"decisions": [], "verdicts": [], "uploads": [], "hashes": []} for c in content_ids}
    keep = lambda m: m.get("content_id") in content_ids  # noqa: E731
    for topic, kind in ((topics.DECISIONS, "decisions"), (ACTIONS, "verdicts"), (topics.UPLOADS, "uploads"),
                        (topics.HASHES, "hashes")):
        for _, _, m in read_period(settings, topic, start_ms, end_ms, keep=keep):
            out[m["content_id"]][kind].append(m)
    return out


def incidents(settings: Settings, label: str, start_ms: int | None, end_ms: int | None) -> set[str]:
    """Content ids blocked with evidence of this label in the period."""
    def keep(d: dict[str, Any]) -> bool:
        at = d.get("decided_at_ms") or 0
        return d.get("decision") == "block" and (start_ms is None or at >= start_ms) and \
            (end_ms is None or at < end_ms) and any(m.get("label") == label for m in d.get("matches", ()))
    return {d["content_id"] for _, _, d in read_period(settings, topics.DECISIONS, start_ms, end_ms, keep=keep)}


def _hashes(upload: dict[str, Any], hashes_msgs: list[dict[str, Any]], record: dict[str, Any] | None) -> dict:
    """The file's hashes: MD5/SHA-1/SHA-256 from the preserved copy's custody record when there
    is one (computed from the bytes stored), else from the hasher's own message; PDQ from the hasher."""
    out: dict[str, Any] = {"md5": None, "sha1": None, "sha256": None, "pdq": None}
    for msg in sorted(hashes_msgs, key=lambda m: m.get("part", 0)):
        if msg.get("event_id") != upload["event_id"]:
            continue
        for s in msg.get("signals", ()):
            if s["signal"] in ("md5", "sha256") and out[s["signal"]] is None:
                out[s["signal"]] = s["value"]
            if s["signal"] == "pdq" and not s.get("variant") and s.get("frame_ms") in (None, 0) and out["pdq"] is None:
                out["pdq"] = s["value"]
    out["source"] = "hasher"
    if record is not None:
        out.update(md5=record["plaintext_md5"], sha1=record["plaintext_sha1"], sha256=record["plaintext_sha256"],
                   source="preserved copy (custody record)")
    return out


def manifest(content_id: str, facts: dict[str, list[dict[str, Any]]], records: list[dict[str, Any]]) -> dict:
    decisions = sorted(facts["decisions"], key=lambda d: (d.get("decided_at_ms", 0), d["event_id"]))
    unique = {str(v.get("event_id")): v for v in facts["verdicts"]}  # a replayed verdict is one verdict
    verdicts = sorted(unique.values(), key=lambda v: (v.get("decided_at_ms", 0), str(v.get("event_id"))))
    uploads = []
    for u in sorted(facts["uploads"], key=lambda u: (u.get("submitted_at_ms", 0), u["event_id"])):
        rec = next((r for r in records if r["action"] == "preserved" and r["event_id"] == u["event_id"]), None)
        uploads.append({"event_id": u["event_id"], "media_uri": u.get("media_uri"), "media_type": u.get("media_type"),
                        "submitted_at_ms": u.get("submitted_at_ms"), "metadata": u.get("metadata", {}),
                        "hashes": _hashes(u, facts["hashes"], rec)})
    return {
        "schema": "vigil-evidence-package/1",
        "content_id": content_id,
        "event_ids": sorted({d["event_id"] for d in decisions} | {u["event_id"] for u in uploads}),
        "decisions": [{k: d.get(k) for k in ("event_id", "decision", "source", "media_type", "decided_at_ms",
                                             "submitted_at_ms", "bank_version", "matches", "partial", "notes",
                                             "metadata", "worker")} for d in decisions],
        "verdicts": verdicts,
        "uploads": uploads,
        "preservation": sorted((r for r in records if r["action"] in ("preserved", "failed", "not_preservable")),
                               key=lambda r: r["seq"]),
        "note": "Prepared by vigil for the platform's legal team; vigil submits nothing itself.",
    }


def write_package(out_root: Path, content_id: str, facts: dict[str, list[dict[str, Any]]],
                  store: PreserveStore | None, settings: Settings, include_media: bool = False,
                  actor: str = "unknown", audit: redis.Redis | None = None) -> Path:
    """Write one package; with include_media the preserved files are decrypted into it (the key
    is checked first, and the access is appended to the custody chain and the audit stream)."""
    if include_media and store is None:
        raise PreserveError("--include-media needs VIGIL_PRESERVE_DIR and VIGIL_PRESERVE_KEY")
    records = [r for r in store.records() if r.get("content_id") == content_id] if store else []
    if store is None and settings.preserve_dir and Path(settings.preserve_dir, "custody.jsonl").exists():
        records = [json.loads(line) for line in Path(settings.preserve_dir, "custody.jsonl").read_text().splitlines()
                   if line.strip() and json.loads(line).get("content_id") == content_id]
    man = manifest(content_id, facts, records)
    if not man["decisions"] and not man["uploads"]:
        raise LookupError(f"nothing about content id {content_id!r} on the topics (past their retention?)")
    pkg = out_root / package_dir_name(content_id)
    pkg.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "manifest.json": (json.dumps(man, indent=2, sort_keys=True) + "\n").encode(),
        "cybertip-report.xml": cybertip.report_xml(man),
    }
    for i, u in enumerate(man["uploads"]):
        files[f"cybertip-file-{i + 1}.xml"] = cybertip.fileinfo_xml(man, u)
    if include_media:
        for rec in (r for r in man["preservation"] if r["action"] == "preserved"):
            if audit is not None:
                audit.xadd(AUDIT_STREAM, {"op": "evidence_media_access", "actor": actor, "at_ms": now_ms(),
                                          "content_id": content_id, "record_id": rec["record_id"]},
                           maxlen=AUDIT_MAXLEN, approximate=True)
            data = store.open(rec, actor=actor, purpose="evidence package")
            files[f"media/{rec['plaintext_sha256']}"] = data
    for name, data in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    sums = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    (pkg / "SHA256SUMS").write_text(sums)
    return pkg
