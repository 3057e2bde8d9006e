"""Run the whole pipeline: services (embedded or external), topics, and worker processes.

`vigil up`, `vigil demo` and the integration tests all start the system through this class, so
what the tests prove is what users run."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from workers.stream.kafka import create_topics
from workers.settings import Settings
from workers.stack.embedded import EmbeddedServices, free_port, spawn, stop

log = logging.getLogger("vigil.runner")


@dataclass
class WorkerProcess:
    kind: str
    name: str
    metrics_url: str
    proc: subprocess.Popen
    log_path: Path
    member: int | None = None  # a retro worker's index in the fleet (workers/retro/members.py)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.metrics_url.replace("/metrics", "/readyz"), timeout=1) as resp:
                return json.load(resp).get("ready", False)
        except (OSError, ValueError):
            return False


class Cluster:
    """Context manager: services up, topics created, workers spawned; everything stopped on exit."""

    def __init__(self, settings: Settings, hashers: int = 1, matchers: int = 1, api: bool = False,
                 review: bool = False, retros: int = 0):
        self.base = settings
        # api: `vigil api`; review: `vigil review` (the review page and its consumer); retro: the
        # retroactive matcher (`vigil up` starts one); each is one more process
        self.counts = {"hasher": hashers, "matcher": matchers, "api": int(api), "review": int(review),
                       "retro": retros}
        self.services = EmbeddedServices(settings.kafka, settings.redis, settings.data_dir)
        self.workers: list[WorkerProcess] = []
        self.settings = settings
        self._seq = 0

    @property
    def api_url(self) -> str | None:
        """The HTTP API's base URL when the cluster runs one (Cluster(api=True), `vigil up`)."""
        api = next((w for w in self.workers if w.kind == "api"), None)
        return api.metrics_url.removesuffix("/metrics") if api else None

    def __enter__(self) -> "Cluster":
        self.services.__enter__()
        try:
            self.settings = replace(self.base, kafka=self.services.kafka, redis=self.services.redis,
                                    embedded=self.base.embedded or self.services.embedded_kafka,
                                    data_dir=str(self.services.data_dir))
            create_topics(self.settings)
            for kind, n in self.counts.items():
                for _ in range(n):
                    self.start_worker(kind)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            stop(w.proc, timeout=20)
        self.workers.clear()
        self.services.__exit__()

    def start_worker(self, kind: str) -> WorkerProcess:
        self._seq += 1
        name = f"{kind}-{self._seq}"
        port = self.base.metrics_port + self._seq - 1 if self.base.metrics_port else free_port()
        s = replace(self.settings, worker_id=name, metrics_port=port)
        command, host = ["worker", kind], s.metrics_host
        if kind == "review":  # its page serves /metrics and /readyz too; 8081 unless taken
            port = self.base.review_port if _port_free(s.review_host, self.base.review_port) else free_port()
            s = replace(s, review_port=port)
            command, host = ["review"], s.review_host
        member = None
        if kind == "retro":  # N retro workers split each rescan; a restart takes the free index
            held = {w.member for w in self.workers if w.kind == "retro" and w.proc.poll() is None}
            member = min(i for i in range(len(held) + 1) if i not in held)
            members = self.base.retro_members if self.base.retro_members > 1 else max(1, self.counts["retro"])
            s = replace(s, retro_members=members, retro_member=member)
        env = {**_inherited_env(), **s.to_env()}
        log_path = Path(self.settings.data_dir) / f"{name}.log"
        if kind == "api":  # the HTTP API (workers/api) serves its /metrics and /readyz on its own port
            env["VIGIL_API_PORT"] = str(port)
            command = ["api"]
        proc = spawn([sys.executable, "-m", "workers.cli", *command], env=env, log_path=log_path)
        w = WorkerProcess(kind, name, f"http://{host}:{port}/metrics", proc, log_path, member)
        self.workers.append(w)
        return w

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.workers)
        while pending:
            for w in list(pending):
                if w.proc.poll() is not None:
                    raise RuntimeError(f"{w.name} exited with code {w.proc.returncode}; see {w.log_path}:\n"
                                       + _tail(w.log_path))
                if w.ready():
                    pending.remove(w)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(w.name for w in pending)}")
            time.sleep(0.2)


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


def _inherited_env() -> dict[str, str]:
    """The child gets PATH and friends, but VIGIL_* only from the settings we hand it."""
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
