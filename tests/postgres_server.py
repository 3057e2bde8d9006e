"""A real PostgreSQL for the tests, from Debian's `postgresql` package: initdb into a temp dir and
postgres on a free loopback port, as the suite runs redis-server. PostgreSQL refuses to run as
root, so when the tests run as root the server runs as the `postgres` user (runuser)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from workers.stack.embedded import free_port


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (make system)")
    return path


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        self.proc: subprocess.Popen | None = None
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name

    def _cmd(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] + argv if self.as_root else argv

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/vigil"

    def start(self) -> "PostgresServer":
        data = self.dir / "data"
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        subprocess.run(self._cmd([pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8"]),
                       check=True, capture_output=True)
        log = open(self.dir / "postgres.log", "wb")
        self.proc = subprocess.Popen(self._cmd([pg_bin("postgres"), "-D", str(data), "-p", str(self.port),
                                                "-h", "127.0.0.1", "-k", str(self.dir), "-c", "fsync=off"]),
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run(self._cmd([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                          "-U", self.user, "vigil"]), capture_output=True)
            if r.returncode == 0:
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {r.stderr.decode()}\n"
                                   + (self.dir / "postgres.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: smart shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
