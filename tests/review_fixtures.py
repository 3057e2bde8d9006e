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


class ReviewProcess:
    """`vigil review` as users run it, in its own process, against the test cluster."""

    def __init__(self, settings: Settings, db_url: str, data_dir, port: int):
        self.settings, self.db_url, self.data_dir, self.port = settings, db_url, data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def _argv(self, *verb: str) -> list[str]:
        import sys
        return [sys.executable, "-m", "workers.cli", "review", *verb]

    def _env(self) -> dict:
        import os
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env.update(self.settings.to_env())
        env.update({"VIGIL_REVIEW_DB": self.db_url, "VIGIL_DATA_DIR": str(self.data_dir),
                    "VIGIL_REVIEW_SECRET": "test-secret", "VIGIL_WORKER_ID": "review-1"})
        return env

    def user_add(self, name: str, role: str, password: str) -> None:
        import subprocess
        subprocess.run(self._argv("user", "add", name, "--role", role, "--password-stdin"), input=password + "\n",
                       text=True, env=self._env(), check=True, capture_output=True, timeout=60)

    def start(self, timeout: float = 60.0) -> "ReviewProcess":
        import json
        import time
        import urllib.request

        from workers.stack.embedded import spawn
        argv = self._argv("--port", str(self.port), "--qa-sample", "0")
        self.log_path = self.data_dir / "review.log"
        self.proc = spawn(argv, env=self._env(), log_path=self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("vigil review exited:\n" + self.log_path.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if json.load(r)["ready"]:
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError("vigil review not ready:\n" + self.log_path.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        from workers.stack.embedded import stop
        if self.proc is not None:
            stop(self.proc, timeout=20)


def chromium(user_data_dir) -> "webdriver.Chrome":  # noqa: F821
    """Debian's chromium and chromium-driver, headless, with a fresh profile and no network chatter."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
