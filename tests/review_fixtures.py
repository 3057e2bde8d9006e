"""Fixtures for the review tests: the store on SQLite and on a real PostgreSQL."""
from __future__ import annotations

import pytest

from workers.review import db
from workers.settings import Settings


@pytest.fixture(scope="session")
def postgres():
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def review_db(request, tmp_path) -> str:
    """A fresh, migrated database URL of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'review.db'}"
    else:
        import sqlalchemy as sa

        server = request.getfixturevalue("postgres")
        name = f"t{abs(hash(request.node.nodeid)) % 10**9}"
        admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            c.execute(sa.text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = server.url.rsplit("/", 1)[0] + "/" + name
    db.migrate(url)
    return url


@pytest.fixture
def sessions(review_db: str):
    from sqlalchemy.orm import sessionmaker

    engine = db.make_engine(review_db)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def review_settings(review_db: str, tmp_path) -> Settings:
    return Settings(review_db=review_db, data_dir=str(tmp_path), media_roots=(str(tmp_path),))
