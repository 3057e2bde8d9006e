"""A real API process (uvicorn, via `vigil api`) for tests, and a local media web server."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from workers.stack.embedded import free_port


@dataclass
class ApiProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start_api(redis_url: str, log_dir: Path, kafka: str | None = None, media_root: Path | None = None,
              env: dict[str, str] | None = None, args: list[str] = (), wait_ready: bool = True) -> ApiProcess:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    full_env.update({"VIGIL_REDIS": redis_url, "VIGIL_API_PORT": str(port), **(env or {})})
    if kafka:
        full_env.update({"VIGIL_KAFKA": kafka, "VIGIL_EMBEDDED": "1"})
    if media_root:
        full_env["VIGIL_MEDIA_ROOTS"] = str(media_root)
    log_path = log_dir / f"api-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "api", *args], env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    api = ApiProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    path = "/status" if wait_ready else "/status/live"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"vigil api exited with {proc.returncode}:\n{api.log()}")
        try:
            if httpx.get(api.url + path, timeout=2).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_api(api)
            raise TimeoutError(f"vigil api not ready:\n{api.log()}")
        time.sleep(0.1)


def stop_api(api: ApiProcess) -> None:
    api.proc.terminate()
    try:
        api.proc.wait(20)
    except subprocess.TimeoutExpired:
        api.proc.kill()
        api.proc.wait(5)


class MediaServer:
    """Serves files from a directory on 127.0.0.1, plus /redirect?to=URL (a 302) for SSRF tests."""

    def __init__(self, root: Path):
        root_s = str(root)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=root_s, **kw)

            def do_GET(self):  # noqa: N802
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
