"""Token buckets per API key, sized by the key's role, kept in memory per server process.

With several server processes each keeps its own buckets, so a client spread over N processes
by a load balancer can get up to N times its limit; a shared limit would need the database on
every request, which costs more than the requests it protects.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from observatory_core.accounts.permissions import Role

# requests per minute (the bucket's size; it refills continuously at this rate)
PER_MINUTE = {Role.ADMIN: 600, Role.DEVELOPER: 600, Role.VIEWER: 300, Role.BILLING: 120}


@dataclass
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # until the bucket is full again
    retry_after_s: int  # until one request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class RateLimiter:
    def __init__(self, per_minute: dict[Role, int] | None = None, clock=time.monotonic) -> None:
        self.per_minute = per_minute or PER_MINUTE
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_id: int, role: Role, multiplier: float = 1.0) -> Verdict:
        capacity = max(1, int(self.per_minute[role] * multiplier))
        rate = capacity / 60.0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (float(capacity), now))
            tokens = min(float(capacity), tokens + (now - at) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key_id] = (tokens, now)
        return Verdict(
            allowed=allowed,
            limit=capacity,
            remaining=int(tokens),
            reset_s=math.ceil((capacity - tokens) / rate),
            retry_after_s=0 if allowed else math.ceil((1.0 - tokens) / rate),
        )
