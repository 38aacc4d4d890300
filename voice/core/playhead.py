"""Where the caller's playback is: a model of the far end's audio buffer.

Audio sent ahead of real time sits in the caller's buffer; it counts as heard only once the
caller's playhead has passed it. Times are seconds on any monotonic clock, passed in by the
I/O layer, so this stays pure.
"""

from __future__ import annotations


class Playhead:
    """Tracks reply audio sent to the caller against the caller's real-time playback.

    Underruns (gaps while waiting for TTS) are modelled: playback of a chunk starts at the
    later of its arrival and the end of what was already buffered.
    """

    def __init__(self) -> None:
        self._end = 0.0  # when the caller's buffer runs dry
        self._sent_ms = 0.0

    def sent(self, duration_ms: float, now: float) -> None:
        self._end = max(now, self._end) + duration_ms / 1000.0
        self._sent_ms += duration_ms

    def buffered_ms(self, now: float) -> float:
        """Audio the caller holds but has not played yet."""
        return max(0.0, self._end - now) * 1000.0

    def played_ms(self, now: float) -> float:
        """Audio of this response the caller has heard."""
        return self._sent_ms - self.buffered_ms(now)

    @property
    def sent_ms(self) -> float:
        return self._sent_ms

    def clear(self, now: float) -> None:
        """The caller dropped what it had buffered (barge-in): only the played part counts."""
        self._sent_ms = self.played_ms(now)
        self._end = min(self._end, now)

    def reset(self) -> None:
        """A new response starts from zero."""
        self._end = 0.0
        self._sent_ms = 0.0
