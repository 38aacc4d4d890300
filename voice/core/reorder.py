"""Put numbered media frames back in order, and say where one went missing (sans-I/O).

Telephony carriers number their media messages; some (Telnyx) say plainly that frames may
arrive out of order. A frame that arrives early waits here until the ones before it do, or
until ``window`` later frames have arrived, at which point the missing one is declared lost
and the caller fills it with silence (so the audio clock, and the turn detector riding on
it, stays right). In order, nothing waits: a frame is released the moment it arrives.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

MAX_FILL = 50
"""Longest run of lost frames (1 s at 20 ms) filled with silence; past it the stream resyncs
without filling, as after a carrier restarting its numbering."""


class ReorderBuffer(Generic[T]):
    """Frames in by number, in any order; frames out in order, ``None`` for each lost one.

    ``late`` counts frames that arrived after their place had been passed (too late, or
    duplicates); they are dropped.
    """

    def __init__(self, window: int) -> None:
        if window < 0:
            raise ValueError(f"window must not be negative, got {window}")
        self.window = window
        self.late = 0
        self._next: int | None = None
        self._held: dict[int, T | None] = {}

    @property
    def held(self) -> int:
        """Frames waiting for an earlier one."""
        return len(self._held)

    def push(self, number: int, item: T | None) -> list[T | None]:
        """Add frame ``number`` (``item`` None: known lost); return what is now in order."""
        if self._next is None:
            self._next = number
        if number < self._next or number in self._held:
            self.late += 1
            return []
        self._held[number] = item
        out: list[T | None] = []
        self._release(out)
        while self._held and max(self._held) - self._next >= self.window:
            # The frame at ``_next`` has been waited for long enough: it is lost.
            first = min(self._held)
            if first - self._next > MAX_FILL:
                self._next = first
            else:
                out.extend([None] * (first - self._next))
                self._next = first
            self._release(out)
        return out

    def _release(self, out: list[T | None]) -> None:
        assert self._next is not None
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
