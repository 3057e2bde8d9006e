"""What a file claims about its own origin: C2PA Content Credentials and AI-generation markers.

Hash matching only finds media already known; synthetic media is new by definition. Generators
that follow the Safety by Design commitments mark what they make, with a signed C2PA manifest
(read here with the Content Authenticity Initiative's `c2pa-python`, never by hand) or with the
IPTC `digitalSourceType` in XMP and generator text in PNG/EXIF (`provenance_markers`). This
module turns the bytes into one small JSON-able record the hasher publishes beside the hashes:

    {"state": "absent" | "trusted" | "valid" | "invalid" | "malformed" | "unsupported",  # C2PA
     "ai_generated": bool, "digital_source_types": [...],                # from C2PA and markers
     "c2pa": {...}, "markers": [...], "problems": [...]}                 # when there are any

What it proves is little, and the record says only what the file says: a missing manifest proves
nothing (most re-encodes strip it), and a valid one proves only who signed it. `valid` means the
signature and hashes check out but the signer is not on the configured trust list; `trusted`
means it is; `invalid` that validation failed (`problems` says why: `hash_mismatch` when the file
was edited after signing, `invalid_signature`, ...); `malformed` that a manifest is there but
cannot be read; `unsupported` that c2pa does not read the container (WebM, Matroska). Reading never raises: provenance must never cost an upload its hashes.
"""
from __future__ import annotations

import io
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from workers.signals.provenance_markers import read_markers, source_type_name

log = logging.getLogger("vigil.provenance")

# digitalSourceType values that say a trained model (generative AI) made all or part of the media.
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
# Every C2PA manifest store is a JUMBF superbox labelled "c2pa": bytes without that label hold no
# embedded manifest, so the native reader is not started for them (the common case costs ~40 us).
_C2PA_LABEL = b"c2pa"
# What validation failure codes mean, in the words a policy and a moderator use.
_PROBLEMS = {
    "signingCredential.untrusted": "untrusted_signer",
    "assertion.dataHash.mismatch": "hash_mismatch",
    "assertion.bmffHash.mismatch": "hash_mismatch",
    "assertion.boxesHash.mismatch": "hash_mismatch",
    "assertion.hashedURI.mismatch": "hash_mismatch",
    "claimSignature.mismatch": "invalid_signature",
    "signingCredential.invalid": "invalid_signature",
    "signingCredential.revoked": "invalid_signature",
    "signingCredential.expired": "expired_signer",
    "claimSignature.outsideValidity": "expired_signer",
}
MAX_LISTED = 16  # actions / ingredients / markers kept per record: a record stays small on the wire
MAX_TEXT = 200  # characters kept of any string the file supplies


def absent() -> dict[str, Any]:
    return {"state": "absent", "ai_generated": False}


def read_provenance(data: bytes, trust_anchors: str = "") -> dict[str, Any]:
    """The provenance record of an image (or any file held in memory). Never raises."""
    try:
        record = _c2pa_record(io.BytesIO(data), trust_anchors) if _C2PA_LABEL in data else absent()
    except Exception as exc:  # a bug in reading must not lose the upload's hashes
        log.warning("c2pa read failed", extra={"error": f"{type(exc).__name__}: {exc}"[:MAX_TEXT]})
        record = {"state": "malformed", "ai_generated": False, "problems": ["unreadable"]}
    try:
        markers = read_markers(data)
    except Exception:  # markers are a hint; a file Pillow cannot read simply has none
        markers = []
    return _finish(record, markers)


def read_provenance_file(path: Path, trust_anchors: str = "") -> dict[str, Any]:
    """The provenance record of a file read as a stream (a video: never held in memory whole).
    c2pa walks the container's boxes (about 2 ms for an MP4 without a manifest) and hashes what a
    manifest covers; a container it does not read (WebM, Matroska) is `unsupported`. No markers."""
    try:
        with open(path, "rb") as fh:
            record = _c2pa_record(fh, trust_anchors)
    except Exception as exc:
        log.warning("c2pa read failed", extra={"error": f"{type(exc).__name__}: {exc}"[:MAX_TEXT]})
        record = {"state": "malformed", "ai_generated": False, "problems": ["unreadable"]}
    return _finish(record, [])


