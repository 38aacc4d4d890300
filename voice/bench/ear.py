"""What a caller hears: received reply audio laid on a playback timeline (sans-I/O).

The load tester measures latency at the caller's ear, not from server events. Audio arrives
in chunks, often ahead of real time; a caller plays each chunk when the one before it ends,
or at once if its buffer ran dry. ``Ear`` keeps that timeline, cuts it into short windows,
and finds where sound starts and stops, so "reply onset" is the moment the first audible
sample would reach the caller's ear. ``flush()`` is the caller dropping what it holds (on a
barge-in): audio not yet played then was never heard. Times are seconds on the caller's
monotonic clock, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice.audio.frames import PcmFrame
from voice.audio.level import rms_dbfs

THRESHOLD_DBFS = -45.0
"""Windows louder than this are sound. Speech sits near -20 dBFS; silence is far below."""


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of sound on the playback timeline: [start, end) in seconds."""

    start: float
    end: float


class Ear:
    def __init__(
        self,
        sample_rate: int,
        *,
        window_ms: int = 10,
        threshold_dbfs: float = THRESHOLD_DBFS,
        min_sound_ms: int = 30,
        bridge_ms: int = 300,
    ) -> None:
        """``min_sound_ms``: shorter bursts are clicks, not speech. ``bridge_ms``: quiet
        shorter than this (between words) does not end a stretch of sound."""
        self.sample_rate = sample_rate
        self._window = sample_rate * window_ms // 1000 * 2
        self._window_s = window_ms / 1000.0
        self._threshold = threshold_dbfs
        self._min_sound_s = min_sound_ms / 1000.0
        self._bridge_s = bridge_ms / 1000.0
        self._pending = b""  # bytes short of a whole window, and the play time they start at
        self._pending_at = 0.0
        self._buffer_end = 0.0  # when the caller's buffer runs dry
        # Play times of the windows that were sound; quiet ones need no record, so a caller
        # on a transport that streams silence between replies (WebRTC) keeps a short list.
        self._loud: list[float] = []
        self._flushes: list[float] = []
        self.received_s = 0.0
        """Seconds of audio received (including any later flushed)."""

    def receive(self, pcm: bytes, now: float) -> None:
        """A chunk arrived at ``now``; it plays once what is buffered has played."""
        if not pcm:
            return
        start = max(now, self._buffer_end)
        if not self._pending:
            self._pending_at = start
        elif start > self._buffer_end:
            # An underrun: the partial window's tail plays later; close it as it is.
            self._close_pending()
            self._pending_at = start
        duration = len(pcm) / 2 / self.sample_rate
        self._buffer_end = start + duration
        self.received_s += duration
        data = self._pending + pcm
        whole = len(data) - len(data) % self._window
        at = self._pending_at
        for i in range(0, whole, self._window):
            if rms_dbfs(data[i : i + self._window]) > self._threshold:
                self._loud.append(at)
            at += self._window_s
        self._pending = data[whole:]
        self._pending_at = at

    def flush(self, now: float) -> None:
        """The caller dropped its buffer at ``now``: nothing after ``now`` is heard."""
        self._pending = b""
        while self._loud and self._loud[-1] >= now:
            self._loud.pop()
        self._buffer_end = min(self._buffer_end, now)
        self._flushes.append(now)

    def spans(self) -> list[Span]:
        """Stretches of sound in play order, clicks dropped and word gaps bridged."""
        spans: list[Span] = []
        start: float | None = None
        end = 0.0
        for at in self._loud:
            if start is not None and at - end <= self._bridge_s:
                end = at + self._window_s
                continue
            if start is not None:
                spans.append(Span(start, end))
            start, end = at, at + self._window_s
        if start is not None:
            spans.append(Span(start, end))
        # A window that was playing when the caller flushed was cut short there.
        clipped = [Span(s.start, min([s.end, *self._cuts_after(s.start)])) for s in spans]
        return [s for s in clipped if s.end - s.start >= self._min_sound_s]

    def _cuts_after(self, t: float) -> list[float]:
        return [f for f in self._flushes if f > t][:1]

    def onset_after(self, t: float) -> float | None:
        """When sound first reaches the ear at or after ``t``; None if it has not."""
        for span in self.spans():
            if span.start >= t:
                return span.start
        return None

    def sound_end_after(self, t: float) -> float | None:
        """When the sound playing at ``t`` (or starting after it) stops."""
        for span in self.spans():
            if span.end > t:
                return span.end
        return None

    def _close_pending(self) -> None:
        if self._pending:
            if rms_dbfs(self._pending) > self._threshold:
                self._loud.append(self._pending_at)
            self._pending = b""


def sound_span(audio: PcmFrame) -> Span | None:
    """Where sound starts and ends in a whole recording (seconds from its start), judged as
    an ear judges reply audio; None if it holds none."""
    ear = Ear(audio.sample_rate)
    ear.receive(audio.pcm, 0.0)
    spans = ear.spans()
    return Span(spans[0].start, spans[-1].end) if spans else None
