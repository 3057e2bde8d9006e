"""Verdicts and what they change. Recording one is a single database transaction (verdict row,
case status, audit row); applying it is the bank change plus one moderation.actions message.
A verdict stays `applied = false` until both are done, and `Applier` replays every such verdict in
order, after a crash too: the bank write is idempotent (entry ids derive from the file's hash) and
the message carries the same event_id (case-<case>-verdict-<verdict>) on every replay, so a
crash between the two never loses a verdict and never changes its meaning."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

import topics
from workers.errors import MediaError
from workers.ops.logs import now_ms
from workers.review import metrics
from workers.review.db import Case, Verdict
from workers.review.queue import audit, holds, release
from workers.settings import Settings

log = logging.getLogger("vigil.review")

LABELS = ("csam", "ncii", "terror", "other")
VERDICTS = ("confirm", "overturn", "escalate", "skip", "reverse")


class VerdictError(Exception):
    """The verdict cannot be taken (no lease, wrong role, bad label): the page says why (4xx)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def record(sessions: sessionmaker, settings: Settings, case_id: int, reviewer: str, role: str, verdict: str,
           label: str | None = None, note: str | None = None) -> int:
    """Store a verdict in one transaction; returns its id. Raises VerdictError."""
    if verdict not in VERDICTS:
        raise VerdictError(f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}", 400)
    with sessions.begin() as s:
        case = s.get(Case, case_id, with_for_update=True)
        if case is None:
            raise VerdictError(f"no case {case_id}", 404)
        if verdict == "reverse":
            v = _reversal(s, case, reviewer, role)
        else:
            v = _verdict(case, reviewer, role, verdict, label, settings)
        v.note = (note or "")[:2000] or None
        s.add(v)
        s.flush()
        audit(s, reviewer, "verdict", case.id, {"verdict": verdict, "label": v.label, "verdict_id": v.id})
        vid, label_out, age = v.id, v.label, v.age_s
    metrics.VERDICTS.labels(verdict, label_out or "none").inc()
    if age is not None:
        metrics.CASE_AGE.observe(age)
    return vid


def _verdict(case: Case, reviewer: str, role: str, verdict: str, label: str | None, settings: Settings) -> Verdict:
    if case.status == "closed":
        raise VerdictError(f"case {case.id} is already decided ({case.verdict}); a lead can reverse it")
    if case.status == "escalated" and role != "lead":
        raise VerdictError(f"case {case.id} is escalated to a lead", 403)
    if not holds(case, reviewer):
        raise VerdictError(f"claim case {case.id} first (or your lease ran out)")
    now = now_ms()
    v = Verdict(case_id=case.id, verdict=verdict, reviewer=reviewer, decided_at_ms=now, applied=False)
    if verdict == "confirm":
        if label not in LABELS:
            raise VerdictError(f"confirm needs a label: one of {', '.join(LABELS)}", 400)
        v.label, v.action, v.bank = label, "block", settings.review_bad_bank
    elif verdict == "overturn":
        v.action, v.bank = "allow", settings.review_ok_bank
    if verdict in ("confirm", "overturn"):
        case.status, case.verdict, case.label = "closed", verdict, v.label
        v.age_s = max(0.0, (now - case.created_at_ms) / 1000)
    elif verdict == "escalate":
        case.status = "escalated"
    if verdict in ("escalate", "skip"):
        v.applied, v.applied_at_ms = True, now  # nothing to publish: the queue is the effect
    release(case)
    case.updated_at_ms = now
    return v


def _reversal(s: Any, case: Case, reviewer: str, role: str) -> Verdict:
    if role != "lead":
        raise VerdictError("only a lead can reverse a verdict", 403)
    if case.status != "closed":
        raise VerdictError(f"case {case.id} has no standing verdict to reverse")
    last = s.scalars(select(Verdict).where(Verdict.case_id == case.id, Verdict.action.in_(("block", "allow")))
                     .order_by(Verdict.id.desc()).limit(1)).first()
    now = now_ms()
    case.status, case.verdict, case.label, case.updated_at_ms = "open", None, None, now
    release(case)
    return Verdict(case_id=case.id, verdict="reverse", reviewer=reviewer, decided_at_ms=now, action="revoke",
                   bank=last.bank if last else None, reverses=last.id if last else None, applied=False)


