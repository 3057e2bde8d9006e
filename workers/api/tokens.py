"""API bearer tokens: created by `vigil api token create`, stored hashed in Redis.

Only the SHA-256 of a token is stored (a token is 32 random bytes, so a fast hash is enough: there
is nothing to brute-force), with its name, scopes and rate. The plain token is shown once."""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field

import redis

TOKENS_KEY = "vigil:api:tokens"
SCOPES = ("lookup", "submit", "bank:read", "bank:write")
PREFIX = "vgl_"


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scopes: tuple[str, ...]
    rate_per_s: float | None = None  # None: the API's default (VIGIL_API_RATE_PER_S)
    burst: int | None = None
    created_at_ms: int = 0
    digest: str = field(default="", compare=False)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("digest")
        out["scopes"] = list(self.scopes)
        return out


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, client: redis.Redis):
        self.r = client

    def create(self, name: str, scopes: list[str], rate_per_s: float | None = None,
               burst: int | None = None) -> tuple[str, TokenInfo]:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scopes are {', '.join(SCOPES)}; got {', '.join(bad) or 'none'}")
        if not name or any(t.name == name for t in self.list()):
            raise ValueError(f"a token needs a new, non-empty name ({name!r} is taken or empty)")
        token = PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(name, tuple(dict.fromkeys(scopes)), rate_per_s, burst, int(time.time() * 1000))
        self.r.hset(TOKENS_KEY, digest(token), json.dumps(info.to_json()))
        return token, info

    def find(self, token: str) -> TokenInfo | None:
        raw = self.r.hget(TOKENS_KEY, digest(token))
        return self._parse(digest(token), raw) if raw else None

    def list(self) -> list[TokenInfo]:
        return sorted((self._parse(d, v) for d, v in self.r.hgetall(TOKENS_KEY).items()), key=lambda t: t.name)

    def count(self) -> int:
        return int(self.r.hlen(TOKENS_KEY))

    def revoke(self, name: str) -> bool:
        for d, v in self.r.hgetall(TOKENS_KEY).items():
            if json.loads(v)["name"] == name:
                return bool(self.r.hdel(TOKENS_KEY, d))
        return False

    @staticmethod
    def _parse(d: str, raw: str | bytes) -> TokenInfo:
        obj = json.loads(raw)
        return TokenInfo(obj["name"], tuple(obj["scopes"]), obj.get("rate_per_s"), obj.get("burst"),
                         obj.get("created_at_ms", 0), d)
