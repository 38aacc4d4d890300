"""Work started at a pause, before the caller's turn is over (``VOICE_SPECULATION``).

When the caller pauses inside a turn, the session starts a :class:`Speculation`: the
utterance so far goes to transcription (``asr``), then the chat request that would answer
it (``llm``), then the speech of the reply's first sentence (``full``). Everything it
receives is buffered, nothing is played and the dialog is not touched: if the caller speaks
again, :meth:`Speculation.cancel` cancels every request at the gateway (their streams are
closed; the next attempt makes new requests, with new idempotency keys). If the pause ends
the turn instead, the session commits it: the speculative transcription is the turn's, and
the reply takes over the chat stream and the first sentence's speech (:meth:`take_chat`,
:meth:`take_speech`), already under way, so its audio can play at once. A stream is taken
only for the exact request the reply would have made (the same messages, the same
sentence); anything not taken is cancelled and counted as such.

A speculation that chats says when its reply is ready to play (``on_ready``): its first
sentence written (``llm``), or its first audio arrived (``full``). With
``VOICE_TURN_HOLD_UNTIL_READY`` the session ends the turn no sooner than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Generic, Literal, TypeVar

from voice.audio.frames import PcmFrame
from voice.core.chunker import SentenceChunker
from voice.core.dialog import ChatMessage
from voice.core.record import GatewayCall, SpeculationTally, Stage, TurnRecord
from voice.gateway.base import Gateway, Voice, closing
from voice.pipeline.transcription import Transcription

Mode = Literal["off", "asr", "llm", "full"]

CHAT_BUFFER = 1024
"""Chat deltas held before the speculative stream stops reading (a reply is capped far
below this by its token limit)."""
SPEECH_BUFFER = 64
"""Speech chunks held for the first sentence before its stream stops reading."""

T = TypeVar("T")


class Tap(Generic[T]):
    """Reads a gateway stream into a buffer from now on, for one consumer later.

    :meth:`peek` lets the owner look at what has arrived (the first sentence of a chat);
    :meth:`take` hands the whole stream, from its first item, to the one consumer that
    plays it, and closing what it returns closes the stream. Reading stops while
    ``capacity`` items wait unconsumed.
    """

    def __init__(self, stream: AsyncIterator[T], *, capacity: int) -> None:
        self._items: list[T] = []
        self._taken = 0
        self._capacity = capacity
        self._error: BaseException | None = None
        self._ended = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: AsyncIterator[T]) -> None:
        try:
            async with closing(stream) as items:
                async for item in items:
                    self._items.append(item)
                    self._wake()
                    while len(self._items) - self._taken >= self._capacity:
                        await self._wait()
        except Exception as error:  # handed to the consumer, who raises it
            self._error = error
        finally:
            self._ended = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()

    async def peek(self) -> AsyncIterator[T]:
        """What has arrived and what arrives, until the stream ends (errors end it quietly)."""
        at = 0
        while True:
            while at < len(self._items):
                yield self._items[at]
                at += 1
            if self._ended:
                return
            await self._wait()

    async def take(self) -> AsyncIterator[T]:
        """The stream from its first item, raising what it raised; closing it closes it."""
        try:
            while True:
                while self._taken < len(self._items):
                    item = self._items[self._taken]
                    self._taken += 1
                    self._wake()  # room for the reader
                    yield item
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return
                await self._wait()
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Speculation:
    """One pause's speculative work; see the module's docstring.

    ``on_transcript`` is called once with the transcript of the utterance so far, or None
    if the transcription failed; the session judges from it how long the pause must last
    (:mod:`voice.core.endpoint`). ``messages_for`` gives the chat request that would answer
    a transcript; None speculates no further than the transcription. If it chats
    (:attr:`chatting`, known before ``on_transcript`` is called), ``on_ready`` is called
    once the reply could start playing, or once its streams ended without that.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        pause_at_ms: int,
        speech_end_ms: int,
        audio_end: int,
        transcription: Transcription,
        gateway: Gateway,
        voice: Voice,
        eager_min_words: int,
        on_transcript: Callable[[str | None], None],
        on_ready: Callable[[], None],
        messages_for: Callable[[str], list[ChatMessage]] | None,
    ) -> None:
        self.pause_at_ms = pause_at_ms
        self.speech_end_ms = speech_end_ms
        """Where the caller's speech before the pause ended, on the turn detector's clock."""
        self.audio_end = audio_end
        """Bytes of the turn's audio its transcription covers."""
        self.transcription = transcription
        self.messages: list[ChatMessage] | None = None
        self.first_sentence: str | None = None
        self.chatting = False
        """The transcript is known and a chat request answers it."""
        self.hangover_ms: int | None = None
        """How long the pause must last, as the session judged it from the transcript, when
        the session waits for ``on_ready`` to apply it."""
        self._mode = mode
        self._gateway = gateway
        self._voice = voice
        self._eager_min_words = eager_min_words
        self._on_transcript = on_transcript
        self._on_ready = on_ready
        self._messages_for = messages_for
        self._chat: Tap[str] | None = None
        self._speech: Tap[PcmFrame] | None = None
        self._calls: dict[Stage, GatewayCall] = {"asr": transcription.call}
        self._taken: set[Stage] = set()
        self._sentence_cut = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._start()
        finally:
            self._sentence_cut.set()
        if self._speech is not None:  # full: ready when the first audio is here
            async with closing(self._speech.peek()) as chunks:
                async for _ in chunks:
                    break
        if self.chatting:
            self._on_ready()

    async def _start(self) -> None:
        """Transcribe; then, as the mode says, open the chat, cut its first sentence, and
        open that sentence's speech."""
        item = self.transcription
        await item.finished.wait()
        if item.failed:
            self._on_transcript(None)
            return
        text = item.task.result()
        messages_for = None if self._mode == "asr" or not text else self._messages_for
        self.chatting = messages_for is not None
        self._on_transcript(text)
        if messages_for is None:
            return
        self.messages = messages_for(text)
        call = self._calls["llm"] = GatewayCall()
        chat = self._chat = Tap(self._gateway.chat(self.messages, call=call), capacity=CHAT_BUFFER)
        chunker = SentenceChunker(eager_min_words=self._eager_min_words)
        sentences: list[str] = []
        async with closing(chat.peek()) as deltas:
            async for delta in deltas:
                if sentences := chunker.push(delta):
                    break
            else:
                sentences = chunker.flush()
        if not sentences:
            return
        self.first_sentence = sentences[0]
        if self._mode != "full":
            return
        call = self._calls["tts"] = GatewayCall()
        speech = self._gateway.speak(self.first_sentence, voice=self._voice, call=call)
        self._speech = Tap(speech, capacity=SPEECH_BUFFER)

    def take_chat(
        self, messages: list[ChatMessage], record: TurnRecord
    ) -> AsyncIterator[str] | None:
        """The speculative chat stream, if it is the request for ``messages``; its call
        joins ``record``."""
        if self._chat is None or messages != self.messages:
            return None
        self._taken.add("llm")
        record.add("llm", self._calls["llm"])
        return self._chat.take()

    async def take_speech(
        self, text: str, voice: Voice, record: TurnRecord
    ) -> AsyncIterator[PcmFrame] | None:
        """The first sentence's speculative speech, if ``text`` in ``voice`` is what it
        says; its call joins ``record``."""
        if "llm" not in self._taken or "tts" in self._taken:
            return None
        # The reply has cut its first sentence from the chat stream this speculation also
        # reads: the speculation is cutting the same sentence now, in this pass or the next.
        await self._sentence_cut.wait()
        if self._speech is None or (text, voice) != (self.first_sentence, self._voice):
            return None
        self._taken.add("tts")
        record.add("tts", self._calls["tts"])
        return self._speech.take()

    @property
    def failed(self) -> bool:
        """Its transcription failed: the turn is better transcribed again as a whole."""
        return self.transcription.failed

    def commit(self) -> None:
        """The turn ended at this pause: its transcription is the turn's (the session keeps
        it); the reply may take the chat and speech."""
        self._taken.add("asr")

    async def keep_words(self) -> None:
        """The caller went on after this pause: the words before it stay the turn's (the
        next part continues them); everything else is cancelled."""
        self._taken.add("asr")
        await self.cancel()

    def give_up_words(self) -> None:
        """Words kept by :meth:`keep_words` that the turn will not use after all."""
        self._taken.discard("asr")
        self.transcription.task.cancel()

    async def cancel(self) -> None:
        """Cancel every request still open and wait until they are closed: all of them if
        the turn went on; once a reply has committed the turn, it calls this when it is done
        with them (a stream it took but never read is closed here, not left waiting). The
        transcription of a committed turn is the turn's and is left alone."""
        self._task.cancel()
        if "asr" not in self._taken:
            # This part only: the words kept before it are the session's to give up.
            self.transcription.task.cancel()
        taps = [tap.cancel() for tap in (self._chat, self._speech) if tap is not None]
        await asyncio.gather(self._task, *taps, return_exceptions=True)

    def tally(self, into: SpeculationTally) -> None:
        """Count this speculation's requests, taken or thrown away, into ``into``."""
        into.pauses += 1
        for stage in self._calls:
            if stage in self._taken:
                into.committed[stage] += 1
            else:
                into.cancelled[stage] += 1
