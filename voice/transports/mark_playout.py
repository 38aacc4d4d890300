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
from collections.abc import Awaitable, Callable
from typing import Protocol

from voice.audio.frames import PcmFrame
from voice.core.marks import MarkLedger
from voice.pipeline.sink import QueuedSink
from voice.transports.codecs import Codec

logger = logging.getLogger(__name__)

MARK_GRACE_S = 2.0
"""How late a mark's echo may be, past its audio's play-out, before we stop waiting for it."""


class CarrierMessages(Protocol):
    """The three messages a carrier takes from us, as JSON text, bound to one stream."""

    def media(self, payload: bytes) -> str: ...

    def mark(self, name: str) -> str: ...

    def clear(self) -> str: ...


class MarkedPlayout(QueuedSink):
    """An :class:`~voice.pipeline.sink.AudioSink` whose played position comes from marks.

    ``write`` resamples reply audio to the codec's rate, cuts it into ``chunk_ms`` chunks
    (a shorter one rather than hold audio back from a far end that has nothing to play),
    encodes them and sends each with a mark after it while less than ``lead_ms`` is
    unacknowledged; ``on_mark`` takes the carrier's echoes and sends what they make room for.
    Sending from those calls, not from a task woken for it, saves a pass of the event loop
    per chunk (under load, the largest part of the pipeline's own latency). ``run()`` (a task
    the transport owns) sends a ``clear`` and looks again when a mark is overdue. The queue
    holds encoded chunks (:class:`~voice.pipeline.sink.QueuedSink` does the rest).
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
        super().__init__(out_rate=codec.rate, frame_ms=chunk_ms, max_queue_ms=max_queue_ms)
        self.codec = codec
        self._messages = messages
        self._send = send
        self._lead_ms = lead_ms
        self._chunk_bytes = codec.bytes_for(chunk_ms)
        self._clock = clock
        self._ledger = MarkLedger(grace_s=grace_s)
        self._clear_due = False
        self._played_all = asyncio.Event()
        self._played_all.set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sending = asyncio.Lock()
        self._warned = False

    # -- AudioSink -------------------------------------------------------------------------

    async def write(self, frame: PcmFrame) -> None:
        """Queue reply audio (any rate) and send what the lead allows; waits while
        ``max_queue_ms`` is queued. After ``clear()`` writes are dropped until the next
        ``start_response()``."""
        if self._accepting:
            await super().write(frame)
            await self._pump()

    async def finish(self) -> None:
        """End of the response's audio: queue the tail, wait until all of it is sent."""
        if not self._accepting:
            return
        # Carriers play chunks of any length, so the last one goes out short, unpadded.
        self._extend(self._chunks(self._reframer.take(self._tails(), partial=True)))
        self._reframer.clear()
        await self._pump()
        await self._idle.wait()

    async def wait_played(self) -> None:
        """Wait until the far end has played (echoed) everything sent, or it was cleared."""
        await self._idle.wait()
        await self._played_all.wait()

    def clear(self) -> None:
        """Barge-in: drop queued audio here and tell the far end to drop what it holds."""
        super().clear()
        self._ledger.clear()
        self._clear_due = True
        self._wake.set()
        self._played_all.set()

    def start_response(self) -> None:
        """A new reply starts: played position and first-send time count from here."""
        super().start_response()
        self._ledger.start_response()

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
        if self._reframer.pending and self._accepting and self._dry():
            # The far end has played everything: a part chunk waiting for more goes now.
            self._extend(self._chunks(self._reframer.take(partial=True)))
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
            ms = self.codec.duration_ms(len(self._queue[0]))
            outstanding = ledger.outstanding_ms
            if outstanding and outstanding + ms > self._lead_ms:
                break  # until an echo frees some lead
            chunk = self._pop()
            now = self._clock()
            name = ledger.sent(ms, now)
            self._played_all.clear()
            if self.first_sent_at is None:
                self.first_sent_at = now
            await self._send(self._messages.media(chunk))
            await self._send(self._messages.mark(name))
        if not self._queue:
            self._idle.set()
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

    def _frames(self, pcm: bytes) -> list[bytes]:
        """Whole chunks of what is held, or, when that is less than a chunk and the far end
        has nothing left to play, all of it. Waiting to fill a chunk then only keeps the
        caller in silence: a reply's first resampled audio is a little short of a chunk
        (the resampler's delay), and the rest comes with the next piece of speech, 12 ms
        later at 5x real time, a whole chunk later at 1x."""
        ready = self._reframer.take(pcm)
        if not ready and self._dry():
            ready = self._reframer.take(partial=True)
        return self._chunks(ready)

    def _chunks(self, pcm: bytes) -> list[bytes]:
        if not pcm:
            return []
        # One encode for the whole batch, then cut: a call per chunk costs more than the work.
        encoded = self.codec.encode(pcm)
        step = self._chunk_bytes
        return [encoded[start : start + step] for start in range(0, len(encoded), step)]

    def _dry(self) -> bool:
        """Nothing queued here, and the far end has played (or dropped) all we sent."""
        return not self._queue and self._ledger.outstanding_ms <= 0

    def _settle(self) -> None:
        if self._ledger.outstanding_ms <= 0 and not self._queue:
            self._played_all.set()