def action_message(v: Verdict, case: Case, reverses_event: str | None) -> dict[str, Any]:
    msg = {"schema_version": topics.SCHEMA_VERSION, "event_id": v.event_id, "content_id": case.content_id,
           "action": v.action, "label": v.label, "reviewer": v.reviewer, "case_id": case.id,
           "decided_at_ms": v.decided_at_ms, "bank": v.bank, "entry_id": v.entry_id, "reverses": reverses_event,
           "source": case.source, "kind": case.kind}
    topics.validate("action", msg)
    return msg


class Applier:
    """Applies recorded verdicts: bank change, then the message, then applied = true. One thread."""

    def __init__(self, sessions: sessionmaker, settings: Settings, store: Any, producer: Any):
        self.sessions, self.settings, self.store, self.producer = sessions, settings, store, producer
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def ensure_banks(self) -> None:
        self.store.create_bank(self.settings.review_bad_bank, "block", exist_ok=True,
                               description="hashes of items reviewers confirmed (vigil review)")
        self.store.create_bank(self.settings.review_ok_bank, "allow", exist_ok=True,
                               description="hashes of items reviewers overturned: an allowlist (vigil review)")

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.apply_pending()
            except Exception as exc:  # noqa: BLE001  (Redis or Kafka away: retried, never dropped)
                log.warning("applying verdicts failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}"})
                self.stopping.wait(2.0)
            self.wake.wait(1.0)
            self.wake.clear()

    def apply_pending(self) -> int:
        with self.sessions() as s:
            ids = s.scalars(select(Verdict.id).where(Verdict.applied.is_(False)).order_by(Verdict.id)).all()
        for vid in ids:
            self.apply(vid)
        return len(ids)

    def apply(self, verdict_id: int) -> None:
        with self.sessions() as s:
            v = s.get(Verdict, verdict_id)
            case = s.get(Case, v.case_id)
            reversed_v = s.get(Verdict, v.reverses) if v.reverses else None
        if v.applied:
            return
        note = None
        if v.action in ("block", "allow"):
            v.entry_id, note = self._bank(case, v)
        elif v.action == "revoke" and reversed_v is not None and reversed_v.entry_id:
            v.bank, v.entry_id = reversed_v.bank, reversed_v.entry_id
            self.store.set_entry_disabled(reversed_v.bank, reversed_v.entry_id, True)
        msg = action_message(v, case, reversed_v.event_id if reversed_v else None)
        self._publish(case.content_id, msg)
        with self.sessions.begin() as s:
            row = s.get(Verdict, verdict_id)
            row.entry_id, row.bank, row.applied, row.applied_at_ms = v.entry_id, v.bank, True, now_ms()
            if note:
                audit(s, "vigil-review", "bank_skipped", case.id, {"verdict_id": verdict_id, "reason": note})
        log.info("verdict applied", extra={"case_id": case.id, "verdict_id": verdict_id, "action": v.action,
                                           "bank": v.bank, "entry_id": v.entry_id})

    def _bank(self, case: Case, v: Verdict) -> tuple[str | None, str | None]:
        """Hash the case's media as it is and add it to the verdict's bank; the entry's note names
        the case. Live cases have no stored media: nothing to bank, and the audit says so."""
        from workers.bank.importer import add_media_file
        from workers.media.fetch import resolve_uri

        if not case.media_uri:
            return None, "no media_uri (live frames are not kept): nothing banked"
        try:
            path = resolve_uri(case.media_uri, self.settings.media_roots)
            entry, _version = add_media_file(self.store, v.bank, Path(path), self.settings, label=v.label,
                                             note=f"review case {case.id} verdict {v.id} by {v.reviewer}")
        except (MediaError, OSError) as exc:
            return None, f"media unavailable, nothing banked: {exc}"
        return entry.entry_id, None

    def _publish(self, key: str, msg: dict[str, Any]) -> None:
        from workers.stream.messages import encode

        failed: list[str] = []
        self.producer.produce(topics.ACTIONS, key=key.encode(), value=encode(msg),
                              on_delivery=lambda err, _m: failed.append(str(err)) if err else None)
        if self.producer.flush(30) or failed:
            raise RuntimeError(f"moderation.actions delivery failed: {failed or 'timeout'}")
