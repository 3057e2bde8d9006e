"""Reviewer accounts, sessions and CSRF. Local accounts have argon2 password hashes (`vigil
review user add`); behind a reverse proxy that authenticates people (oauth2-proxy), the identity
header it sets can be trusted instead (off by default: a header anyone can send proves nothing
unless the proxy is the only way in). The session is a signed cookie holding the reviewer's name
and a CSRF token; every form carries the token and every POST is refused without it."""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from workers.ops.logs import now_ms
from workers.review.db import Reviewer

ROLES = ("reviewer", "lead")
COOKIE = "vigil_review"
SESSION_MAX_AGE_S = 12 * 3600
_hasher = PasswordHasher()
# verify() against this when the name is unknown, so a wrong name costs as long as a wrong password
_DUMMY = _hasher.hash(secrets.token_hex(8))


@dataclass(frozen=True)
class Who:
    name: str
    role: str
    blur: int


def add_user(sessions: sessionmaker, name: str, role: str, password: str | None) -> None:
    """Create or update an account (a new password or role for an existing name)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 200:
        raise ValueError("a reviewer name is 1 to 200 characters")
    with sessions.begin() as s:
        r = s.get(Reviewer, name)
        if r is None:
            r = Reviewer(name=name, role=role, created_at_ms=now_ms(), blur=24)
            s.add(r)
        r.role, r.disabled = role, False
        r.password_hash = _hasher.hash(password) if password else r.password_hash


def check_password(s: Session, name: str, password: str) -> Reviewer | None:
    r = s.get(Reviewer, name)
    try:
        if r is None or r.disabled or not r.password_hash:
            _hasher.verify(_DUMMY, password)
            return None
        _hasher.verify(r.password_hash, password)
        return r
    except (VerificationError, InvalidHashError):
        return None


def from_header(s: Session, name: str) -> Reviewer:
    """The proxy vouches for the name: an account is made on first sight (role reviewer; a lead
    is promoted with `vigil review user add NAME --role lead`)."""
    r = s.get(Reviewer, name)
    if r is None:
        r = Reviewer(name=name, role="reviewer", created_at_ms=now_ms(), blur=24)
        s.add(r)
        s.flush()
    return r


def users(s: Session) -> list[Reviewer]:
    return list(s.scalars(select(Reviewer).order_by(Reviewer.name)))


class Sessions:
    """Signed, timed cookies: {"u": name or absent, "csrf": token}."""

    def __init__(self, secret: str):
        self.signer = URLSafeTimedSerializer(secret or secrets.token_hex(32), salt="vigil-review-session")

    def load(self, cookie: str | None) -> dict[str, Any]:
        if cookie:
            try:
                data = self.signer.loads(cookie, max_age=SESSION_MAX_AGE_S)
                if isinstance(data, dict) and isinstance(data.get("csrf"), str):
                    return data
            except BadSignature:
                pass
        return {"csrf": secrets.token_urlsafe(24)}

    def dump(self, data: dict[str, Any]) -> str:
        return self.signer.dumps(data)


def csrf_ok(session: dict[str, Any], sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(session.get("csrf", "")), str(sent))
