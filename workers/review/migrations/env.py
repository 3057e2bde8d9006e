"""Alembic environment: the URL comes from the Config the service builds (workers.review.db.migrate)."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from workers.review.db import Base

config = context.config


def run() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
