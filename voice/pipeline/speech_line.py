"""A reply's sentences, spoken strictly in order, written by the tasks that fetch them.

A reply fetches speech for a few sentences at once (the one playing and the look-ahead) and
plays them in sentence order. The sentence at the head of the line is *live*: the task
fetching its speech writes every chunk to the sink itself, as it arrives. Handing chunks to
a player task instead would cost a pass of the event loop per hand-over, and under load a
pass waits behind everything else that is ready (at 100 phone calls, up to tens of ms before
the first audio of every reply). Later sentences buffer their chunks; when the head's speech
ends, the task that fetched it writes the next sentence's buffer and makes that one live.
"""

from __future__ import annotations

import asyncio
from collections import deque

from voice.audio.frames import PcmFrame
from voice.core.playout import HeardText
from voice.pipeline.sink import AudioSink


class SpeechJob:
    """One sentence in the line: its text and the speech buffered until it is the head."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.live = False
        """Head of the line with nothing buffered: chunks go straight to the sink."""
        self.done = False
        """Its speech has all arrived."""
        self.buffered: deque[PcmFrame] = deque()
        self.room = asyncio.Event()
        self.room.set()


class SpeechLine:
    """Sentences' speech in order, into ``sink``; ``capacity`` sentences in the line at most.

    Fetching tasks call :meth:`deliver` with each chunk and :meth:`end` when their speech
    is over; whoever ends the head moves the line on. What is written is also recorded in
    ``heard`` (text when a sentence starts, then its audio), which turns the sink's played
    position into the text the caller heard.
    """

    def __init__(
        self, sink: AudioSink, heard: HeardText, *, capacity: int, max_buffered: int
    ) -> None:
        self._sink = sink
        self._heard = heard
        self._slots = asyncio.Semaphore(capacity)
        self._max_buffered = max_buffered
        self._jobs: deque[SpeechJob] = deque()

    async def add(self, text: str) -> SpeechJob:
        """Queue a sentence; waits while the line is full."""
        await self._slots.acquire()
        job = SpeechJob(text)
        self._jobs.append(job)
        if len(self._jobs) == 1:
            self._heard.add_text(text)
            job.live = True
        return job

    async def deliver(self, job: SpeechJob, frame: PcmFrame) -> None:
        """A chunk of ``job``'s speech: written now if it is live, else kept for its turn
        (waiting while ``max_buffered`` chunks are kept, which holds its fetch back)."""
        if job.live:
            await self._write(frame)
            return
        job.buffered.append(frame)
        if len(job.buffered) >= self._max_buffered:
            job.room.clear()
            await job.room.wait()

    async def end(self, job: SpeechJob) -> None:
        """All of ``job``'s speech has been delivered. If it is the head, the line moves on:
        the next sentences' buffered speech is written from here, until one is still
        arriving (it becomes live) or the line is empty."""
        job.done = True
        if not job.live:
            return  # buffered: written when its turn comes
        self._pop()
        while self._jobs:
            head = self._jobs[0]
            self._heard.add_text(head.text)
            # Its task may add chunks, or end, while we write: take them as they come.
            while head.buffered:
                frames = list(head.buffered)
                head.buffered.clear()
                head.room.set()
                for joined in _joined(frames):
                    await self._write(joined)
            if not head.done:
                head.live = True
                return
            self._pop()

    def _pop(self) -> None:
        self._jobs.popleft()
        self._slots.release()

    async def _write(self, frame: PcmFrame) -> None:
        await self._sink.write(frame)
        self._heard.add_audio(frame.duration_ms)


def _joined(frames: list[PcmFrame]) -> list[PcmFrame]:
    """Chunks that waited, as one (per run of one sample rate, which a stream keeps): a
    single resample, encode and send for all of them."""
    runs: list[list[PcmFrame]] = []
    for frame in frames:
        if runs and runs[-1][0].sample_rate == frame.sample_rate:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return [
        run[0] if len(run) == 1 else PcmFrame(b"".join(f.pcm for f in run), run[0].sample_rate)
        for run in runs
    ]
