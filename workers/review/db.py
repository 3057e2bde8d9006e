"""The review store: cases, their inputs, verdicts, the audit trail and reviewer accounts, in a
relational database through SQLAlchemy 2. SQLite (a file under the data directory) is the
embedded default; PostgreSQL is production. The schema is created by the Alembic migrations in
`migrations/` only, so a production database and a test one are built the same way.

Nothing here deletes a row: cases, verdicts and the audit trail are the record of what people
decided and saw, so the application only inserts and updates them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import (BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, create_engine,
                        event)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from workers.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Queue order: lower first. Live streams are happening now; a near miss of a block bank (a
# `review` decision) may be a copy the bank just missed; QA samples measure the automatic blocks;
# reports come last, most-reported first.
PRIORITIES = {"live": 0, "near_miss": 1, "qa": 2, "report": 3}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


class Base(DeclarativeBase):
    pass


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_id: Mapped[str] = mapped_column(String(200), unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))  # upload | live | report
    kind: Mapped[str] = mapped_column(String(16))  # review | qa | report
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | escalated | closed
    decision: Mapped[str | None] = mapped_column(String(16))  # what the machines said
    media_uri: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str | None] = mapped_column(String(16))
    evidence_json: Mapped[str] = mapped_column(Text, default="[]")
    signals_json: Mapped[str | None] = mapped_column(Text)  # a report's hashes (decisions carry none)
    count: Mapped[int] = mapped_column(Integer, default=1)  # inputs folded into this case
    report_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    verdict: Mapped[str | None] = mapped_column(String(16))  # the standing verdict of a closed case
    label: Mapped[str | None] = mapped_column(String(32))
    __table_args__ = (Index("ix_cases_queue", "status", "priority", "created_at_ms"),)

    @property
    def evidence(self) -> list[dict[str, Any]]:
        return json.loads(self.evidence_json or "[]")

    @property
    def priority_name(self) -> str:
        return PRIORITY_NAMES.get(self.priority, str(self.priority))


class CaseInput(Base):
    """Each decision or report folded into a case: the content's history, and (unique input_id)
    what makes a replayed message harmless."""
    __tablename__ = "case_inputs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    input_id: Mapped[str] = mapped_column(String(250), unique=True)  # decision:<event_id> | report:<report_id>
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # decision | report
    at_ms: Mapped[int] = mapped_column(BigInteger)
    decision: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    reporter: Mapped[str | None] = mapped_column(String(200))
    detail_json: Mapped[str] = mapped_column(Text, default="{}")


class Verdict(Base):
    """A reviewer's verdict. `applied` turns true once its bank change and its moderation.actions
    message are done; until then the service replays it (both are idempotent)."""
    __tablename__ = "verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))  # confirm | overturn | escalate | skip | reverse
    label: Mapped[str | None] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    decided_at_ms: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str | None] = mapped_column(String(16))  # block | allow | revoke | None (escalate, skip)
    bank: Mapped[str | None] = mapped_column(String(200))
    entry_id: Mapped[str | None] = mapped_column(String(200))
    reverses: Mapped[int | None] = mapped_column(Integer)  # verdict id a reversal undoes
    applied: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    applied_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    age_s: Mapped[float | None] = mapped_column(Float)  # case age when decided

    @property
    def event_id(self) -> str:
        return f"case-{self.case_id}-verdict-{self.id}"


class Audit(Base):
    """Who did what when: logins, claims, reveals, verdicts. Append-only."""
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    what: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[int | None] = mapped_column(Integer, index=True)
    detail_json: Mapped[str] = mapped_column(Text, default="{}")


class Reviewer(Base):
    __tablename__ = "reviewers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # reviewer | lead
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2; None for header-only identities
    blur: Mapped[int] = mapped_column(Integer, default=24)  # preview blur radius in pixels (per reviewer)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


def database_url(settings: Settings) -> str:
    """The configured URL, or SQLite in the data directory (the embedded default)."""
    if settings.review_db:
        return settings.review_db
    base = Path(settings.data_dir) if settings.data_dir else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'review.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            # WAL: the page's reads do not wait for the intake's writes; foreign keys are off by default
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def migrate(url: str) -> None:
    """Bring the database to the newest migration (alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def open_store(settings: Settings) -> sessionmaker:
    """Migrate, then a session factory: what every part of the service uses."""
    url = database_url(settings)
    migrate(url)
    return sessionmaker(make_engine(url), expire_on_commit=False)
