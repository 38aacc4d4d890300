"""One turn's transcription, started the moment its audio is known; owned by the session.

A turn's audio goes to the gateway at once, when the turn ends or, with speculation, when
the caller pauses (voice/pipeline/speculation.py). A turn the caller goes on with after a
pause is transcribed in parts: what was said before the pause is kept, and the next part
is only the audio after it, sent with those words as its ``prompt`` (as OpenAI's API takes
a previous segment), so no audio is transcribed twice. The reply that answers the turn
waits for it, and the caller is told the transcript only once the turn is committed.
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
from voice.core.transcripts import joined
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
    """Its own gateway request."""
    before: Transcription | None = None
    """The turn's words before this part's audio (a pause the caller went on after)."""
    _announce: Emit | None = field(default=None, init=False)

    @classmethod
    def start(
        cls, gateway: Gateway, audio: PcmFrame, *, before: Transcription | None = None
    ) -> Transcription:
        """Send ``audio`` (8 or 16 kHz) to the gateway now; if it continues ``before``,
        the text is both joined (and ``before``'s words are its prompt, if known yet)."""
        item = cls(started=time.monotonic(), before=before)
        item.task = asyncio.create_task(item._run(gateway, audio))
        item.task.add_done_callback(item.end)
        return item

    @property
    def calls(self) -> list[GatewayCall]:
        """Every gateway request of the turn's transcript, in order."""
        return [*(self.before.calls if self.before else ()), self.call]

    @property
    def failed(self) -> bool:
        task = self.task
        return task.done() and (task.cancelled() or task.exception() is not None)

    def cancel(self) -> None:
        self.task.cancel()
        if self.before is not None:
            self.before.cancel()

    def announce(self, emit: Emit) -> None:
        """Tell the caller the transcript (``input.transcript``) once there is one: the
        turn is committed."""
        if not self.finished.is_set():
            self._announce = emit
        elif not self.failed:
            emit(Transcript(self.task.result()))

    def end(self, *_: object) -> None:
        self.finished.set()

    async def _run(self, gateway: Gateway, audio: PcmFrame) -> str:
        try:
            if audio.sample_rate == NARROWBAND_RATE:
                # One pass over the whole utterance: ~0.1 ms a second of audio.
                audio = PcmFrame(Upsampler2x().process(audio.pcm), PIPELINE_RATE)
            before = self.before
            prompt = None
            if before is not None and before.finished.is_set() and not before.failed:
                prompt = before.task.result() or None
            wav = wav_bytes(audio)
            text = (await gateway.transcribe(wav, prompt=prompt, call=self.call)).strip()
            if before is not None:
                await before.finished.wait()
                if before.task.cancelled():
                    raise asyncio.CancelledError  # the turn's first words were given up
                text = joined(before.task.result(), text)  # raises what it raised
            self.ended = time.monotonic()
            if self._announce is not None:
                self._announce(Transcript(text))
            return text
        finally:
            self.end()
