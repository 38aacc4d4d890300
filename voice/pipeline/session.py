"""A session binds one caller's audio to the pipeline: VAD, turns, replies and barge-in.

The app's admission path builds a session for each call it admits (``voice.app.admission``)
and hands it to the transport, which owns the socket: it attaches its
:class:`~voice.pipeline.sink.AudioSink` for reply audio and its ``emit`` for events with
``attach()``, feeds caller audio in with ``feed()``, changes instructions and voice only
through ``configure()``, and calls ``aclose()`` when the caller goes away.

Each finished turn is transcribed at once, or earlier: with speculation
(``VOICE_SPECULATION``), at a pause inside it, when its transcription, the chat request
and the first sentence's speech start and are buffered (pipeline/speculation.py); the
words so far decide how long that pause must last to end the turn (core/endpoint.py), and
speech before then cancels it all. Nothing plays and the dialog does not change before the
turn ends. A reply answers every turn not yet answered, so
nothing the caller says is lost when they speak again before hearing the answer: a reply
not yet audible is withdrawn quietly and the next one answers both turns (a turn cut at
``max_turn_s`` is only transcribed, and answered with what follows it). Once reply audio
has reached the caller, speech is a barge-in: the reply stops and the dialog keeps what was
heard. The session owns every task it starts and cancels and awaits them all on close;
``_run_reply`` alone emits a reply's terminal events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Coroutine, MutableMapping
from typing import Any

from voice.audio.frames import PIPELINE_RATE, SAMPLE_WIDTH, PcmFrame, Reframer
from voice.audio.resample import Resampler
from voice.config import Settings
from voice.core.dialog import Dialog
from voice.core.endpoint import EndOfTurn, EndOfTurnRules
from voice.core.events import (
    ErrorEvent,
    ResponseDone,
    ResponseInterrupted,
    ResponseStatus,
    SessionEnded,
    SessionEvent,
    SpeechDiscarded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnEvent,
)
from voice.core.limits import PerMinute
from voice.core.record import SpeculationTally
from voice.core.turns import TurnDetector
from voice.errors import GatewayAuthError, GatewayError, PaymentRequired, ProtocolError
from voice.gateway.base import Gateway, ReferenceVoice, Voice
from voice.pipeline.notices import Notices
from voice.pipeline.reply import Reply
from voice.pipeline.sink import AudioSink, Emit, Hangup, NullSink, no_events
from voice.pipeline.speculation import Speculation
from voice.pipeline.transcription import NARROWBAND_RATE, Transcription
from voice.vad import SpeechClassifier, speech_classifier

logger = logging.getLogger(__name__)


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the session id, as websockets does per connection."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['session'] if self.extra else '-'}] {msg}", kwargs


def caller_message(error: GatewayError) -> str:
    """What the caller is told. Auth and payment details stay in the operator's log."""
    ref = f" (request id {error.request_id})" if error.request_id else ""
    if isinstance(error, GatewayAuthError):
        return f"the gateway refused this service's credentials{ref}; tell the operator"
    if isinstance(error, PaymentRequired):
        return f"the gateway requires payment for this request (HTTP 402){ref}"
    return error.message


