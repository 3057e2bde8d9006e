"""The FastAPI application: the service, its background threads, and the routes.

`create_app` is what uvicorn serves (workers/api/server.py) and what tests start in a real
uvicorn process. OpenAPI (/openapi.json) and the docs page (/docs) come from the routes."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from workers.api import hma_curation, hma_match, problems, v1_banks, v1_lookup
from workers.api.auth import Authenticator
from workers.api.body_limit import BodyLimit
from workers.api.decision_watch import DecisionWatch
from workers.api.fast_lookup import RawLookupFast
from workers.api.ratelimit import RateLimiter
from workers.api.service import ApiService
from workers.api.tokens import TokenStore
from workers.bank.store import BankStore
from workers.index.follower import BankFollower
from workers.ops import metrics
from workers.settings import Settings

log = logging.getLogger("vigil.api")


def create_app(settings: Settings) -> FastAPI:
    if not settings.redis:
        raise ValueError("no Redis URL: set VIGIL_REDIS or --redis (or run `vigil up`)")
    store = BankStore.from_url(settings.redis, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10)
    writer = BankStore.from_url(settings.api_bank_write_redis, socket_timeout=30) \
        if settings.api_bank_write_redis else None
    follower = BankFollower(settings, store)
    service = ApiService(settings, store, follower, writer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from workers.index import mih_kernel

        mih_kernel.warm()
        follower.start()
        app.state.decisions = DecisionWatch(settings).start() if settings.kafka else None
        log.info("api started", extra={"worker": service.name, "kafka": settings.kafka})
        try:
            yield
        finally:
            if app.state.decisions is not None:
                app.state.decisions.stop()
            service.close()

    app = FastAPI(title="vigil API", version="1",
                  description="Hash, lookup, submit and bank admin over HTTP: HMA 2.x routes (/h, /m, /c, /status) "
                              "and vigil's own /v1. Errors are RFC 9457 problem documents. See docs/api.md.",
                  lifespan=lifespan)
    app.state.service = service
    app.state.auth = Authenticator(TokenStore(store.r), RateLimiter(settings.api_rate_per_s, settings.api_burst))
    app.state.decisions = None
    problems.install(app)
    for module in (hma_match, hma_curation, v1_lookup, v1_banks):
        app.include_router(module.router)

    @app.get("/readyz", tags=["health"], summary="Readiness as the workers report it (JSON; 503 until ready)")
    @app.get("/v1/health", tags=["health"], summary="Readiness with the reasons (JSON)")
    async def health(request: Request) -> JSONResponse:
        index = service.follower.index
        checks = {"bank_loaded": index.loaded, "bank_fresh": service.fresh}
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks, "bank_version": index.version,
                             "entries": index.counts(), "worker": service.name}, status_code=200 if ok else 503)

    @app.get("/healthz", tags=["health"], summary="Liveness (JSON)", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"alive": True})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.BANK_VERSION.set(service.follower.index.version)
        metrics.BANK_SYNC.set(service.follower.index.synced_at)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class RequestMetrics:
    """Counts and times every request by its route template (bounded labels)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.API_REQUESTS.labels(route, str(status[0])).inc()
            metrics.API_LATENCY.labels(route).observe(time.perf_counter() - t0)


def asgi_app(settings: Settings):
    """The app behind the body limit (over-large bodies are refused before any parsing), and in
    front of it all the raw_lookup fast path (workers/api/fast_lookup.py says why)."""
    app = create_app(settings)
    return RawLookupFast(RequestMetrics(BodyLimit(app, settings.api_max_body_bytes)), app.state)


def asgi_app_from_env():
    """For uvicorn's worker processes (VIGIL_API_WORKERS > 1): `vigil api` hands them its settings
    through VIGIL_* (Settings.to_env), as `vigil up` does for workers."""
    return asgi_app(Settings.from_env())
