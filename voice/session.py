"""A session binds one caller's audio to the pipeline: VAD, turns, replies and barge-in.

Transports own the socket; they feed caller audio in with ``feed()``, give the session an
:class:`~voice.transports.base.AudioSink` for reply audio and an ``emit`` callback for events,
and call ``aclose()`` when the caller goes away. The session owns at most one reply task at a
time and always cancels and awaits it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import MutableMapping
from typing import Any

from voice.audio.frames import PIPELINE_RATE, Reframer
from voice.audio.resample import Resampler
from voice.config import Settings
from voice.core.dialog import Dialog
from voice.core.events import (
    ErrorEvent,
    ResponseDone,
    ResponseInterrupted,
    ResponseStatus,
    SpeechDiscarded,
    SpeechStarted,
    SpeechStopped,
    TurnEvent,
)
from voice.core.turns import TurnDetector
from voice.errors import GatewayError
from voice.gateway.base import Gateway
from voice.pipeline import Reply
from voice.transports.base import AudioSink, Emit
from voice.vad import SpeechClassifier, WebRtcVad

logger = logging.getLogger(__name__)


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the session id, as websockets does per connection."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['session'] if self.extra else '-'}] {msg}", kwargs


class Session:
    def __init__(
        self,
        *,
        session_id: str,
        settings: Settings,
        gateway: Gateway,
        sink: AudioSink,
        emit: Emit,
        vad: SpeechClassifier | None = None,
    ) -> None:
        self.id = session_id
        self.settings = settings
        self.log = SessionLogger(logger, {"session": session_id})
        self.dialog = Dialog(
            instructions=settings.pipeline.instructions,
            max_messages=settings.pipeline.max_history_messages,
        )
        self.voice: str | None = settings.gateway.tts_voice
        self.input_rate = PIPELINE_RATE
        self._gateway = gateway
        self._sink = sink
        self._emit = emit
        self._vad = vad or WebRtcVad(settings.turn.vad_aggressiveness)
        turn = settings.turn
        self._turns = TurnDetector(
            start_ms=turn.start_ms,
            hangover_ms=turn.hangover_ms,
            preroll_ms=turn.preroll_ms,
            min_speech_ms=turn.min_speech_ms,
            max_turn_s=turn.max_turn_s,
        )
        self._reframer = Reframer(PIPELINE_RATE)
        self._resampler: Resampler | None = None
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._response_ids = itertools.count(1)

    def set_input_rate(self, rate: int) -> None:
        """Caller audio arrives at ``rate`` from now on."""
        self.input_rate = rate
        self._resampler = None if rate == PIPELINE_RATE else Resampler(rate, PIPELINE_RATE)

    @property
    def responding(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()

    async def feed(self, pcm: bytes) -> None:
        """Caller audio: PCM16 mono at ``input_rate``, any length (even)."""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        for frame in self._reframer.push(pcm):
            speech = self._vad.is_speech(frame.pcm, PIPELINE_RATE)
            for event in self._turns.feed(frame.pcm, speech):
                await self._on_turn_event(event)

    async def interrupt(self) -> None:
        """Stop the reply now: drop queued audio, cancel requests, keep only what was heard."""
        reply, task = self._reply, self._reply_task
        if reply is None or task is None or task.done():
            return
        heard = reply.heard_text() if reply.started else ""
        self._sink.clear()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if reply.started:
            self.dialog.add_assistant(heard)
            self.log.info("interrupted; caller heard %d of %d chars", len(heard), len(reply.text))
            self._emit(ResponseInterrupted(reply.response_id, heard))
            self._emit(ResponseDone(reply.response_id, heard, "interrupted", reply.timings()))

    async def aclose(self) -> None:
        """The caller is gone: cancel the reply and every request it has in flight."""
        task = self._reply_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _on_turn_event(self, event: TurnEvent) -> None:
        match event:
            case SpeechStarted():
                self._emit(event)
                await self.interrupt()
            case SpeechStopped():
                self._emit(event)
                await self.interrupt()
                self.respond(event)
            case SpeechDiscarded():
                self._emit(event)

    def respond(self, turn: SpeechStopped) -> None:
        """Answer ``turn`` (normally called when the turn detector ends one)."""
        reply = Reply(
            response_id=f"resp_{next(self._response_ids)}",
            turn=turn,
            gateway=self._gateway,
            dialog=self.dialog,
            sink=self._sink,
            emit=self._emit,
            settings=self.settings.pipeline,
            voice=self.voice,
            log=self.log,
        )
        self._reply = reply
        self._reply_task = asyncio.create_task(self._run_reply(reply))

    async def _run_reply(self, reply: Reply) -> None:
        status: ResponseStatus = "completed"
        try:
            await reply.run()
        except* GatewayError as group:
            error = group.exceptions[0]
            assert isinstance(error, GatewayError)
            self.log.warning("reply failed: %r", error)
            self._emit(ErrorEvent(error.code, error.message))
            status = "failed"
        except* Exception:
            self.log.exception("reply failed")
            self._emit(ErrorEvent("internal_error", "the reply failed; the server log says why"))
            status = "failed"
        if not reply.started:
            return
        text = reply.text
        if status == "failed":
            text = reply.heard_text()
            self._sink.clear()
            self.dialog.add_assistant(text)
        self._emit(ResponseDone(reply.response_id, text, status, reply.timings()))
