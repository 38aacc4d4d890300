"""The pipeline's event vocabulary: what happened in a session, free of any wire format.

Transports translate these into their own messages (JSON on the native WebSocket and the
WebRTC data channel; marks and clears on Twilio). Times named ``*_ms`` with an ``at`` are on
the session's audio clock: milliseconds of caller audio received since the session started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voice.core.record import SpeculationTally, TurnRecord


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking; ``at_ms`` is the first voiced frame (onset)."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """End of turn: ``audio`` is the utterance (PCM16 at the frames' rate, with pre-roll).

    ``speech_end_ms`` is the end of the last voiced frame; ``at_ms`` is when the turn was
    declared over, so ``at_ms - speech_end_ms`` is the hangover the caller waited (vad_ms).
    ``cut`` is true when the turn hit the maximum length rather than a pause.
    """

    at_ms: int
    speech_end_ms: int
    audio: bytes = field(repr=False)
    cut: bool = False


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """The caller has paused for ``pause_ms`` inside a turn that is long enough to answer;
    the turn is not over yet. ``audio`` is the utterance so far (as :class:`SpeechStopped`
    would give it), for a speculative transcription. Internal: not sent to callers."""

    at_ms: int
    speech_end_ms: int
    audio: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The caller spoke again after a :class:`SpeechPaused`: the same turn goes on, and
    anything started at the pause is void. Internal: not sent to callers."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    """Speech ended but was too short to be a turn (a cough, a click): nothing is sent to ASR."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the caller said in the turn that just ended."""

    text: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Reply text as the LLM writes it."""

    response_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AudioDone:
    """All reply audio for the response has been handed to the transport."""

    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseInterrupted:
    """The caller talked over the reply; ``heard_text`` is what they heard of it."""

    response_id: str
    heard_text: str


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """Per-turn latency, milliseconds, measured from the caller's end of speech.

    ``overhead_ms`` is the pipeline's own cost: ``first_audio_ms`` less the time spent
    waiting on VAD hangover, ASR, the LLM up to the first sentence, and TTS's first byte.
    A stage that did not run is ``None``.
    """

    vad_ms: float | None = None
    asr_ms: float | None = None
    llm_ttft_ms: float | None = None
    first_sentence_ms: float | None = None
    tts_ttfb_ms: float | None = None
    first_audio_ms: float | None = None

    @property
    def overhead_ms(self) -> float | None:
        parts = (self.vad_ms, self.asr_ms, self.first_sentence_ms, self.tts_ttfb_ms)
        if self.first_audio_ms is None or any(p is None for p in parts):
            return None
        return self.first_audio_ms - sum(p for p in parts if p is not None)

    def as_dict(self) -> dict[str, float | None]:
        return {
            "vad_ms": self.vad_ms,
            "asr_ms": self.asr_ms,
            "llm_ttft_ms": self.llm_ttft_ms,
            "first_sentence_ms": self.first_sentence_ms,
            "tts_ttfb_ms": self.tts_ttfb_ms,
            "first_audio_ms": self.first_audio_ms,
            "overhead_ms": self.overhead_ms,
        }


ResponseStatus = Literal["completed", "interrupted", "failed"]


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The reply ended; ``text`` is what the dialog kept (what the caller heard), ``record``
    the gateway requests it made, ``speculation`` what speculating on its turns cost."""

    response_id: str
    text: str
    status: ResponseStatus
    timings: TurnTimings
    record: TurnRecord = field(default_factory=TurnRecord)
    speculation: SpeculationTally = field(default_factory=SpeculationTally)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something went wrong that the caller should know; ``code`` is stable (see errors.py)."""

    code: str
    message: str


GOING_AWAY = "going_away"
"""The reason a session ends when its server stops (a drain ran out of time): its
WebSocket closes 1001, not 1000."""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The server ends the session (``reason``: ``idle``, ``max_duration``,
    :data:`GOING_AWAY`, ...); the last event before the transport closes."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a telephone key (``0-9``, ``*``, ``#``, ``A-D``)."""

    digit: str


TurnEvent = SpeechStarted | SpeechStopped | SpeechDiscarded | SpeechPaused | SpeechResumed
SessionEvent = (
    SpeechStarted
    | SpeechStopped
    | SpeechDiscarded
    | Transcript
    | ResponseStarted
    | TextDelta
    | AudioDone
    | ResponseInterrupted
    | ResponseDone
    | ErrorEvent
    | DtmfReceived
    | SessionEnded
)
