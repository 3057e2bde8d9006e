"""Per-token token buckets: a burst, then a sustained rate; the answer to "not now" is how long to wait."""
from __future__ import annotations

import math
import threading
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate = max(rate_per_s, 1e-9)
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """0 if the request may go ahead (one token taken), else the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per caller. Buckets live in the process: with N API replicas behind a load
    balancer a token's effective rate is up to N times its own (docs/api.md)."""

    MAX_BUCKETS = 100_000  # bounded memory: the oldest callers are forgotten (they start full again)

    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self.buckets: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()

    def retry_after(self, caller: str, rate_per_s: float | None = None, burst: int | None = None) -> int:
        """0 when allowed, else whole seconds to put in Retry-After (at least 1)."""
        with self.lock:
            bucket = self.buckets.get(caller)
            if bucket is None:
                if len(self.buckets) >= self.MAX_BUCKETS:
                    self.buckets.pop(next(iter(self.buckets)))
                bucket = self.buckets[caller] = TokenBucket(rate_per_s or self.rate, burst or self.burst)
            wait = bucket.take()
        return 0 if wait == 0 else max(1, math.ceil(wait))
