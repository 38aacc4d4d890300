"""What one caller may use, counted without I/O: the caller passes the clock in."""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class PerMinute:
    """At most ``per_minute`` events in any sliding minute; :meth:`allow` counts one if so."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        if self.full(now):
            return False
        self._times.append(now)
        return True

    def full(self, now: float) -> bool:
        """Whether :meth:`allow` would refuse now (counting nothing)."""
        times = self._times
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        return len(times) >= self.per_minute


class PerKeyRate:
    """A :class:`PerMinute` for each key (a client address), for at most ``max_keys`` keys:
    past that the least recently seen is forgotten, so memory stays bounded whatever the
    number of addresses."""

    def __init__(self, per_minute: int, *, max_keys: int = 10_000) -> None:
        self.per_minute = per_minute
        self._max_keys = max_keys
        self._rates: dict[str, PerMinute] = {}

    def allow(self, key: str, now: float) -> bool:
        rate = self._rates.pop(key, None) or PerMinute(self.per_minute)
        self._rates[key] = rate  # most recently seen last
        if len(self._rates) > self._max_keys:
            del self._rates[next(iter(self._rates))]
        return rate.allow(now)
