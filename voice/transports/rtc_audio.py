"""Audio in and out of aiortc: the reply track the browser hears, and the caller's frames.

:class:`ReplyTrack` is the outbound track. aiortc's sender pulls it: each ``recv()`` waits
until the frame's pts is due on the clock (as aiortc's own ``AudioStreamTrack`` does), then
hands over the next 20 ms of reply audio, or silence when there is none, so RTP never stops
and timestamps stay continuous. Reply audio waits in the track's queue, not in the network,
so ``clear()`` on barge-in drops everything not yet sent at once. It is also the session's
:class:`~voice.pipeline.sink.AudioSink`.

The track encodes Opus itself (:class:`~voice.audio.opus.OpusStream`: mono, 32 kbit/s)
and hands aiortc ``av.Packet`` objects, which its sender only wraps in RTP; a pause costs
a few encodes at its start, then repeats one packet. Given frames instead, aiortc would
encode each in stereo at 96 kbit/s on an executor thread and compute its RFC 6464 level in
Python, silence included: the largest part of the server's CPU. So the reply's RTP packets
carry no audio-level header extension; nothing in a one-to-one call reads it. A peer that
negotiated another codec (G.711, G.722) gets PCM frames for aiortc to encode, as before.

:func:`caller_pcm` turns a decoded inbound frame (Opus decodes to 48 kHz s16 stereo in
aiortc; G.711 to 8 kHz mono) into PCM16 mono at the frame's own rate, which the session
resamples to 16 kHz.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import av
import numpy as np
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voice.audio import opus
from voice.audio.frames import SAMPLE_WIDTH
from voice.pipeline.sink import QueuedSink

RATE = opus.RATE
"""Rate of the reply track: Opus's own, and aiortc's pts clock for Opus."""
FRAME_MS = opus.FRAME_MS
"""Opus's usual frame, and aiortc's ``AUDIO_PTIME``: one RTP packet per ``recv()``."""
SAMPLES = opus.SAMPLES
TIME_BASE = opus.TIME_BASE
SILENCE = opus.ZEROS
RESYNC_S = 0.1
"""When the sender falls this far behind the clock (a stalled event loop), pacing restarts
from now rather than bursting the backlog out faster than real time."""


class FrameOut(Protocol):
    """What ``recv()`` hands aiortc for 20 ms of reply audio, or of silence, at ``pts``."""

    def speech(self, pcm: bytes, pts: int) -> av.Packet[Any] | av.AudioFrame: ...

    def silence(self, pts: int) -> av.Packet[Any] | av.AudioFrame: ...


class PcmFrames:
    """PCM frames for aiortc to encode: for a peer that chose a codec other than Opus."""

    def speech(self, pcm: bytes, pts: int) -> av.AudioFrame:
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(pcm)
        frame.pts = pts
        frame.sample_rate = RATE
        frame.time_base = TIME_BASE
        return frame

    def silence(self, pts: int) -> av.AudioFrame:
        return self.speech(SILENCE, pts)


class ReplyTrack(QueuedSink, MediaStreamTrack):
    """Reply audio for one peer connection: paced by pts, silent when empty, clearable.

    ``played_ms()`` counts the reply frames handed to aiortc's encoder since
    ``start_response()``, 20 ms each, by their pts; silence sent while waiting for TTS does
    not count. It is what left this server, not what the caller's ear got: the frame still
    crosses the network and the browser's jitter buffer (typically 20-80 ms more) before it
    plays. We have no report of the browser's playout position, so the count leads by that
    much, about one short word at most; the dialog's truncation errs on that side.

    ``recv()`` returns Opus packets (see the module doc) unless :meth:`negotiated` says the
    peer chose another codec.
    """

    kind = "audio"

    def __init__(
        self,
        *,
        max_queue_ms: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        MediaStreamTrack.__init__(self)
        QueuedSink.__init__(self, out_rate=RATE, frame_ms=FRAME_MS, max_queue_ms=max_queue_ms)
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._pts = 0
        self._played_frames = 0
        self._out: FrameOut = opus.OpusStream()

    # -- aiortc's side -------------------------------------------------------------------

    async def recv(self) -> av.Packet[Any] | av.AudioFrame:
        """The next 20 ms, once its pts is due: reply audio if queued, else silence.

        An Opus packet, whose pts (1/48000) aiortc's ``OpusEncoder.pack`` takes as the RTP
        timestamp (offset by the sender's random origin): continuous, 960 a packet, as its
        own encoder would count. A PCM frame after :meth:`negotiated` chose another codec.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            self._pts += SAMPLES
            wait = self._start + self._pts / RATE - now
            if wait > 0:
                await self._sleep(wait)
            elif wait < -RESYNC_S:
                self._start = now - self._pts / RATE
            if self.readyState != "live":
                raise MediaStreamError
        pcm = self._next_pcm()
        if pcm is None:
            return self._out.silence(self._pts)
        return self._out.speech(pcm, self._pts)

    def negotiated(self, codec: str) -> None:
        """The codec the answer chose (``opus``, ``pcmu``, ...): Opus is encoded here,
        anything else is left to aiortc. Call it before the connection starts sending."""
        if codec != "opus":
            self._out = PcmFrames()

    def _next_pcm(self) -> bytes | None:
        if not self._queue:
            return None
        pcm = self._pop()
        if not self._queue:
            self._idle.set()
        self._played_frames += 1
        if self.first_sent_at is None:
            self.first_sent_at = self._clock()
        return pcm

    # -- the session's side (AudioSink; QueuedSink queues the audio) -----------------------

    def start_response(self) -> None:
        """A new reply starts: played position and first-send time count from here."""
        super().start_response()
        self._played_frames = 0

    def played_ms(self) -> float:
        """Reply audio handed to the encoder since ``start_response()``."""
        return float(self._played_frames * FRAME_MS)

    @property
    def queued_ms(self) -> float:
        """Reply audio waiting here, not yet sent."""
        return float(len(self._queue) * FRAME_MS)

    def stop(self) -> None:
        """End the track (the peer connection is closing); wakes a waiting writer."""
        self.clear()
        super().stop()


def caller_pcm(frame: av.AudioFrame) -> bytes:
    """A decoded inbound frame as PCM16LE mono at ``frame.sample_rate``.

    Stereo is averaged to mono (a browser's microphone arrives with both channels alike).
    Formats other than packed s16 go through libswresample, keeping the rate.
    """
    channels = len(frame.layout.channels)
    if frame.format.name != "s16" or channels > 2:
        converter = av.AudioResampler(format="s16", layout="mono", rate=frame.sample_rate)
        return b"".join(
            bytes(memoryview(out.planes[0])[: out.samples * SAMPLE_WIDTH])
            for out in converter.resample(frame)
        )
    size = frame.samples * channels * SAMPLE_WIDTH
    pcm = bytes(memoryview(frame.planes[0])[:size])
    if channels == 1:
        return pcm
    pairs = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
    mono: bytes = ((pairs[:, 0] + pairs[:, 1]) >> 1).astype("<i2").tobytes()
    return mono


INBOUND_PREFETCH = 1
"""Packets aiortc's receive jitter buffer holds back after the one it releases."""
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"


def shorten_inbound_buffer(receiver: object) -> bool:
    """Let the caller's audio out of aiortc's jitter buffer one packet behind, not four.

    aiortc releases an inbound audio packet only once four more have arrived (its
    ``JitterBuffer(capacity=16, prefetch=4)``): 80 ms of smoothing for playout. This server
    does not play the caller's audio; its VAD needs frames in order, not evenly spaced, so
    the wait only delays every end of turn and every barge-in. With one packet of prefetch,
    reordering within the buffer's 16 packets still works. aiortc has no setting for this:
    the buffer is replaced before any packet arrives (``on("track")`` fires while the
    remote description is applied). Returns False, changing nothing, if aiortc has moved it;
    ``tests/test_rtc_audio.py`` fails then.
    """
    current = getattr(receiver, _JITTER_BUFFER, None)
    if not isinstance(current, JitterBuffer):
        return False
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(current.capacity, prefetch=INBOUND_PREFETCH))
    return True
