"""Running the API: the bind rule, then uvicorn.

Open access (no token at all) is only for a loopback address, where only this machine can
call; on any other address the API needs at least one token, or an explicit --insecure."""
from __future__ import annotations

import ipaddress
import logging
import socket

from workers.settings import Settings

log = logging.getLogger("vigil.api")


class RefusedBind(Exception):
    pass


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(i[4][0]).is_loopback for i in socket.getaddrinfo(host, None))
        except socket.gaierror:
            return False


def check_bind(settings: Settings, token_count: int) -> str | None:
    """None if the API may start; else why not. A warning is logged when --insecure is used."""
    if is_loopback(settings.api_host) or token_count > 0:
        return None
    if settings.api_insecure:
        log.warning("serving a non-loopback address with no API token: anyone who can reach it can read and "
                    "change banks", extra={"host": settings.api_host})
        return None
    return (f"refusing to serve {settings.api_host} with no API token: anyone on the network could read and change "
            "the banks. Create one with `vigil api token create --name NAME --scope lookup ...`, bind 127.0.0.1, "
            "or pass --insecure to accept the risk")


def serve(settings: Settings) -> None:
    """Blocks until stopped (SIGINT/SIGTERM: uvicorn drains in-flight requests first)."""
    import redis
    import uvicorn

    from workers.api.app import asgi_app
    from workers.api.tokens import TokenStore

    client = redis.Redis.from_url(settings.redis, decode_responses=True, socket_connect_timeout=5)
    reason = check_bind(settings, TokenStore(client).count())
    if reason:
        raise RefusedBind(reason)
    common = dict(host=settings.api_host, port=settings.api_port, log_config=None, access_log=False, lifespan="on",
                  timeout_graceful_shutdown=10, server_header=False)
    if settings.api_workers > 1:
        # Each worker process holds its own bank index (memory x workers) and uses its own core.
        import os

        os.environ.update(settings.to_env())
        uvicorn.run("workers.api.app:asgi_app_from_env", factory=True, workers=settings.api_workers, **common)
    else:
        uvicorn.run(asgi_app(settings), **common)