def _c2pa_record(stream: BinaryIO, trust_anchors: str) -> dict[str, Any]:
    import c2pa

    try:
        reader = c2pa.Reader(stream, context=_context(trust_anchors))  # the bytes say the format
        with reader:
            store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return absent()  # the label was there by chance, or a container without one
        if "NotSupported" in type(exc).__name__:
            return {"state": "unsupported", "ai_generated": False}
        return {"state": "malformed", "ai_generated": False, "problems": [_short(str(exc))]}
    return manifest_record(store)


def manifest_record(store: dict[str, Any]) -> dict[str, Any]:
    """The record of a c2pa manifest store (Reader.json()): the active manifest's claim."""
    active = (store.get("manifests") or {}).get(store.get("active_manifest") or "")
    if not isinstance(active, dict):
        return {"state": "malformed", "ai_generated": False, "problems": ["no_active_manifest"]}
    failures = [s.get("code", "") for s in ((store.get("validation_results") or {}).get("activeManifest")
                                             or {}).get("failure", [])]
    failures = failures or [s.get("code", "") for s in store.get("validation_status") or []]
    problems = sorted({_PROBLEMS.get(code, code) for code in failures if code})
    state = {"Trusted": "trusted", "Valid": "valid"}.get(store.get("validation_state", ""), "invalid")
    actions, ingredients = [], []
    for assertion in active.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for act in (assertion.get("data") or {}).get("actions") or []:
                actions.append(_action(act))
    for ing in active.get("ingredients") or []:
        ingredients.append({"title": _short(ing.get("title")), "relationship": _short(ing.get("relationship")),
                            "has_manifest": bool(ing.get("active_manifest"))})
    sig = active.get("signature_info") or {}
    claim = {
        "claim_generator": _generator(active),
        "signer": _short(", ".join(v for v in (sig.get("common_name"), sig.get("issuer")) if v)) or None,
        "signed_at": sig.get("time"),
        "actions": actions[:MAX_LISTED],
        "ingredients": ingredients[:MAX_LISTED],
    }
    record: dict[str, Any] = {"state": state, "ai_generated": False, "c2pa": claim}
    if problems:
        record["problems"] = problems
    return record


def _action(act: dict[str, Any]) -> dict[str, Any]:
    out = {"action": _short(act.get("action"))}
    dst = source_type_name(act.get("digitalSourceType"))
    if dst:
        out["digital_source_type"] = dst
    agent = act.get("softwareAgent")
    agent = agent.get("name") if isinstance(agent, dict) else agent
    if agent:
        out["software_agent"] = _short(agent)
    return out


def _generator(active: dict[str, Any]) -> str | None:
    info = active.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        return _short(" ".join(str(info[0].get(k)) for k in ("name", "version") if info[0].get(k)))
    return _short(active.get("claim_generator")) or None


def _finish(record: dict[str, Any], markers: list[dict[str, str]]) -> dict[str, Any]:
    types = [a["digital_source_type"] for a in (record.get("c2pa") or {}).get("actions", [])
             if "digital_source_type" in a]
    types += [m["value"] for m in markers if m["field"] == "Iptc4xmpExt:DigitalSourceType"]
    if markers:
        record["markers"] = markers[:MAX_LISTED]
    unique = sorted(set(types))
    if unique:
        record["digital_source_types"] = unique
    record["ai_generated"] = bool(set(unique) & AI_SOURCE_TYPES) or any(m.get("generator") for m in markers)
    return record


def check_trust_anchors(path: str) -> None:
    """Fail at start-up, not per upload, when the configured trust anchors cannot be read."""
    if path:
        _context(path)


@lru_cache(maxsize=4)
def _context(trust_anchors: str = ""):
    """Reading never touches the network: no remote manifests, no OCSP. With trust anchors (PEM),
    a signer chaining to one is `trusted`; without, every valid signature is merely `valid`."""
    import c2pa

    verify = {"remote_manifest_fetch": False, "ocsp_fetch": False, "verify_trust": True}
    config: dict[str, Any] = {"verify": verify}
    if trust_anchors:
        config["trust"] = {"trust_anchors": Path(trust_anchors).read_text()}
    return c2pa.Context.from_dict(config)


def _short(value: Any) -> str:
    return "" if value is None else str(value)[:MAX_TEXT]
