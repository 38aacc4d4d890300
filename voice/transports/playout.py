"""Paced, clearable reply audio for transports that push frames to the caller.

Reply audio arrives from TTS in bursts, faster than real time. Sending it all at once would
leave seconds of audio in the caller's buffer that a barge-in cannot recall. So playout keeps
at most ``lead_ms`` ahead of the caller's playhead (enough to ride out network jitter), and
everything behind that stays here, where ``clear()`` drops it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from voice.audio.frames import PcmFrame, Reframer
from voice.audio.resample import Resampler
from voice.core.playhead import Playhead

PACE_MS = 40
"""Top the caller's buffer up in batches of this much audio, to wake less often."""


class PacedPlayout:
    """Resamples reply audio to ``out_rate``, frames it, and sends it at real-time pace.

    ``send`` receives each encoded frame (``encode`` turns PCM16 into the wire format;
    identity by default). ``run()`` is the pacing loop: the transport owns that task.
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
        self.out_rate = out_rate
        self._send = send
        self._lead_ms = lead_ms
        self._frame_ms = frame_ms
        self._max_frames = max(1, max_queue_ms // frame_ms)
        self._encode = encode
        self._clock = clock
        self._queue: deque[bytes] = deque()
        self._has_data = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._playhead = Playhead()
        self._accepting = True
        self._reframer = Reframer(out_rate, frame_ms)
        self._resamplers: dict[int, Resampler] = {}
        self.first_sent_at: float | None = None
        """Clock time the current response's first frame left; None until it has."""

    async def write(self, frame: PcmFrame) -> None:
        """Queue reply audio (any rate); waits while the queue is full.

        After ``clear()`` writes are dropped until the next ``start_response()``: a reply
        being cancelled may still hand over a frame or two before its tasks see the cancel.
        """
        if not self._accepting:
            return
        pcm = self._resample(frame)
        for out in self._reframer.push(pcm):
            while len(self._queue) >= self._max_frames:
                self._has_space.clear()
                await self._has_space.wait()
            if not self._accepting:
                return
            self._queue.append(out.pcm)
            self._idle.clear()
            self._has_data.set()

    async def finish(self) -> None:
        """End of the response's audio: send the last partial frame, wait until all is sent."""
        if not self._accepting:
            return
        for resampler in self._resamplers.values():
            tail = resampler.flush()
            if tail:
                for out in self._reframer.push(tail):
                    self._queue.append(out.pcm)
        self._resamplers.clear()
        last = self._reframer.flush()
        if last is not None:
            self._queue.append(last.pcm)
        if self._queue:
            self._idle.clear()
            self._has_data.set()
        await self._idle.wait()

    async def wait_played(self) -> None:
        """Wait until the caller has played everything sent so far."""
        await self._idle.wait()
        ahead = self._playhead.buffered_ms(self._clock())
        if ahead > 0:
            await asyncio.sleep(ahead / 1000.0)

    def clear(self) -> None:
        """Drop queued audio now; the caller is told to drop what it holds (barge-in)."""
        self._accepting = False
        self._queue.clear()
        self._resamplers.clear()
        self._reframer = Reframer(self.out_rate, self._frame_ms)
        self._playhead.clear(self._clock())
        self._has_space.set()
        self._idle.set()

    def start_response(self) -> None:
        """A new reply starts: played position and first-send time count from here."""
        self._playhead.reset()
        self._accepting = True
        self.first_sent_at = None

    def played_ms(self) -> float:
        """Reply audio the caller has heard since ``start_response()``."""
        return self._playhead.played_ms(self._clock())

    async def run(self) -> None:
        """The pacing loop; runs until cancelled."""
        while True:
            await self._has_data.wait()
            while self._queue:
                over = self._playhead.buffered_ms(self._clock()) + self._frame_ms - self._lead_ms
                if over > 0:
                    await asyncio.sleep((over + PACE_MS) / 1000.0)
                    continue
                chunk = self._queue.popleft()
                self._has_space.set()
                await self._send(self._encode(chunk) if self._encode else chunk)
                # Counted once it has left: a frame still queued here can be cleared.
                now = self._clock()
                self._playhead.sent(self._frame_ms, now)
                if self.first_sent_at is None:
                    self.first_sent_at = now
            self._has_data.clear()
            self._idle.set()

    def _resample(self, frame: PcmFrame) -> bytes:
        if frame.sample_rate == self.out_rate:
            return frame.pcm
        resampler = self._resamplers.get(frame.sample_rate)
        if resampler is None:
            resampler = self._resamplers[frame.sample_rate] = Resampler(
                frame.sample_rate, self.out_rate
            )
        return resampler.process(frame.pcm)