class Session:
    """One caller's conversation. Until a transport calls :meth:`attach`, reply audio goes
    nowhere and events reach only ``observe`` (the app's metrics)."""

    def __init__(
        self,
        *,
        session_id: str,
        settings: Settings,
        gateway: Gateway,
        observe: Emit | None = None,
        vad: SpeechClassifier | None = None,
        max_session_s: float | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.id = session_id
        self.settings = settings
        self.log = SessionLogger(logger, {"session": session_id})
        self.dialog = Dialog(
            instructions=settings.pipeline.instructions,
            max_messages=settings.pipeline.max_history_messages,
        )
        self.voice: Voice = None
        """The TTS voice: a name, a caller's reference-audio voice, or None for the one the
        operator configured (``VOICE_TTS_VOICE``, or ``VOICE_TTS_REF_AUDIO``'s)."""
        self.input_rate = PIPELINE_RATE
        self._frame_rate = PIPELINE_RATE  # what the VAD and the turn detector run at
        self._gateway = gateway
        self._observe = observe
        self._sink: AudioSink = NullSink()
        self._emit: Emit = observe or no_events
        self._vad = vad or speech_classifier(settings.turn)
        turn = settings.turn
        self._turns = TurnDetector(
            start_ms=turn.start_ms,
            hangover_ms=turn.hangover_ms,
            preroll_ms=turn.preroll_ms,
            min_speech_ms=turn.min_speech_ms,
            max_turn_s=turn.max_turn_s,
            pause_ms=None if turn.speculation == "off" else turn.pause_ms,
            logger=self.log,
        )
        self._end_of_turn: EndOfTurn = EndOfTurnRules(
            floor_ms=turn.hangover_min_ms, ceiling_ms=turn.hangover_max_ms
        )
        self._speculation: Speculation | None = None
        self._kept: list[Speculation] = []
        """Speculations of this turn whose words were kept when the caller went on."""
        self._tally = SpeculationTally()
        """Speculation for the turns the next reply will answer."""
        self._turn_lock = asyncio.Lock()
        """Turn events are handled one at a time, whether a frame or a verdict caused them."""
        self._chores: set[asyncio.Task[None]] = set()
        self._reframer = Reframer(PIPELINE_RATE)
        self._resampler: Resampler | None = None
        self._pending: list[Transcription] = []
        self._reply: Reply | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._response_ids = itertools.count(1)
        limits = settings.limits
        self._turn_rate = PerMinute(limits.max_turns_per_min)
        self._idle_s = limits.idle_timeout_s
        self._max_s = min(limits.max_session_s, max_session_s or limits.max_session_s)
        self._hangup: Hangup | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._max_timer: asyncio.TimerHandle | None = None
        self._limits_armed = False
        self._pinned = False
        self._last_voiced = 0.0
        self._notices = notices or Notices()
        self._failures = 0  # turns in a row that failed for good
        self.ended: str | None = None
        """Why the server ended the session (``idle``, ``max_duration``); None while it runs."""

    def attach(self, sink: AudioSink, emit: Emit, hangup: Hangup | None = None) -> None:
        """The transport's output: reply audio into ``sink``, events to ``emit`` (after the
        observer), and ``hangup`` to end the call when a limit ends the session (idle, too
        long). Called before the first audio is fed, and again if the transport's output
        changes (a carrier's codec is known only from its ``start``); the limits count from
        the first call."""
        self._sink = sink
        self._hangup = hangup
        if self._limits_armed:
            return
        self._limits_armed = True
        loop = asyncio.get_running_loop()
        self._last_voiced = time.monotonic()
        self._idle_timer = loop.call_later(self._idle_s, self._check_idle)
        self._max_timer = loop.call_later(
            self._max_s,
            self.end,
            "max_duration",
            f"the session reached its limit of {self._max_s:g} s",
        )
        observe = self._observe
        if observe is None:
            self._emit = emit
            return

        def both(event: SessionEvent) -> None:
            observe(event)
            emit(event)

        self._emit = both

    def emit(self, event: SessionEvent) -> None:
        """An event of this session's, from the pipeline or its transport (an error, DTMF):
        to the observer and the caller alike."""
        self._emit(event)

    def configure(self, *, instructions: str | None = None, voice: Voice = None) -> None:
        """The one way a caller changes the instructions and TTS voice; None keeps each.

        Raises :class:`~voice.errors.ProtocolError`, changing nothing, when the caller's
        token fixed them (:meth:`pin`), the instructions are over the limit, or a
        reference-audio voice is given where the operator did not allow callers one."""
        if instructions is None and voice is None:
            return
        if self._pinned:
            raise ProtocolError(
                "this session's instructions and voice are fixed by its token",
                code="invalid_session_update",
            )
        if isinstance(voice, ReferenceVoice) and not self.settings.gateway.tts_ref_from_callers:
            raise ProtocolError(
                "this server does not let callers set a reference-audio voice (voice_ref); "
                "choose a named voice",
                code="invalid_session_update",
            )
        limit = self.settings.limits.max_instructions_chars
        if instructions is not None and len(instructions) > limit:
            raise ProtocolError(
                f"instructions of {len(instructions)} characters are over the {limit} allowed",
                code="invalid_session_update",
            )
        self.pin(instructions=instructions, voice=voice, locked=False)

    def pin(self, *, instructions: str | None, voice: Voice, locked: bool) -> None:
        """Set what the caller's token says (the app does, at admission); ``locked``: the
        caller cannot change them afterwards."""
        if instructions is not None:
            self.dialog.instructions = instructions
        if voice is not None:
            self.voice = voice
        self._pinned = self._pinned or locked

    def end(self, reason: str, message: str) -> None:
        """End the session from the server's side: a final event, then the transport hangs
        up (its ``hangup``). Once; the transport's own close follows as usual."""
        if self.ended is not None:
            return
        self.ended = reason
        self._cancel_timers()
        self.log.info("ending the session: %s", message)
        self.emit(SessionEnded(reason, message))
        if self._hangup is not None:
            self._hangup(reason)

    async def end_after_reply(self, reason: str, message: str, *, within_s: float) -> None:
        """:meth:`end` the session once the reply now in flight has been played (waiting
        at most ``within_s``), so that the caller does not lose a sentence's end."""
        if (task := self._reply_task) is not None and not task.done():
            await asyncio.wait({task}, timeout=within_s)
        self.end(reason, message)

    def _check_idle(self) -> None:
        """The idle timer fired: end the session, or look again when it could be idle.
        One timer, set again only when it fires: voiced frames just note the time."""
        now = time.monotonic()
        if self.replying:
            self._last_voiced = now  # the caller is listening, not idle
        due = self._last_voiced + self._idle_s
        if now < due:
            self._idle_timer = asyncio.get_running_loop().call_later(due - now, self._check_idle)
            return
        self.end("idle", f"no speech for {self._idle_s:g} s; the session has ended")

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._max_timer):
            if timer is not None:
                timer.cancel()

    @property
    def instructions(self) -> str:
        return self.dialog.instructions

    def set_input_rate(self, rate: int) -> None:
        """Caller audio arrives at ``rate`` from now on.

        8 and 16 kHz audio is used as it is; other rates are resampled to 16 kHz. A change
        between the two drops a turn in progress (its audio would mix two rates).
        """
        if rate == self.input_rate:
            return
        self.input_rate = rate
        frame_rate = rate if rate in (NARROWBAND_RATE, PIPELINE_RATE) else PIPELINE_RATE
        self._resampler = None if rate == frame_rate else Resampler(rate, frame_rate)
        if frame_rate != self._frame_rate:
            self._frame_rate = frame_rate
            self._reframer = Reframer(frame_rate)
            self._turns.reset()
            if (speculation := self._speculation) is not None:
                self._speculation = None
                self._chore(self._drop(speculation))
            for words in self._kept:
                words.give_up_words()
                words.tally(self._tally)
            self._kept = []

    @property
    def replying(self) -> bool:
        """A response has started and not ended (its audio may be playing)."""
        return self._reply is not None and self._reply.started and not self._reply_done

    @property
    def _reply_done(self) -> bool:
        return self._reply_task is None or self._reply_task.done()

    async def feed(self, pcm: bytes) -> None:
        """Caller audio: PCM16 mono at ``input_rate``, any length (even)."""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        rate = self._frame_rate
        for frame in self._reframer.cut(pcm):
            speech = self._vad.is_speech(frame, rate)
            if speech:
                self._last_voiced = time.monotonic()
            if events := self._turns.feed(frame, speech):
                await self._handle(events)

    async def _handle(self, events: list[TurnEvent]) -> None:
        async with self._turn_lock:
            for event in events:
                await self._on_turn_event(event)

    async def interrupt(self) -> None:
        """Stop the reply now: drop queued audio, cancel requests, keep only what was heard."""
        reply, task = self._reply, self._reply_task
        if reply is None or task is None or task.done():
            return
        reply.interrupted = reply.heard_text()
        self._sink.clear()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        """The caller is gone: cancel the reply, transcriptions and every request in flight."""
        self._cancel_timers()
        tasks: list[asyncio.Task[Any]] = [t.task for t in self._pending]
        tasks.extend(self._chores)
        if self._reply_task is not None:
            tasks.append(self._reply_task)
        for task in tasks:
            task.cancel()
        for words in self._kept:
            words.give_up_words()
        if (speculation := self._speculation) is not None:
            self._speculation = None
            await speculation.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()

    async def _on_turn_event(self, event: TurnEvent) -> None:
        match event:
            case SpeechPaused():
                self._speculate(event)
                return
            case SpeechResumed():
                if (speculation := self._speculation) is not None:
                    self._speculation = None
                    gap_ms = event.at_ms - speculation.speech_end_ms
                    if speculation.failed or gap_ms < self.settings.turn.split_ms:
                        # Not heard, or a gap inside a phrase that may have cut a word: the
                        # next part starts where the last one kept ended.
                        await self._drop(speculation)
                    else:  # the words so far stand: the next part continues them
                        await speculation.keep_words()
                        self._kept.append(speculation)
                return
        self._emit(event)
        match event:
            case SpeechStarted():
                # Audible or not, the reply stops: the caller has more to say. One not yet
                # heard keeps nothing, and its turns are answered with the next one.
                await self.interrupt()
            case SpeechStopped():
                await self.respond(event)
            case SpeechDiscarded():
                # A cough that withdrew a reply not yet heard: answer what is still open.
                self._answer_open_turns()

    async def respond(self, turn: SpeechStopped) -> None:
        """The caller ended ``turn``: transcribe it and, unless it was cut, answer.

        A speculation started at the pause that ended the turn is committed: its
        transcription is the turn's, and the reply takes over what else it started. Past
        ``max_turns_per_min`` the turn is dropped: nothing more reaches the gateway."""
        speculation, self._speculation = self._speculation, None
        kept, self._kept = self._kept, []
        if speculation is not None and (turn.cut or speculation.failed):
            await self._drop(speculation)
            speculation = None
        for words in kept:  # the words before the turn's pauses: used, or not after all
            if speculation is None:
                words.give_up_words()
            words.tally(self._tally)
        if not self._turn_rate.allow(time.monotonic()):
            if speculation is not None:
                await self._drop(speculation)
            per_min = self._turn_rate.per_minute
            self.log.warning("turn dropped: over %d a minute", per_min)
            self.emit(
                ErrorEvent("rate_limited", f"over {per_min} turns a minute; this one was dropped")
            )
            # As for a cough: a reply this turn's speech withdrew answers what is still open.
            self._answer_open_turns()
            return
        if speculation is not None:
            speculation.commit()
            item = speculation.transcription
        else:
            item = Transcription.start(self._gateway, PcmFrame(turn.audio, self._frame_rate))
        item.announce(self._emit)
        self._pending.append(item)
        if not turn.cut:
            await self.interrupt()
            self._start_reply(
                vad_ms=float(turn.at_ms - turn.speech_end_ms),
                declared=time.monotonic(),
                speculation=speculation,
            )

    def _speculate(self, pause: SpeechPaused) -> None:
        """The caller paused inside a turn: transcribe what they said so far and, if the
        mode says so and nothing else is open, start the reply's requests too."""
        if self._speculation is not None:  # not expected: a pause ends with its turn
            self._chore(self._drop(self._speculation))
            self._speculation = None
        if self._turn_rate.full(time.monotonic()):
            return  # the turn will be dropped: nothing of it goes to the gateway
        mode = self.settings.turn.speculation
        # With earlier turns still open (or their reply not yet over) the reply's request
        # depends on more than this transcript: speculate on the transcription only.
        chat = mode in ("llm", "full") and not self._pending and self._reply_done
        # Only what was said since the last pause the caller went on after, if any.
        words = self._kept[-1] if self._kept else None
        start = words.audio_end if words is not None else 0
        audio = PcmFrame(pause.audio[start:], self._frame_rate)
        before = words.transcription if words is not None else None
        item = Transcription.start(self._gateway, audio, before=before)
        speculation = Speculation(
            mode=mode,
            pause_at_ms=pause.at_ms,
            speech_end_ms=pause.speech_end_ms,
            audio_end=len(pause.audio),
            transcription=item,
            gateway=self._gateway,
            voice=self.voice,
            eager_min_words=self.settings.pipeline.eager_min_words,
            on_transcript=lambda text: self._judge_pause(speculation, text),
            on_ready=lambda: self._reply_ready(speculation),
            messages_for=self.dialog.messages_with_user if chat else None,
        )
        self._speculation = speculation
        # Until the words are known, the pause may run to the longest wait.
        self._turns.end_after(self.settings.turn.hangover_max_ms, pause_at_ms=pause.at_ms)

    def _judge_pause(self, speculation: Speculation, text: str | None) -> None:
        """The words before the pause are known: how long the pause must last to end the
        turn (``hangover_ms`` if they could not be transcribed). The turn may end now, or,
        holding until the reply is ready, when it is (:meth:`_reply_ready`)."""
        if self._speculation is not speculation:
            return
        if text is None:
            hangover_ms = self.settings.turn.hangover_ms
        else:
            hangover_ms = self._end_of_turn.hangover_ms(text)
        if speculation.chatting and self.settings.turn.hold_until_ready:
            # Until then the pause may run to the longest wait, as set when it began.
            speculation.hangover_ms = hangover_ms
            return
        self._end_pause_after(speculation, hangover_ms)

    def _reply_ready(self, speculation: Speculation) -> None:
        """The reply the speculation started could play now: the verdict on its words holds
        from here."""
        if self._speculation is speculation and speculation.hangover_ms is not None:
            self._end_pause_after(speculation, speculation.hangover_ms)

    def _end_pause_after(self, speculation: Speculation, hangover_ms: int) -> None:
        if events := self._turns.end_after(hangover_ms, pause_at_ms=speculation.pause_at_ms):
            self._chore(self._handle(events))

    async def _drop(self, speculation: Speculation) -> None:
        """The caller went on (or the turn cannot use it): cancel it, count what it cost."""
        await speculation.cancel()
        speculation.tally(self._tally)

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task the session owns (cancelled on close)."""
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _answer_open_turns(self) -> None:
        if self._reply_done and (self._pending or self.dialog.awaiting_reply):
            self._start_reply(vad_ms=0.0, declared=time.monotonic())

    def _start_reply(
        self, *, vad_ms: float, declared: float, speculation: Speculation | None = None
    ) -> None:
        pending = list(self._pending)
        tally = self._tally

        def commit() -> None:
            # The reply has taken these turns over: they are answered, or failed with it,
            # and so is what speculating on them cost.
            self._pending = [t for t in self._pending if t not in pending]
            if self._tally is tally:
                self._tally = SpeculationTally()

        reply = Reply(
            response_id=f"resp_{next(self._response_ids)}",
            transcriptions=pending,
            vad_ms=vad_ms,
            declared=declared,
            on_commit=commit,
            gateway=self._gateway,
            dialog=self.dialog,
            sink=self._sink,
            emit=self.emit,
            settings=self.settings.pipeline,
            voice=self.voice,
            speculation=speculation,
            tally=tally,
        )
        self._reply = reply
        self._reply_task = asyncio.create_task(self._run_reply(reply))

    async def _run_reply(self, reply: Reply) -> None:
        status: ResponseStatus = "completed"
        try:
            try:
                await reply.run()
            except* GatewayError as group:
                error = group.exceptions[0]
                assert isinstance(error, GatewayError)
                self.log.warning("reply failed: %r", error)
                self._emit(ErrorEvent(error.code, caller_message(error)))
                status = "failed"
            except* Exception:
                self.log.exception("reply failed")
                self._emit(
                    ErrorEvent("internal_error", "the reply failed; the server log says why")
                )
                status = "failed"
        except asyncio.CancelledError:
            if reply.interrupted is None:
                raise  # the session is closing, not a barge-in: nobody to tell
        if reply.started:
            self._reply_ended(reply, status)
        if reply.interrupted is not None:
            return  # the caller spoke: whatever failed, the barge-in is what counts
        if status == "completed":
            if reply.started:
                self._failures = 0
            return
        self._failures += 1
        try:
            await self._say_failed()
        except asyncio.CancelledError:
            if reply.interrupted is None:
                raise  # closing; a barge-in only stops the notice

    def _reply_ended(self, reply: Reply, status: ResponseStatus) -> None:
        """A started reply's last events: what the dialog kept of it."""
        if reply.interrupted is not None:
            # Also when a child failed as the caller barged in: the barge-in is what counts.
            kept = reply.interrupted
            self.dialog.add_assistant(kept)
            self.log.info("interrupted; caller heard %d of %d chars", len(kept), len(reply.text))
            self._emit(ResponseInterrupted(reply.response_id, kept))
            self._done(reply, kept, "interrupted")
            return
        kept = reply.text
        if status == "failed":
            # The caller drops the audio it holds on a failed response.done (docs/protocol.md).
            kept = reply.heard_text()
            self._sink.clear()
        self.dialog.add_assistant(kept)
        self._done(reply, kept, status)

    def _done(self, reply: Reply, kept: str, status: ResponseStatus) -> None:
        """``response.done``, and the operator's line of its gateway record (one JSON object,
        also on the log record as ``turn_record``, for a JSON log formatter)."""
        record = reply.record.as_dict()
        self.log.info(
            "%s %s; gateway record: %s",
            reply.response_id,
            status,
            json.dumps(record, separators=(",", ":")),
            extra={"turn_record": {"response_id": reply.response_id, "status": status, **record}},
        )
        self._emit(
            ResponseDone(
                reply.response_id, kept, status, reply.timings(), reply.record, reply.tally
            )
        )

    async def _say_failed(self) -> None:
        """After a turn failed for good: the failure notice, or past the limit of failed
        turns in a row, the closing notice and the end of the session."""
        limit = self.settings.pipeline.max_consecutive_failures
        if self._failures < limit:
            await self._say(self._notices.failure)
            return
        self.log.warning("%d turns in a row failed: ending the session", self._failures)
        try:
            await self._say(self._notices.closing)
        finally:  # a caller talking over the goodbye still ends the call
            self.end(
                "gateway_failures",
                f"{self._failures} turns in a row could not be answered; call again later",
            )

    async def _say(self, notice: PcmFrame | None) -> None:
        """Play a recorded notice through the caller's output, as a reply's audio plays."""
        if notice is None:
            return
        sink = self._sink
        sink.start_response()
        step = notice.sample_rate // 5 * SAMPLE_WIDTH  # 200 ms
        for at in range(0, len(notice.pcm), step):
            await sink.write(PcmFrame(notice.pcm[at : at + step], notice.sample_rate))
        await sink.finish()
        await sink.wait_played()
