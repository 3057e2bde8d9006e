"""The facts of an evidence package as NCMEC CyberTipline Reporting API documents: the
`<report>` body of POST /submit (incidentSummary, reporter, personOrUserReported) and one
`<fileDetails>` body of POST /fileinfo per file, with the element names of that API's
documentation (https://report.cybertip.org/ispws/documentation).

They are drafts for the platform's legal team: reporter contact details, the report id NCMEC
assigns on /submit and the file id it assigns on /upload are left for them to fill in, and vigil
never submits anything. Elements are written in a fixed order from sorted facts, so the same
package always gives the same bytes.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from xml.etree import ElementTree as ET

INCIDENT_TYPE = "Child Pornography (possession, manufacture, and distribution)"
TO_FILL = "TO BE COMPLETED BY THE REPORTING PLATFORM"


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = str(text)
    return el


def _text(root: ET.Element) -> bytes:
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _uploader(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """The uploader id and IP from the platform's metadata, under the names platforms use."""
    uid = next((str(meta[k]) for k in ("uploader_id", "uploader", "user_id", "account_id") if meta.get(k)), None)
    ip = next((str(meta[k]) for k in ("ip", "ip_address", "uploader_ip") if meta.get(k)), None)
    return uid, ip


def report_xml(manifest: dict[str, Any]) -> bytes:
    uploads = manifest["uploads"]
    first = min((u["submitted_at_ms"] for u in uploads if u.get("submitted_at_ms")), default=None)
    root = ET.Element("report")
    summary = _sub(root, "incidentSummary")
    _sub(summary, "incidentType", INCIDENT_TYPE)
    _sub(summary, "incidentDateTime", _iso(first or manifest["decisions"][0]["decided_at_ms"]))
    _sub(summary, "incidentDateTimeDescription", "time the platform submitted the first upload to vigil")
    web = _sub(_sub(root, "internetDetails"), "webPageIncident")
    _sub(web, "additionalInfo", f"content id {manifest['content_id']} on the reporting platform")
    reporter = _sub(root, "reporter")
    person = _sub(reporter, "reportingPerson")
    _sub(person, "firstName", TO_FILL)
    _sub(person, "lastName", TO_FILL)
    _sub(person, "email", TO_FILL)
    people = sorted({_uploader(u.get("metadata") or {}) for u in uploads}, key=lambda t: (t[0] or "", t[1] or ""))
    for uid, ip in people:
        if uid is None and ip is None:
            continue
        reported = _sub(root, "personOrUserReported")
        if uid:
            _sub(reported, "espIdentifier", uid)
        for u in uploads:
            if ip and _uploader(u.get("metadata") or {}) == (uid, ip):
                ev = _sub(reported, "ipCaptureEvent")
                _sub(ev, "ipAddress", ip)
                _sub(ev, "eventName", "Upload")
                _sub(ev, "dateTime", _iso(u.get("submitted_at_ms")))
    _sub(root, "additionalInfo", _summary_text(manifest))
    return _text(root)


def _summary_text(manifest: dict[str, Any]) -> str:
    lines = [f"Detected by hash matching (vigil) against banks of known media; {len(manifest['decisions'])} "
             f"decision(s), {len(manifest['verdicts'])} reviewer verdict(s)."]
    for d in manifest["decisions"]:
        for m in d.get("matches", ())[:3]:
            lines.append(f"{_iso(d.get('decided_at_ms'))} {d['decision']}: bank {m['bank']} entry {m['entry_id']} "
                         f"({m.get('label')}) {m['signal']} distance {m['distance']}")
    return "\n".join(lines)


def fileinfo_xml(manifest: dict[str, Any], upload: dict[str, Any]) -> bytes:
    root = ET.Element("fileDetails")
    _sub(root, "reportId", TO_FILL)
    _sub(root, "fileId", TO_FILL)
    uri = upload.get("media_uri") or ""
    _sub(root, "originalFileName", uri.rsplit("/", 1)[-1] or upload["event_id"])
    _sub(root, "fileViewedByEsp", "false")  # vigil matched hashes; no person at the platform viewed it
    h = upload.get("hashes") or {}
    for kind, key in (("MD5", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256")):
        if h.get(key):
            _sub(root, "originalFileHash", h[key], hashType=kind)
    _, ip = _uploader(upload.get("metadata") or {})
    if ip:
        ev = _sub(root, "ipCaptureEvent")
        _sub(ev, "ipAddress", ip)
        _sub(ev, "eventName", "Upload")
        _sub(ev, "dateTime", _iso(upload.get("submitted_at_ms")))
    info = [f"event id {upload['event_id']}"]
    if h.get("pdq"):
        info.append(f"PDQ {h['pdq']}")
    _sub(root, "additionalInfo", "; ".join(info))
    return _text(root)
