"""Who is calling, and may they: bearer tokens with scopes, then the caller's rate limit.

With no token created at all, the API is open (it only starts that way on a loopback address, or
with --insecure; workers/api/server.py). Once one token exists, every route but the health ones
needs a token with the route's scope. Token lookups are cached for CACHE_S, so a revoked token
stops working within that time and lookups cost no Redis round trip."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from fastapi import Request

from workers.api.problems import Problem
from workers.api.ratelimit import RateLimiter
from workers.api.tokens import SCOPES, TokenInfo, TokenStore

CACHE_S = 5.0
ANONYMOUS = TokenInfo("anonymous", SCOPES)


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: tuple[str, ...]

    @property
    def actor(self) -> str:
        """How bank writes are attributed in the audit stream."""
        return f"api:{self.name}"


class Authenticator:
    def __init__(self, tokens: TokenStore, limiter: RateLimiter):
        self.tokens, self.limiter = tokens, limiter
        self._cache: dict[str, tuple[float, TokenInfo | None]] = {}
        self._count: tuple[float, int] = (0.0, 0)

    def open_mode(self) -> bool:
        at, n = self._count
        if time.monotonic() - at > CACHE_S:
            n = self.tokens.count()
            self._count = (time.monotonic(), n)
        return n == 0

    def _find(self, token: str) -> TokenInfo | None:
        hit = self._cache.get(token)
        if hit and time.monotonic() - hit[0] < CACHE_S:
            return hit[1]
        info = self.tokens.find(token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (time.monotonic(), info)
        return info

    def caller(self, request: Request, scope: str) -> Caller:
        return self.check(request.headers.get("authorization", ""), scope)

    def check(self, header: str, scope: str) -> Caller:
        """The caller of a request with this Authorization header, or a 401/403/429 Problem.
        Takes the header, not the request, so the ASGI fast path (fast_lookup.py) can call it
        without building a Starlette Request."""
        kind, _, token = header.partition(" ")
        if kind.lower() == "bearer" and token.strip():
            info = self._find(token.strip())
            if info is None:
                raise Problem(401, "unknown or revoked token", "unauthorized",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        elif self.open_mode():
            info = ANONYMOUS
        else:
            raise Problem(401, "this API needs a bearer token: `Authorization: Bearer <token>` "
                               "(create one with `vigil api token create --scope ...`)", "unauthorized",
                          headers={"WWW-Authenticate": "Bearer"})
        if scope not in info.scopes:
            raise Problem(403, f"token {info.name!r} lacks the {scope!r} scope (it has {', '.join(info.scopes)})",
                          "forbidden")
        wait = self.limiter.retry_after(info.digest or info.name, info.rate_per_s, info.burst)
        if wait:
            raise Problem(429, f"rate limit of token {info.name!r} exceeded; retry in {wait}s", "rate-limited",
                          headers={"Retry-After": str(wait)})
        return Caller(info.name, info.scopes)


def need(scope: str) -> Callable[[Request], Caller]:
    """A FastAPI dependency: `caller: Caller = Depends(need("lookup"))`."""
    async def dependency(request: Request) -> Caller:
        return request.app.state.auth.caller(request, scope)
    dependency.__name__ = f"need_{scope.replace(':', '_')}"
    return dependency
