"""One reply: transcript → chat stream → sentences → speech → playout, in one TaskGroup.

Speech for a sentence is requested as soon as the chunker releases it, while the LLM goes on
writing; up to ``tts_lookahead`` later sentences are fetched while an earlier one plays, and
audio is played strictly in sentence order. Cancelling the reply's task cancels every
request in flight (the gateway closes its HTTP streams) and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from voice.audio.frames import PcmFrame
from voice.config import PipelineSettings
from voice.core.chunker import SentenceChunker
from voice.core.dialog import Dialog
from voice.core.events import AudioDone, ResponseStarted, TextDelta, TurnTimings
from voice.core.playout import HeardText
from voice.gateway.base import Gateway
from voice.transports.base import AudioSink, Emit

T = TypeVar("T")

SPEECH_QUEUE_CHUNKS = 64
"""TTS chunks buffered per sentence before its request is made to wait."""


@asynccontextmanager
async def closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a gateway stream however the consumer leaves it (async generators have aclose)."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


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


@dataclass
class _SpeechJob:
    text: str
    audio: asyncio.Queue[PcmFrame | None] = field(
        default_factory=lambda: asyncio.Queue(SPEECH_QUEUE_CHUNKS)
    )


@dataclass
class Transcription:
    """One turn's transcription, started as soon as the turn ends; owned by the session.

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

    def end(self, *_: object) -> None:
        self.finished.set()


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
        voice: str | None,
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
        user_text = await self._collect_transcripts()
        if user_text:
            self._dialog.add_user(user_text)
        if not self._dialog.awaiting_reply:
            return
        self.started = True
        self._sink.start_response()
        self._emit(ResponseStarted(self.response_id))

        # Unbounded in type, bounded in fact: a job enters only with a slot.
        jobs: asyncio.Queue[_SpeechJob | None] = asyncio.Queue()
        # One slot per sentence being fetched or played: the playing one plus the look-ahead.
        slots = asyncio.Semaphore(self._settings.tts_lookahead + 1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._play(jobs, slots))
            # The chat request goes from this task, not from a new one that would start a
            # pass of the event loop later (under load, a pass takes milliseconds).
            await self._write(tg, jobs, slots)
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
                await item.finished.wait()
            self.clock.asr_start, self.clock.asr_end = items[-1].started, items[-1].ended
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
        self,
        tg: asyncio.TaskGroup,
        jobs: asyncio.Queue[_SpeechJob | None],
        slots: asyncio.Semaphore,
    ) -> None:
        chunker = SentenceChunker(eager_min_words=self._settings.eager_min_words)
        self.clock.chat_start = self._now()
        async with closing(self._gateway.chat(self._dialog.messages())) as deltas:
            async for delta in deltas:
                if not delta:
                    continue
                if self.clock.first_token is None:
                    self.clock.first_token = self._now()
                self.text += delta
                self._emit(TextDelta(self.response_id, delta))
                for sentence in chunker.push(delta):
                    await self._speak(tg, jobs, slots, sentence)
        for sentence in chunker.flush():
            await self._speak(tg, jobs, slots, sentence)
        jobs.put_nowait(None)

    async def _speak(
        self,
        tg: asyncio.TaskGroup,
        jobs: asyncio.Queue[_SpeechJob | None],
        slots: asyncio.Semaphore,
        sentence: str,
    ) -> None:
        if self.clock.first_sentence is None:
            self.clock.first_sentence = self._now()
        await slots.acquire()
        job = _SpeechJob(sentence)
        tg.create_task(self._fetch(job))
        jobs.put_nowait(job)

    async def _fetch(self, job: _SpeechJob) -> None:
        first = self.clock.tts_start is None
        if first:
            self.clock.tts_start = self._now()
        async with closing(self._gateway.speak(job.text, voice=self._voice)) as audio:
            async for frame in audio:
                if first and self.clock.tts_first_byte is None:
                    self.clock.tts_first_byte = self._now()
                await job.audio.put(frame)
        await job.audio.put(None)

    async def _play(self, jobs: asyncio.Queue[_SpeechJob | None], slots: asyncio.Semaphore) -> None:
        while (job := await jobs.get()) is not None:
            self._heard.add_text(job.text)
            ended = False
            while not ended and (first := await job.audio.get()) is not None:
                frames, ended = _take_queued(job.audio, first)
                for frame in frames:
                    await self._sink.write(frame)
                    self._heard.add_audio(frame.duration_ms)
            slots.release()
        await self._sink.finish()


def _take_queued(
    audio: asyncio.Queue[PcmFrame | None], first: PcmFrame
) -> tuple[list[PcmFrame], bool]:
    """``first`` and the chunks already queued behind it, joined; True once the end is taken.

    Speech usually streams faster than real time, so chunks that arrived while the loop was
    busy are written together: one resample, encode and send for all of them, not one each,
    which is when that saving counts. When the loop keeps up, each chunk goes out alone, as
    soon as it came.
    """
    frames, ended = [first], False
    while not audio.empty():
        frame = audio.get_nowait()
        if frame is None:
            ended = True
            break
        frames.append(frame)
    if len(frames) == 1:
        return frames, ended
    joined: list[PcmFrame] = []
    run: list[bytes] = []
    for i, frame in enumerate(frames):  # a rate change (never seen) splits the batch
        run.append(frame.pcm)
        if i + 1 == len(frames) or frames[i + 1].sample_rate != frame.sample_rate:
            joined.append(PcmFrame(b"".join(run), frame.sample_rate))
            run = []
    return joined, ended
