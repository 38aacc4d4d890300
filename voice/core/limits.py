"""What one caller may use, counted without I/O: the caller passes the clock in."""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class TurnRate:
    """At most ``per_minute`` turns in any sliding minute; :meth:`allow` counts one if so."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        times = self._times
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        if len(times) >= self.per_minute:
            return False
        times.append(now)
        return True
