"""Shared fixtures: real redis-server and the real embedded broker, never mocks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.bank.store import BankStore
from workers.settings import Settings
from workers.stack.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def store(redis_url: str) -> BankStore:
    s = BankStore.from_url(redis_url, actor="pytest")
    s.r.flushdb()
    return s


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cluster(media_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole pipeline on the embedded stack: 1 hasher, 1 matcher, as `vigil up` runs it."""
    from workers.stack.cluster import Cluster

    data = tmp_path_factory.mktemp("cluster")
    settings = Settings(media_roots=(str(media_dir),), data_dir=str(data), partitions=3)
    with Cluster(settings) as c:
        c.wait_ready(timeout=120)
        yield c


@pytest.fixture(scope="session", autouse=True)
def _one_native_thread():
    from workers.signals import limit_native_threads

    limit_native_threads()


@pytest.fixture(scope="session", autouse=True)
def _no_vigil_env():
    """Tests describe their own settings; a developer's VIGIL_* must not leak in."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("VIGIL_")}
    yield
    os.environ.update(saved)
