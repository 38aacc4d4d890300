"""What the far end has played, from the marks it echoes (sans-I/O).

Telephony carriers (Twilio, Telnyx) play the audio we send in order and, when the audio sent
before a ``mark`` has finished playing, send that mark back. So a mark after every chunk
turns the carrier's own playback into an exact played position: the end of the chunk whose
mark came back last. No model of the far end's clock is needed, and a slow or jittery
network only delays the echo; it never makes us claim audio the caller did not hear.

A ``clear`` makes the carrier drop what it holds and return every mark still queued at
once. Those echoes mean *dropped*, not played: the ledger remembers which marks a clear
covered and ignores them except to forget them. Times are seconds on any monotonic clock,
passed in by the I/O side.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Mark:
    name: str
    response: int
    end_ms: float
    """Position in its response of the end of the chunk it follows."""
    duration_ms: float
    deadline: float
    """By when its echo is overdue (see :meth:`MarkLedger.expire`)."""
    cleared: bool = False


class MarkLedger:
    """Names the mark after each chunk sent, and turns echoes into the played position.

    ``outstanding_ms`` is the audio sent that the far end has neither played nor dropped:
    the lead the sender keeps bounded. ``played_ms`` is the current response's played
    position: the end of its last chunk whose mark was echoed, not after a clear.
    """

    def __init__(self, *, grace_s: float = 2.0) -> None:
        self._grace_s = grace_s
        self._response = 0
        self._sent_ms = 0.0
        self._played_ms = 0.0
        self._outstanding_ms = 0.0
        self._serial = 0
        self._pending: deque[_Mark] = deque()
        self.expired = 0
        """Marks given up on: their echo never came (see :meth:`expire`)."""

    @property
    def outstanding_ms(self) -> float:
        return self._outstanding_ms

    @property
    def played_ms(self) -> float:
        return self._played_ms

    @property
    def sent_ms(self) -> float:
        """Audio of the current response sent so far."""
        return self._sent_ms

    @property
    def pending(self) -> int:
        """Marks sent and not yet echoed (cleared ones included until they come back)."""
        return len(self._pending)

    def start_response(self) -> None:
        """A new response: positions count from zero. Marks still out belong to the old one."""
        self._response += 1
        self._sent_ms = 0.0
        self._played_ms = 0.0

    def sent(self, duration_ms: float, now: float) -> str:
        """A chunk of ``duration_ms`` has been sent; returns the name of the mark to follow it.

        Its echo is overdue once everything ahead of it, and it, could have played, plus a
        grace for the network.
        """
        self._serial += 1
        self._sent_ms += duration_ms
        self._outstanding_ms += duration_ms
        name = f"{self._response}.{self._serial}"
        deadline = now + self._outstanding_ms / 1000.0 + self._grace_s
        self._pending.append(_Mark(name, self._response, self._sent_ms, duration_ms, deadline))
        return name

    def echoed(self, name: str) -> bool:
        """The far end returned mark ``name``. False if it is not one we are waiting for.

        Marks come back in the order sent; any still pending before ``name`` are taken as
        returned with it.
        """
        if not any(mark.name == name for mark in self._pending):
            return False
        while True:
            mark = self._pending.popleft()
            if not mark.cleared:
                self._outstanding_ms -= mark.duration_ms
                if mark.response == self._response:
                    self._played_ms = mark.end_ms
            if mark.name == name:
                break
        if not self._pending:
            self._outstanding_ms = 0.0  # no drift from summing floats
        return True

    def clear(self) -> None:
        """The far end is told to drop what it holds: nothing out counts as played any more."""
        for mark in self._pending:
            mark.cleared = True
        self._outstanding_ms = 0.0

    def expire(self, now: float) -> int:
        """Stop waiting for echoes that are overdue; returns how many were given up.

        A far end that never echoes (a one-way stream) would otherwise stall the sender at
        its lead for good. An expired mark frees its lead but never counts as played: we
        cannot tell the caller heard it.
        """
        count = 0
        for mark in self._pending:
            if mark.cleared or mark.deadline > now:
                continue
            mark.cleared = True
            self._outstanding_ms -= mark.duration_ms
            count += 1
        self.expired += count
        # Forget overdue marks no longer counted, so a far end that never echoes cannot
        # grow the ledger; a very late echo of one is then simply unknown.
        while self._pending and self._pending[0].cleared and self._pending[0].deadline <= now:
            self._pending.popleft()
        if all(mark.cleared for mark in self._pending):
            self._outstanding_ms = 0.0
        return count

    def next_deadline(self) -> float | None:
        """When the oldest echo still counted becomes overdue; None if none is awaited."""
        for mark in self._pending:
            if not mark.cleared:
                return mark.deadline
        return None
