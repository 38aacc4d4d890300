"""Reply audio towards a carrier that echoes marks: paced by what the far end has played.

The carrier (Twilio, Telnyx) buffers what we send and plays it in order. After every chunk
we send a ``mark``; the carrier echoes it when the chunk has played. So the far end never
holds more than ``lead_ms`` we have not heard back about, the played position is exact to a
chunk (:class:`~voice.core.marks.MarkLedger`), and a barge-in sends ``clear``, which drops
that lead at the far end while everything behind it is dropped here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from voice.audio.frames import SAMPLE_WIDTH, PcmFrame
from voice.audio.resample import Resampler
from voice.core.marks import MarkLedger
from voice.transports.codecs import Codec

logger = logging.getLogger(__name__)

MARK_GRACE_S = 2.0
"""How late a mark's echo may be, past its audio's play-out, before we stop waiting for it."""


class CarrierMessages(Protocol):
    """The three messages a carrier takes from us, as JSON text, bound to one stream."""

    def media(self, payload: bytes) -> str: ...

    def mark(self, name: str) -> str: ...

    def clear(self) -> str: ...


class MarkedPlayout:
    """An :class:`~voice.pipeline.sink.AudioSink` whose played position comes from marks.

    ``write`` resamples reply audio to the codec's rate, cuts it into ``chunk_ms`` chunks
    (a shorter one rather than hold audio back from a far end that has nothing to play),
    encodes them and sends each with a mark after it while less than ``lead_ms`` is
    unacknowledged; ``on_mark`` takes the carrier's echoes and sends what they make room for.
    Sending from those calls, not from a task woken for it, saves a pass of the event loop
    per chunk (under load, the largest part of the pipeline's own latency). ``run()`` (a task
    the transport owns) sends a ``clear`` and looks again when a mark is overdue.
    """

    def __init__(
        self,
        *,
        codec: Codec,
        messages: CarrierMessages,
        send: Callable[[str], Awaitable[None]],
        lead_ms: int,
        chunk_ms: int = 20,
        max_queue_ms: int = 10_000,
        grace_s: float = MARK_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.codec = codec
        self._messages = messages
        self._send = send
        self._lead_ms = lead_ms
        self._chunk_ms = chunk_ms
        self._chunk_pcm = codec.rate * chunk_ms // 1000 * SAMPLE_WIDTH
        self._max_chunks = max(1, max_queue_ms // chunk_ms)
        self._clock = clock
        self._ledger = MarkLedger(grace_s=grace_s)
        self._queue: deque[tuple[str, float]] = deque()
        """Media messages ready to send, with their audio's duration in ms."""
        self._pcm = bytearray()
        """Resampled audio short of a whole chunk, waiting for more."""
        self._resamplers: dict[int, Resampler] = {}
        self._accepting = True
        self._clear_due = False
        self._wake = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()
        self._sent_all = asyncio.Event()
        self._sent_all.set()
        self._played_all = asyncio.Event()
        self._played_all.set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sending = asyncio.Lock()
        self._warned = False
        self.first_sent_at: float | None = None
        """Clock time the current response's first chunk left; None until it has."""

    # -- AudioSink -------------------------------------------------------------------------

    async def write(self, frame: PcmFrame) -> None:
        """Queue reply audio (any rate); waits while ``max_queue_ms`` is queued.

        After ``clear()`` writes are dropped until the next ``start_response()``.
        """
        if not self._accepting:
            return
        self._pcm += self._resample(frame)
        await self._enqueue(self._ready())
        await self._pump()

    async def finish(self) -> None:
        """End of the response's audio: queue the tail, wait until all of it is sent."""
        if not self._accepting:
            return
        for resampler in self._resamplers.values():
            self._pcm += resampler.flush()
        self._resamplers.clear()
        # Carriers play chunks of any length, so the last one goes out short, unpadded.
        await self._enqueue(len(self._pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH)
        self._pcm.clear()
        await self._pump()
        await self._sent_all.wait()

    async def wait_played(self) -> None:
        """Wait until the far end has played (echoed) everything sent, or it was cleared."""
        await self._sent_all.wait()
        await self._played_all.wait()

    def clear(self) -> None:
        """Barge-in: drop queued audio here and tell the far end to drop what it holds."""
        self._accepting = False
        self._queue.clear()
        self._pcm.clear()
        self._resamplers.clear()
        self._ledger.clear()
        self._clear_due = True
        self._wake.set()
        self._has_space.set()
        self._sent_all.set()
        self._played_all.set()

    def start_response(self) -> None:
        """A new reply starts: played position and first-send time count from here."""
        self._ledger.start_response()
        self._accepting = True
        self.first_sent_at = None

    def played_ms(self) -> float:
        """The current reply's audio the far end has played: up to its last echoed mark."""
        return self._ledger.played_ms

    # -- carrier side ----------------------------------------------------------------------

    async def on_mark(self, name: str) -> bool:
        """The carrier echoed mark ``name``; False if it is not one of ours. The lead it
        frees is used at once: the next chunk leaves from here."""
        if not self._ledger.echoed(name):
            return False
        self._settle()
        if self._pcm and self._accepting and self._dry():
            # The far end has played everything: a part chunk waiting for more goes now.
            await self._enqueue(len(self._pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH)
        await self._pump()
        return True

    async def run(self) -> None:
        """Sends what waits on a ``clear`` (called from sync code) or an overdue mark; runs
        until cancelled. Audio otherwise leaves from ``write`` and ``on_mark`` directly."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                async with self._sending:
                    await self._send_due()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _pump(self) -> None:
        """Send what is due now, from the calling task; one task sends at a time, so a
        mark always follows its own chunk. Whoever holds the lock sends for both."""
        if self._sending.locked():
            self._wake.set()  # it may have finished looking: the pacer looks again
            return
        async with self._sending:
            await self._send_due()

    async def _send_due(self) -> None:
        if self._clear_due:
            self._clear_due = False
            await self._send(self._messages.clear())
        await self._send_within_lead()

    async def _send_within_lead(self) -> None:
        ledger = self._ledger
        if ledger.expire(self._clock()):
            self._warn_expired()
            self._settle()
        while self._queue and not self._clear_due:
            message, ms = self._queue[0]
            outstanding = ledger.outstanding_ms
            if outstanding and outstanding + ms > self._lead_ms:
                break  # until an echo frees some lead
            self._queue.popleft()
            self._has_space.set()
            now = self._clock()
            name = ledger.sent(ms, now)
            self._played_all.clear()
            if self.first_sent_at is None:
                self.first_sent_at = now
            await self._send(message)
            await self._send(self._messages.mark(name))
        if not self._queue:
            self._sent_all.set()
        self._arm(ledger.next_deadline())

    def _arm(self, deadline: float | None) -> None:
        """Should no echo come, look again when the oldest mark becomes overdue.

        A timer already set for no later than that stays: the deadline moves on with every
        echo, and cancelling and setting one per chunk cost more than the one early look
        (which finds nothing overdue and sets the timer again) an outdated timer costs.
        """
        now = self._clock()
        if deadline is None or (self._timer is not None and now < self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_later(deadline - now, self._wake.set)

    def _warn_expired(self) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "the carrier does not echo marks; is the stream bidirectional "
                "(<Connect><Stream>)? Played audio cannot be tracked"
            )

    def _ready(self) -> int:
        """Bytes of ``_pcm`` to send now: whole chunks, or, when there is less than a chunk
        and the far end has nothing left to play, all of it. Waiting to fill a chunk then
        only keeps the caller in silence: a reply's first resampled audio is a little short
        of a chunk (the resampler's delay), and the rest comes with the next piece of speech,
        12 ms later at 5x real time, a whole chunk later at 1x."""
        whole = len(self._pcm) // self._chunk_pcm * self._chunk_pcm
        if whole or not self._dry():
            return whole
        return len(self._pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH

    def _dry(self) -> bool:
        """Nothing queued here, and the far end has played (or dropped) all we sent."""
        return not self._queue and self._ledger.outstanding_ms <= 0

    def _settle(self) -> None:
        if self._ledger.outstanding_ms <= 0 and not self._queue:
            self._played_all.set()

    async def _enqueue(self, size: int) -> None:
        if size <= 0:
            return
        pcm = bytes(self._pcm[:size])
        del self._pcm[:size]
        # One encode for the whole batch, then cut: a call per chunk costs more than the work.
        encoded = self.codec.encode(pcm)
        step = self._chunk_pcm // SAMPLE_WIDTH * self.codec.sample_bytes
        for start in range(0, len(encoded), step):
            while len(self._queue) >= self._max_chunks:
                self._has_space.clear()
                await self._has_space.wait()
            if not self._accepting:
                return
            chunk = encoded[start : start + step]
            self._queue.append((self._messages.media(chunk), self.codec.duration_ms(len(chunk))))
            self._sent_all.clear()
            self._played_all.clear()
            self._wake.set()

    def _resample(self, frame: PcmFrame) -> bytes:
        if frame.sample_rate == self.codec.rate:
            return frame.pcm
        resampler = self._resamplers.get(frame.sample_rate)
        if resampler is None:
            resampler = self._resamplers[frame.sample_rate] = Resampler(
                frame.sample_rate, self.codec.rate
            )
        return resampler.process(frame.pcm)
