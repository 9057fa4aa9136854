"""Per-token request rate: a token bucket (``rate_per_minute`` refill, ``burst`` capacity)."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """Token buckets keyed by token name; :meth:`check` says how long to wait (0: allowed)."""

    def __init__(self, rate_per_minute: float, burst: int, clock=time.monotonic):
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> int:
        """Spend one request of ``key``; returns 0 when allowed, else whole seconds to Retry-After."""
        now = self.clock()
        with self._lock:
            level, last = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - last) * self.rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return 0
            self._buckets[key] = (level, now)
            return max(1, math.ceil((1.0 - level) / self.rate))
