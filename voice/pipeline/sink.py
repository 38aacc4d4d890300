"""What the pipeline writes to: a transport's sink for reply audio, and its events out.

:class:`AudioSink` is the interface; :class:`QueuedSink` is the mechanism the transports'
sinks share (resample, frame, bounded clearable queue), each subclass saying only how a
frame leaves and what has been played.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from voice.audio.frames import PcmFrame, Reframer
from voice.audio.resample import Resampler
from voice.core.events import SessionEvent

Emit = Callable[[SessionEvent], None]
"""Hands one event to the transport; never blocks (transports queue, bounded)."""


def no_events(event: SessionEvent) -> None:
    """An :data:`Emit` for a wire with no message for session events (carriers)."""


Hangup = Callable[[str], None]
"""Asks the transport to end the call, for the reason given (``idle``, ...), after the
events already emitted have gone out; never blocks."""


class AudioSink(Protocol):
    """Reply audio towards the caller: paced, clearable, and aware of what was played.

    ``played_ms`` is the transport's best knowledge of the reply audio the caller has
    heard since ``start_response()``: a playhead model for pushed PCM, echoed marks for
    Twilio, RTP timestamps for WebRTC.
    """

    first_sent_at: float | None

    async def write(self, frame: PcmFrame) -> None: ...

    async def finish(self) -> None: ...

    async def wait_played(self) -> None: ...

    def clear(self) -> None: ...

    def start_response(self) -> None: ...

    def played_ms(self) -> float: ...


class NullSink:
    """Reply audio with nowhere to go: a session's sink until its transport attaches one."""

    first_sent_at: float | None = None

    async def write(self, frame: PcmFrame) -> None:
        pass

    async def finish(self) -> None:
        pass

    async def wait_played(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def start_response(self) -> None:
        pass

    def played_ms(self) -> float:
        return 0.0


class QueuedSink(abc.ABC):
    """Reply audio readied for a transport: resampled, framed, queued with a bound, clearable.

    ``write`` resamples reply audio of any rate to ``out_rate`` (one :class:`Resampler` per
    input rate, so each stream keeps its filter state), cuts it into ``frame_ms`` frames
    and queues them, waiting while ``max_queue_ms`` is queued. ``finish`` adds the
    resamplers' held-back tails and the last frame, padded, then waits until all has left.
    ``clear()`` (barge-in) drops the queue and refuses writes until ``start_response()``: a
    reply being cancelled may still hand over a frame or two before its tasks see the cancel.

    A subclass says how a frame leaves and what has been played: its sender takes frames
    with :meth:`_pop`, sets ``first_sent_at``, and sets ``_idle`` once the queue is empty
    and the last frame has left. ``_wake`` is set whenever a frame is queued, for a sending
    task to wait on. A transport whose chunks are not fixed frames overrides
    :meth:`_frames` (and ``finish``).
    """

    def __init__(self, *, out_rate: int, frame_ms: int, max_queue_ms: int) -> None:
        self.out_rate = out_rate
        """Rate of the audio queued. To change it, set it and then ``clear()``."""
        self._frame_ms = frame_ms
        self._max_frames = max(1, max_queue_ms // frame_ms)
        self._queue: deque[bytes] = deque()
        self._reframer = Reframer(out_rate, frame_ms)
        self._resamplers: dict[int, Resampler] = {}
        self._accepting = True
        self._wake = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.first_sent_at: float | None = None
        """Clock time the current response's first frame left; None until it has."""

    async def write(self, frame: PcmFrame) -> None:
        """Queue reply audio (any rate); waits while the queue is full.

        After ``clear()`` writes are dropped until the next ``start_response()``.
        """
        if not self._accepting:
            return
        for pcm in self._frames(self._resample(frame)):
            while len(self._queue) >= self._max_frames:
                self._has_space.clear()
                await self._has_space.wait()
            if not self._accepting:
                return
            self._queue.append(pcm)
            self._idle.clear()
            self._wake.set()

    async def finish(self) -> None:
        """End of the response's audio: queue the last partial frame, padded, and wait
        until all is sent."""
        if not self._accepting:
            return
        frames = self._reframer.cut(self._tails())
        last = self._reframer.flush()
        if last is not None:
            frames.append(last.pcm)
        self._extend(frames)
        await self._idle.wait()

    async def wait_played(self) -> None:
        """Wait until everything queued has left (subclasses wait for the far end too)."""
        await self._idle.wait()

    def clear(self) -> None:
        """Drop queued audio now and refuse writes until ``start_response()``."""
        self._accepting = False
        self._queue.clear()
        self._resamplers.clear()
        self._reframer = Reframer(self.out_rate, self._frame_ms)
        self._has_space.set()
        self._idle.set()

    def start_response(self) -> None:
        """A new reply starts: writes are taken again, first-send time counts from here."""
        self._accepting = True
        self.first_sent_at = None

    @abc.abstractmethod
    def played_ms(self) -> float:
        """Reply audio the caller has heard since ``start_response()``."""

    def _frames(self, pcm: bytes) -> list[bytes]:
        """What to queue of ``pcm`` (at ``out_rate``): the whole frames it completes."""
        return self._reframer.cut(pcm)

    def _extend(self, frames: list[bytes]) -> None:
        """Queue ``frames`` past the bound: a response's last frame or two."""
        if frames:
            self._queue.extend(frames)
            self._idle.clear()
            self._wake.set()

    def _pop(self) -> bytes:
        """The oldest queued frame, which is leaving; a waiting writer may add one."""
        frame = self._queue.popleft()
        self._has_space.set()
        return frame

    def _resample(self, frame: PcmFrame) -> bytes:
        if frame.sample_rate == self.out_rate:
            return frame.pcm
        resampler = self._resamplers.get(frame.sample_rate)
        if resampler is None:
            resampler = self._resamplers[frame.sample_rate] = Resampler(
                frame.sample_rate, self.out_rate
            )
        return resampler.process(frame.pcm)

    def _tails(self) -> bytes:
        """The audio the resamplers hold back (their filters' look-ahead); ends their streams."""
        tail = b"".join(resampler.flush() for resampler in self._resamplers.values())
        self._resamplers.clear()
        return tail
