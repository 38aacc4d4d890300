"""One turn's transcription, started the moment its audio is known; owned by the session.

A turn's audio goes to the gateway at once, when the turn ends or, with speculation, when
the caller pauses (voice/pipeline/speculation.py). The reply that answers the turn waits
for it, and the caller is told the transcript only once the turn is committed: a
speculative transcript of a turn the caller then went on with is never announced.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from voice.audio.frames import PIPELINE_RATE, PcmFrame
from voice.audio.upsample import Upsampler2x
from voice.audio.wav import wav_bytes
from voice.core.events import Transcript
from voice.core.record import GatewayCall
from voice.gateway.base import Gateway
from voice.pipeline.sink import Emit

NARROWBAND_RATE = 8_000
"""Caller audio at this rate (telephony's) is classified and turned as it arrives, not
doubled to 16 kHz frame by frame: webrtcvad classifies 8 kHz audio itself (it brings 16 kHz
input down to 8 kHz before anything else), so doubling would only be undone. The utterance
is doubled once, when it goes to ASR, which always gets 16 kHz."""


@dataclass
class Transcription:
    """A transcription under way.

    The task that runs it calls :meth:`end` as it finishes, however it finishes, and again
    from a done callback (for a task cancelled before it ran). A reply waits on ``finished``
    rather than on the task: that wakes it one pass of the event loop sooner (a task's done
    callbacks are themselves scheduled), and cancelling the reply leaves the task alone.
    ``task`` is done by the time a waiter wakes: ``end`` runs in the task's last step.
    """

    started: float
    ended: float | None = None
    task: asyncio.Task[str] = field(init=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    call: GatewayCall = field(default_factory=GatewayCall, init=False)
    """Its gateway request, for the record of the reply that answers it."""
    _announce: Emit | None = field(default=None, init=False)

    @classmethod
    def start(cls, gateway: Gateway, audio: PcmFrame) -> Transcription:
        """Send ``audio`` (8 or 16 kHz) to the gateway now."""
        item = cls(started=time.monotonic())
        item.task = asyncio.create_task(item._run(gateway, audio))
        item.task.add_done_callback(item.end)
        return item

    def announce(self, emit: Emit) -> None:
        """Tell the caller the transcript (``input.transcript``) once there is one: the
        turn is committed."""
        if not self.finished.is_set():
            self._announce = emit
        elif not self.task.cancelled() and self.task.exception() is None:
            emit(Transcript(self.task.result()))

    def end(self, *_: object) -> None:
        self.finished.set()

    async def _run(self, gateway: Gateway, audio: PcmFrame) -> str:
        try:
            if audio.sample_rate == NARROWBAND_RATE:
                # One pass over the whole utterance: ~0.1 ms a second of audio.
                audio = PcmFrame(Upsampler2x().process(audio.pcm), PIPELINE_RATE)
            text = (await gateway.transcribe(wav_bytes(audio), call=self.call)).strip()
            self.ended = time.monotonic()
            if self._announce is not None:
                self._announce(Transcript(text))
            return text
        finally:
            self.end()
