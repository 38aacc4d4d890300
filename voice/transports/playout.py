"""Paced, clearable reply audio for transports that push frames to the caller.

Reply audio arrives from TTS in bursts, faster than real time. Sending it all at once would
leave seconds of audio in the caller's buffer that a barge-in cannot recall. So playout keeps
at most ``lead_ms`` ahead of the caller's playhead (enough to ride out network jitter), and
everything behind that stays here, where ``clear()`` drops it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from voice.core.playhead import Playhead
from voice.pipeline.sink import QueuedSink

PACE_MS = 40
"""Top the caller's buffer up in batches of this much audio, to wake less often."""


class PacedPlayout(QueuedSink):
    """Resamples reply audio to ``out_rate``, frames it, and sends it at real-time pace.

    ``send`` receives each encoded frame (``encode`` turns PCM16 into the wire format;
    identity by default). ``run()`` is the pacing loop: the transport owns that task.
    The played position is a model of the caller's playhead (:class:`Playhead`).
    """

    def __init__(
        self,
        *,
        out_rate: int,
        send: Callable[[bytes], Awaitable[None]],
        lead_ms: int = 200,
        max_queue_ms: int = 10_000,
        frame_ms: int = 20,
        encode: Callable[[bytes], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(out_rate=out_rate, frame_ms=frame_ms, max_queue_ms=max_queue_ms)
        self._send = send
        self._lead_ms = lead_ms
        self._encode = encode
        self._clock = clock
        self._playhead = Playhead()

    async def wait_played(self) -> None:
        """Wait until the caller has played everything sent so far."""
        await self._idle.wait()
        ahead = self._playhead.buffered_ms(self._clock())
        if ahead > 0:
            await asyncio.sleep(ahead / 1000.0)

    def clear(self) -> None:
        """Drop queued audio now; the caller is told to drop what it holds (barge-in)."""
        super().clear()
        self._playhead.clear(self._clock())

    def start_response(self) -> None:
        """A new reply starts: played position and first-send time count from here."""
        super().start_response()
        self._playhead.reset()

    def played_ms(self) -> float:
        """Reply audio the caller has heard since ``start_response()``."""
        return self._playhead.played_ms(self._clock())

    async def run(self) -> None:
        """The pacing loop; runs until cancelled."""
        while True:
            await self._wake.wait()
            while self._queue:
                over = self._playhead.buffered_ms(self._clock()) + self._frame_ms - self._lead_ms
                if over > 0:
                    await asyncio.sleep((over + PACE_MS) / 1000.0)
                    continue
                chunk = self._pop()
                await self._send(self._encode(chunk) if self._encode else chunk)
                # Counted once it has left: a frame still queued here can be cleared.
                now = self._clock()
                self._playhead.sent(self._frame_ms, now)
                if self.first_sent_at is None:
                    self.first_sent_at = now
            self._wake.clear()
            self._idle.set()
