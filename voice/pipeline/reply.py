"""One reply: transcript → chat stream → sentences → speech → playout, in one TaskGroup.

Speech for a sentence is requested as soon as the chunker releases it, while the LLM goes on
writing; up to ``tts_lookahead`` later sentences are fetched while an earlier one plays, and
audio is played strictly in sentence order. Cancelling the reply's task cancels every
request in flight (the gateway closes its HTTP streams) and nothing is left behind. Every
gateway request it makes, and the transcriptions it answers, are noted in its ``record``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from voice.config import PipelineSettings
from voice.core.chunker import SentenceChunker
from voice.core.dialog import Dialog
from voice.core.events import AudioDone, ResponseStarted, TextDelta, TurnTimings
from voice.core.playout import HeardText
from voice.core.record import SpeculationTally, TurnRecord
from voice.gateway.base import Gateway, Voice, closing
from voice.pipeline.sink import AudioSink, Emit
from voice.pipeline.speculation import Speculation
from voice.pipeline.speech_line import SpeechJob, SpeechLine
from voice.pipeline.transcription import Transcription

SPEECH_QUEUE_CHUNKS = 64
"""TTS chunks buffered per sentence before its request is made to wait."""


@dataclass
class TurnClock:
    """Monotonic instants of one turn, turned into ``TurnTimings`` at the end."""

    vad_ms: float
    declared: float = field(default_factory=time.monotonic)
    asr_start: float | None = None
    asr_end: float | None = None
    chat_start: float | None = None
    first_token: float | None = None
    first_sentence: float | None = None
    tts_start: float | None = None
    tts_first_byte: float | None = None
    first_audio: float | None = None

    def timings(self) -> TurnTimings:
        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000.0, 2)

        first_audio = span(self.declared, self.first_audio)
        return TurnTimings(
            vad_ms=self.vad_ms,
            asr_ms=span(self.asr_start, self.asr_end),
            llm_ttft_ms=span(self.chat_start, self.first_token),
            first_sentence_ms=span(self.chat_start, self.first_sentence),
            tts_ttfb_ms=span(self.tts_start, self.tts_first_byte),
            first_audio_ms=None if first_audio is None else round(first_audio + self.vad_ms, 2),
        )


class Reply:
    """The response to the caller's unanswered turns. ``run()`` is awaited by its owner's task.

    ``heard_text()`` tells, at any moment, what the caller has heard of it: the owner calls it
    when the caller barges in, before cancelling the task. ``interrupted`` is set by the
    owner when it cancels the reply on purpose, with the text the dialog keeps.
    """

    def __init__(
        self,
        *,
        response_id: str,
        transcriptions: list[Transcription],
        vad_ms: float,
        declared: float,
        on_commit: Callable[[], None],
        gateway: Gateway,
        dialog: Dialog,
        sink: AudioSink,
        emit: Emit,
        settings: PipelineSettings,
        voice: Voice,
        speculation: Speculation | None = None,
        tally: SpeculationTally | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.response_id = response_id
        self.clock = TurnClock(vad_ms=vad_ms, declared=declared)
        self.started = False
        """True once there was something to answer and a response began."""
        self.text = ""
        """Everything the LLM wrote for this reply so far."""
        self.interrupted: str | None = None
        """Set by the owner that cancels the reply: the text the caller heard."""
        self.record = TurnRecord()
        """The gateway requests made for this reply, as they go."""
        self.tally = tally if tally is not None else SpeculationTally()
        """What speculating on the turns it answers cost; complete once ``run`` returns."""
        self._speculation = speculation
        self._transcriptions = transcriptions
        self._on_commit = on_commit
        self._gateway = gateway
        self._dialog = dialog
        self._sink = sink
        self._emit = emit
        self._settings = settings
        self._voice = voice
        self._now = clock
        self._heard = HeardText()

    def heard_text(self) -> str:
        return self._heard.heard(self._sink.played_ms()) if self.started else ""

    def timings(self) -> TurnTimings:
        """The turn's latency so far; first audio is when the sink sent the first frame."""
        if self.started:
            self.clock.first_audio = self._sink.first_sent_at
        return self.clock.timings()

    async def run(self) -> None:
        """Answer the open turns and play the reply. Gateway errors propagate to the owner."""
        try:
            await self._run()
        finally:
            if (speculation := self._speculation) is not None:
                await speculation.cancel()  # what it started and the reply did not finish
                speculation.tally(self.tally)

    async def _run(self) -> None:
        user_text = await self._collect_transcripts()
        if user_text:
            self._dialog.add_user(user_text)
        if not self._dialog.awaiting_reply:
            return
        self.started = True
        self._sink.start_response()
        self._emit(ResponseStarted(self.response_id))

        line = SpeechLine(
            self._sink,
            self._heard,
            capacity=self._settings.tts_lookahead + 1,
            max_buffered=SPEECH_QUEUE_CHUNKS,
        )
        messages = self._dialog.messages()
        chat = None
        if (speculation := self._speculation) is not None:
            if (chat := speculation.take_chat(messages, self.record)) is None:
                await speculation.cancel()  # its request is not this one
        if chat is None:
            chat = self._gateway.chat(messages, call=self.record.add("llm"))
        # Closed here, not in the task reading it last: that one may be cancelled before it ran.
        async with closing(chat) as deltas:
            async with asyncio.TaskGroup() as tg:
                await self._write(tg, line, deltas)
        await self._sink.finish()
        self._emit(AudioDone(self.response_id))
        await self._sink.wait_played()

    async def _collect_transcripts(self) -> str:
        """Wait for every unanswered turn's transcript and join them, in order.

        If this reply is cancelled (the caller spoke again before it was heard), the
        transcriptions go on for the next reply: see :class:`Transcription`.
        """
        items = self._transcriptions
        if items:
            for item in items:
                for call in item.calls:
                    self.record.add("asr", call)
            for item in items:
                await item.finished.wait()
            # Only what was waited for after the turn ended: a speculative transcription
            # may have run, all or part, while the caller's pause was still being timed.
            last = items[-1]
            self.clock.asr_start = max(last.started, self.clock.declared)
            self.clock.asr_end = (
                None if last.ended is None else max(last.ended, self.clock.asr_start)
            )
        self._on_commit()
        texts = []
        for item in items:
            if item.task.cancelled():
                continue
            if (error := item.task.exception()) is not None:
                raise error
            texts.append(item.task.result())
        return " ".join(t for t in texts if t)

    async def _write(
        self, tg: asyncio.TaskGroup, line: SpeechLine, deltas: AsyncIterator[str]
    ) -> None:
        """Read the chat stream up to the first sentence, then fetch and play its speech from
        this task while a new one reads the rest.

        So from the transcript to the chat request, from the first sentence to its speech
        request, and from its first byte of speech to the sink, nothing waits for another
        task to be scheduled: under load, each such hand-over waits a pass of the event loop
        behind everything else that is ready. The rest of the reply is needed only once the
        first sentence has played.
        """
        chunker = SentenceChunker(eager_min_words=self._settings.eager_min_words)
        self.clock.chat_start = self._now()
        rest: AsyncIterator[str] | None = deltas
        ready = await self._next_sentences(deltas, chunker)
        if ready is None:  # the stream ended inside the first sentence
            ready, rest = chunker.flush(), None
        if not ready:
            return
        self.clock.first_sentence = self._now()
        first = await line.add(ready[0])
        tg.create_task(self._write_rest(tg, line, rest, chunker, ready[1:]))
        await self._fetch(line, first)

    async def _write_rest(
        self,
        tg: asyncio.TaskGroup,
        line: SpeechLine,
        deltas: AsyncIterator[str] | None,
        chunker: SentenceChunker,
        ready: list[str],
    ) -> None:
        """Speak the sentences after the first: those already cut, then the stream's rest."""
        for sentence in ready:
            await self._speak(tg, line, sentence)
        if deltas is not None:
            while (sentences := await self._next_sentences(deltas, chunker)) is not None:
                for sentence in sentences:
                    await self._speak(tg, line, sentence)
            for sentence in chunker.flush():
                await self._speak(tg, line, sentence)

    async def _next_sentences(
        self, deltas: AsyncIterator[str], chunker: SentenceChunker
    ) -> list[str] | None:
        """Read the chat stream until the chunker cuts a sentence; None once it has ended."""
        async for delta in deltas:
            if not delta:
                continue
            if self.clock.first_token is None:
                self.clock.first_token = self._now()
            self.text += delta
            self._emit(TextDelta(self.response_id, delta))
            if sentences := chunker.push(delta):
                return sentences
        return None

    async def _speak(self, tg: asyncio.TaskGroup, line: SpeechLine, sentence: str) -> None:
        tg.create_task(self._fetch(line, await line.add(sentence)))

    async def _fetch(self, line: SpeechLine, job: SpeechJob) -> None:
        first = self.clock.tts_start is None
        if first:
            self.clock.tts_start = self._now()
        speech = None
        if self._speculation is not None:
            speech = await self._speculation.take_speech(job.text, self._voice, self.record)
        if speech is None:
            speech = self._gateway.speak(job.text, voice=self._voice, call=self.record.add("tts"))
        async with closing(speech) as audio:
            async for frame in audio:
                if first and self.clock.tts_first_byte is None:
                    self.clock.tts_first_byte = self._now()
                await line.deliver(job, frame)
        await line.end(job)
