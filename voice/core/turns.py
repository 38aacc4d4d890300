"""Turn detection: per-frame voiced/unvoiced decisions in, turn events out (sans-I/O).

The detector never reads a clock. Its only notion of time is the audio clock: how many
milliseconds of caller audio have been fed, one ``frame_ms`` frame per :meth:`feed` call.
Every timestamp it emits is on that clock, so a replayed recording gives identical events.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from typing import TYPE_CHECKING

from voice.core.events import (
    SpeechDiscarded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnEvent,
)

if TYPE_CHECKING:
    Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

log = logging.getLogger(__name__)


class TurnState(enum.Enum):
    SILENCE = "silence"
    """No turn: frames only fill the pre-roll ring."""
    STARTING = "starting"
    """Voiced frames, but fewer than ``start_ms`` of them in a row yet."""
    SPEECH = "speech"
    """A turn is open and the last frame was voiced."""
    ENDING = "ending"
    """A turn is open and the caller has paused; ``hangover_ms`` of pause ends it."""


class TurnDetector:
    """Decide where the caller's turns start and end.

    Defaults (the same as ``TurnSettings``) and why:

    - ``start_ms=100``: five voiced 20 ms frames in a row. One or two voiced frames are
      usually a click or a breath; 100 ms is still short enough that a barge-in stops the
      reply almost at once.
    - ``hangover_ms=500``: the pause that ends a turn. People pause 200-400 ms between
      phrases of one thought; much longer than 500 ms and the reply feels slow, because
      the hangover is waited in full before anything is sent to ASR (it is ``vad_ms``).
    - ``preroll_ms=300``: audio kept from before the onset. VADs fire late on soft
      consonants, so without it ASR loses the first syllable. At least 200 ms is required.
    - ``min_speech_ms=200``: turns with less voiced audio are coughs and clicks; they end
      with :class:`SpeechDiscarded` so nothing is sent to ASR.
    - ``max_turn_s=30``: a turn is cut at this length from its onset (bounding the
      utterance buffer and the ASR request) with ``SpeechStopped(cut=True)``.

    Every duration is rounded up to whole frames. Memory is bounded: the pre-roll is a ring
    of ``preroll_ms`` however long the silence lasts, and an utterance holds at most
    ``max_turn_s`` of audio after its onset.

    After a cut: if the caller is still speaking (the cut fell on a voiced frame), a new
    turn opens at once at the cut point, in the same :meth:`feed` result:
    ``[SpeechStopped(cut=True), SpeechStarted(at_ms=cut)]``. That turn has no pre-roll,
    so every frame of the long utterance reaches ASR exactly once and nothing waits
    ``start_ms`` again; it ends, is discarded or is cut by the usual rules. If the caller
    was pausing when the cut fell, the detector returns to silence and the next speech
    starts a normal turn.

    Pauses, for speculation (``pause_ms``, None for none): once a turn with at least
    ``min_speech_ms`` of voice has paused for ``pause_ms``, :class:`SpeechPaused` gives the
    utterance so far; if the caller speaks again before the turn ends, :class:`SpeechResumed`
    follows. While paused, the owner may set how long *this* pause must last to end the
    turn (:meth:`end_after`, e.g. shorter when the words so far read finished); the next
    voiced frame restores ``hangover_ms``.
    """

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        start_ms: int = 100,
        hangover_ms: int = 500,
        preroll_ms: int = 300,
        min_speech_ms: int = 200,
        max_turn_s: float = 30.0,
        pause_ms: int | None = None,
        logger: Logger | None = None,
    ) -> None:
        durations = {
            "frame_ms": frame_ms,
            "start_ms": start_ms,
            "hangover_ms": hangover_ms,
            "preroll_ms": preroll_ms,
            "min_speech_ms": min_speech_ms,
            "max_turn_s": max_turn_s,
        }
        for name, value in durations.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if pause_ms is not None and not pause_ms > 0:
            raise ValueError(f"pause_ms must be positive, got {pause_ms!r}")
        if preroll_ms < 200:
            raise ValueError(f"preroll_ms must be at least 200, got {preroll_ms!r}")
        self.frame_ms = frame_ms
        self._start_frames = _frames(start_ms, frame_ms)
        self._default_hangover_frames = _frames(hangover_ms, frame_ms)
        self._pause_event_frames = None if pause_ms is None else _frames(pause_ms, frame_ms)
        self._min_speech_frames = _frames(min_speech_ms, frame_ms)
        self._max_turn_frames = _frames(max_turn_s * 1000, frame_ms)
        self._log = logger if logger is not None else log
        self._debug = self._log.isEnabledFor(logging.DEBUG)

        self._state = TurnState.SILENCE
        self._frames_fed = 0
        self._preroll: deque[bytes] = deque(maxlen=_frames(preroll_ms, frame_ms))
        # The open turn (or start candidate); _reset_turn() empties it.
        self._preroll_audio = b""
        self._utterance: list[bytes] = []
        self._onset_ms = 0
        self._speech_end_ms = 0
        self._voiced_frames = 0
        self._pause_frames = 0
        self._hangover_frames = self._default_hangover_frames
        self._paused_at: int | None = None  # at_ms of this pause's SpeechPaused

    @property
    def state(self) -> TurnState:
        return self._state

    @state.setter
    def state(self, state: TurnState) -> None:
        if self._debug and state is not self._state:
            self._log.debug("turn %s -> %s at %d ms", self._state.name, state.name, self.now_ms)
        self._state = state

    @property
    def now_ms(self) -> int:
        """Milliseconds of audio fed so far: the end of the latest frame."""
        return self._frames_fed * self.frame_ms

    def reset(self) -> None:
        """Drop any turn in progress and the pre-roll, silently.

        The audio clock keeps running: it is the session's clock, and events after a reset
        must stay comparable with events before it.
        """
        self._preroll.clear()
        self._reset_turn()
        self.state = TurnState.SILENCE

    def feed(self, frame: bytes, is_speech: bool) -> list[TurnEvent]:
        """Add one ``frame_ms`` frame with the VAD's verdict on it; return what it caused."""
        onset_ms = self.now_ms
        self._frames_fed += 1
        events: list[TurnEvent] = []
        match self._state:
            case TurnState.SILENCE:
                if is_speech:
                    # Snapshot the ring before this frame: it is the audio before the onset.
                    self._preroll_audio = b"".join(self._preroll)
                    self._onset_ms = onset_ms
                    self.state = TurnState.STARTING
                    self._add(frame, voiced=True)
                    self._maybe_start(events)
            case TurnState.STARTING:
                if is_speech:
                    self._add(frame, voiced=True)
                    self._maybe_start(events)
                else:
                    self._reset_turn()
                    self.state = TurnState.SILENCE
            case TurnState.SPEECH | TurnState.ENDING:
                self._add(frame, voiced=is_speech)
                if is_speech:
                    if self._paused_at is not None:
                        events.append(SpeechResumed(at_ms=onset_ms))
                        self._paused_at = None
                    self._pause_frames = 0
                    self._hangover_frames = self._default_hangover_frames
                    self.state = TurnState.SPEECH
                else:
                    self._pause_frames += 1
                    self.state = TurnState.ENDING
                if self._pause_frames >= self._hangover_frames:
                    events.append(self._end_turn(cut=False))
                elif (
                    self._pause_frames == self._pause_event_frames
                    and self._voiced_frames >= self._min_speech_frames
                    and len(self._utterance) < self._max_turn_frames
                ):
                    self._paused_at = self.now_ms
                    events.append(
                        SpeechPaused(
                            at_ms=self.now_ms,
                            speech_end_ms=self._speech_end_ms,
                            audio=self._preroll_audio + b"".join(self._utterance),
                        )
                    )
                elif len(self._utterance) >= self._max_turn_frames:
                    events.append(self._end_turn(cut=True))
                    if is_speech:
                        self._onset_ms = self.now_ms
                        self.state = TurnState.SPEECH
                        events.append(SpeechStarted(at_ms=self._onset_ms))
        self._preroll.append(frame)
        return events

    def end_after(self, hangover_ms: int, *, pause_at_ms: int) -> list[TurnEvent]:
        """Let the pause that began with the :class:`SpeechPaused` at ``pause_at_ms`` end the
        turn once it has lasted ``hangover_ms``: at once (the returned ``SpeechStopped``) if
        it already has. Ignored, returning nothing, once that pause is over."""
        if self._paused_at != pause_at_ms or self._state is not TurnState.ENDING:
            return []
        self._hangover_frames = _frames(hangover_ms, self.frame_ms)
        if self._pause_frames >= self._hangover_frames:
            return [self._end_turn(cut=False)]
        return []

    def _add(self, frame: bytes, *, voiced: bool) -> None:
        self._utterance.append(frame)
        if voiced:
            self._voiced_frames += 1
            self._speech_end_ms = self.now_ms

    def _maybe_start(self, events: list[TurnEvent]) -> None:
        if self._voiced_frames >= self._start_frames:
            self.state = TurnState.SPEECH
            events.append(SpeechStarted(at_ms=self._onset_ms))

    def _end_turn(self, *, cut: bool) -> TurnEvent:
        event: TurnEvent
        if self._voiced_frames < self._min_speech_frames:
            event = SpeechDiscarded(at_ms=self.now_ms)
        else:
            audio = self._preroll_audio + b"".join(self._utterance)
            event = SpeechStopped(
                at_ms=self.now_ms, speech_end_ms=self._speech_end_ms, audio=audio, cut=cut
            )
        self._reset_turn()
        self.state = TurnState.SILENCE
        return event

    def _reset_turn(self) -> None:
        self._preroll_audio = b""
        self._utterance = []
        self._onset_ms = 0
        self._speech_end_ms = 0
        self._voiced_frames = 0
        self._pause_frames = 0
        self._hangover_frames = self._default_hangover_frames
        self._paused_at = None


def _frames(ms: float, frame_ms: int) -> int:
    """Whole frames covering ``ms``, rounded up so a setting is never undercut."""
    return max(1, math.ceil(ms / frame_ms - 1e-9))
