"""The JSON event protocol shared by the native WebSocket and the WebRTC data channel.

Client messages are pydantic models discriminated on ``type`` and parsed here, at the edge;
server events are built from :mod:`voice.core.events` by :func:`event_to_wire`. The protocol
is documented in docs/protocol.md; change both together.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from websockets.frames import CloseCode

from voice.config import PCM_RATES, GatewaySettings
from voice.core.events import (
    GOING_AWAY,
    AudioDone,
    DtmfReceived,
    ErrorEvent,
    ResponseDone,
    ResponseInterrupted,
    ResponseStarted,
    SessionEnded,
    SessionEvent,
    SpeechDiscarded,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    Transcript,
)
from voice.errors import AudioFormatError, ProtocolError
from voice.gateway.base import DEFAULT_TASK_TYPE, ReferenceVoice, Voice, check_ref_audio


def hangup_code(reason: str) -> CloseCode:
    """How a WebSocket closes when the server ends its session for ``reason``: 1001 when
    the server is going away, else 1000 (RFC 6455 §7.4.1)."""
    return CloseCode.GOING_AWAY if reason == GOING_AWAY else CloseCode.NORMAL_CLOSURE


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AudioFormat(_Message):
    format: Literal["pcm16"] = "pcm16"
    sample_rate: int = 16_000

    def model_post_init(self, _context: Any) -> None:
        if self.sample_rate not in PCM_RATES:
            rates = ", ".join(str(r) for r in PCM_RATES)
            raise AudioFormatError(
                f"sample_rate {self.sample_rate} is not supported; use one of {rates} Hz"
            )


class VoiceRef(_Message):
    """A reference-audio (cloned) voice, as a caller sets it: the recording as a
    ``data:audio/wav;base64,`` URL or an ``http(s)`` URL the gateway fetches, and its words."""

    ref_audio: str = Field(min_length=1)
    ref_text: str = Field(min_length=1, max_length=2000)
    task_type: str = Field(
        default=DEFAULT_TASK_TYPE, min_length=1, max_length=40, pattern=r"^[A-Za-z][\w-]*$"
    )

    @field_validator("ref_audio")
    @classmethod
    def _check_audio(cls, audio: str) -> str:
        check_ref_audio(audio)
        return audio

    def to_voice(self) -> ReferenceVoice:
        return ReferenceVoice(self.ref_audio, self.ref_text, self.task_type)


class SessionConfig(_Message):
    """Fields a caller may set; every one is optional in an update."""

    input_audio: AudioFormat | None = None
    output_audio: AudioFormat | None = None
    instructions: str | None = Field(default=None, max_length=20_000)
    voice: str | None = Field(default=None, max_length=200)
    voice_ref: VoiceRef | None = None
    """A cloned voice instead of a named one, where the operator allows it."""

    def chosen_voice(self) -> Voice:
        """The voice this update asks for, if any; both kinds at once is an error."""
        if self.voice is not None and self.voice_ref is not None:
            raise ProtocolError(
                "set voice (a named voice) or voice_ref (a reference-audio voice), not both",
                code="invalid_session_update",
            )
        return self.voice_ref.to_voice() if self.voice_ref is not None else self.voice


def voice_fields(voice: Voice, settings: GatewaySettings) -> dict[str, Any]:
    """How ``session.created``/``session.updated`` describe a session's voice: ``voice``,
    its name (or null), and ``voice_ref`` (or null): a reference voice's words and task,
    never its audio."""
    if voice is None and settings.tts_ref_audio is not None:
        ref = {"ref_text": settings.tts_ref_text, "task_type": settings.tts_task_type}
        return {"voice": None, "voice_ref": ref}
    if isinstance(voice, ReferenceVoice):
        ref = {"ref_text": voice.text, "task_type": voice.task_type}
        return {"voice": None, "voice_ref": ref}
    return {"voice": voice or settings.tts_voice, "voice_ref": None}


class SessionUpdate(_Message):
    type: Literal["session.update"]
    session: SessionConfig


class ResponseCancel(_Message):
    type: Literal["response.cancel"]


ClientEvent = Annotated[SessionUpdate | ResponseCancel, Field(discriminator="type")]
_client_events: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


def parse_client_event(text: str) -> ClientEvent:
    """Parse one text message; raises ProtocolError or AudioFormatError with a clear message."""
    try:
        return _client_events.validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ProtocolError(f"message is not valid JSON: {err['msg']}") from None
        if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            raise ProtocolError(
                "unknown or missing event type; expected one of: session.update, response.cancel",
                code="unknown_event",
            ) from None
        where = ".".join(str(p) for p in err["loc"][1:]) or "message"
        raise ProtocolError(f"{where}: {err['msg']}") from None
    except AudioFormatError:
        raise


def event_to_wire(event: SessionEvent) -> dict[str, Any]:
    """A session event as the JSON object sent to the caller."""
    match event:
        case SpeechStarted(at_ms=at):
            return {"type": "input.speech_started", "audio_start_ms": at}
        case SpeechStopped(at_ms=at, speech_end_ms=end, cut=cut):
            return {
                "type": "input.speech_stopped",
                "audio_end_ms": end,
                "turn_end_ms": at,
                "cut": cut,
                "discarded": False,
            }
        case SpeechDiscarded(at_ms=at):
            return {
                "type": "input.speech_stopped",
                "audio_end_ms": None,
                "turn_end_ms": at,
                "cut": False,
                "discarded": True,
            }
        case Transcript(text=text):
            return {"type": "input.transcript", "text": text}
        case ResponseStarted(response_id=rid):
            return {"type": "response.started", "response_id": rid}
        case TextDelta(response_id=rid, text=text):
            return {"type": "response.text.delta", "response_id": rid, "delta": text}
        case AudioDone(response_id=rid):
            return {"type": "response.audio.done", "response_id": rid}
        case ResponseInterrupted(response_id=rid, heard_text=heard):
            return {"type": "response.interrupted", "response_id": rid, "heard_text": heard}
        case ResponseDone(
            response_id=rid,
            text=text,
            status=status,
            timings=timings,
            record=record,
            speculation=speculation,
        ):
            return {
                "type": "response.done",
                "response_id": rid,
                "status": status,
                "text": text,
                "timings": timings.as_dict(),
                "record": record.as_dict(),
                "speculation": speculation.as_dict(),
            }
        case ErrorEvent(code=code, message=message):
            return {"type": "error", "code": code, "message": message}
        case SessionEnded(reason=reason, message=message):
            return {"type": "session.ended", "reason": reason, "message": message}
        case DtmfReceived(digit=digit):
            return {"type": "input.dtmf", "digit": digit}
