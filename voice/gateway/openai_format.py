"""The OpenAI-compatible wire format, as :mod:`voice.gateway.server` speaks it.

Request bodies as pydantic models (parsed at the edge, so handlers see typed objects), and
the response encodings as plain functions and stream transforms: ``chat.completion`` JSON,
``chat.completion.chunk`` SSE events, raw ``pcm`` and streamed ``wav`` speech. Nothing here
touches a socket or the clock beyond a ``created`` timestamp; the transforms only reshape the
gateway's streams and always close the stream they read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voice.audio.frames import SAMPLE_WIDTH, SPEECH_RATE, PcmFrame
from voice.core.dialog import ChatMessage, Role
from voice.errors import GatewayProtocolError
from voice.gateway.base import DEFAULT_TASK_TYPE, ReferenceVoice, closing

STREAMING_SIZE = 0xFFFFFFFF
"""RIFF and data sizes in a streamed WAV header: the length is unknown when it is sent."""

MAX_SPEECH_INPUT = 4096
"""Longest text one speech request may carry (OpenAI's limit)."""
MAX_REF_TEXT = 2000
"""Longest transcript of a reference recording."""


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class InMessage(BaseModel):
    """One chat message as clients send it: text, or a list of text parts."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def to_chat(self) -> ChatMessage:
        # "developer" is the newer name OpenAI gives the system role.
        role: Role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return ChatMessage(role, self.content)
        return ChatMessage(role, "".join(part.text for part in self.content))


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``."""

    # Clients send many sampling options we have no use for; accept and ignore them.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[InMessage] = Field(min_length=1)
    stream: bool = False


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``: a named ``voice``, or RunInfra's reference-audio voice
    (``ref_audio`` and ``ref_text``, with an optional ``task_type``)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=MAX_SPEECH_INPUT)
    voice: str | None = None
    response_format: Literal["pcm", "wav"] = "pcm"
    """OpenAI defaults to mp3, which we do not encode; without a format we send pcm."""
    ref_audio: str | None = Field(default=None, min_length=1, repr=False)
    ref_text: str | None = Field(default=None, min_length=1, max_length=MAX_REF_TEXT)
    task_type: str | None = Field(default=None, min_length=1, max_length=40)

    @model_validator(mode="after")
    def _one_voice(self) -> SpeechRequest:
        if (self.ref_audio is None) != (self.ref_text is None):
            raise ValueError("ref_audio and ref_text go together: send both, or neither")
        if self.ref_audio is not None and self.voice is not None:
            raise ValueError("send a named voice or ref_audio + ref_text, not both")
        if self.ref_audio is not None:
            self.reference()  # raises ValueError for audio we cannot take
        return self

    def reference(self) -> ReferenceVoice | None:
        """The reference-audio voice asked for, if any."""
        if self.ref_audio is None or self.ref_text is None:
            return None
        return ReferenceVoice(self.ref_audio, self.ref_text, self.task_type or DEFAULT_TASK_TYPE)


def chat_completion(model: str, text: str) -> dict[str, Any]:
    """A whole ``chat.completion`` object holding the reply ``text``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }


def error_body(message: str, type_: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code}}


async def sse_chunks(deltas: AsyncIterator[str], model: str) -> AsyncIterator[bytes]:
    """SSE ``chat.completion.chunk`` events: role, content deltas, finish, then ``[DONE]``.

    Nothing is produced before the first delta arrives, so a gateway error up front can still
    become an HTTP error status rather than a stream that starts and fails.
    """
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def event(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n"

    started = False
    async with closing(deltas):
        async for text in deltas:
            if not started:
                started = True
                yield event({"role": "assistant", "content": ""})
            yield event({"content": text})
    if not started:
        yield event({"role": "assistant", "content": ""})
    yield event({}, "stop")
    yield b"data: [DONE]\n\n"


async def pcm_bytes(frames: AsyncIterator[PcmFrame]) -> AsyncIterator[bytes]:
    """Speech as raw 24 kHz s16le; other rates are an error (we do not resample here)."""
    async with closing(frames):
        async for frame in frames:
            if frame.sample_rate != SPEECH_RATE:
                raise GatewayProtocolError(
                    f"the gateway produced {frame.sample_rate} Hz speech; response_format "
                    f"pcm is {SPEECH_RATE} Hz (ask for wav instead)"
                )
            yield frame.pcm


async def wav_bytes(frames: AsyncIterator[PcmFrame]) -> AsyncIterator[bytes]:
    """Speech as a streamed WAV: a header of unknown length at the first frame's rate, then
    the samples as they come."""
    rate: int | None = None
    async with closing(frames):
        async for frame in frames:
            if rate is None:
                rate = frame.sample_rate
                yield wav_stream_header(rate) + frame.pcm
            elif frame.sample_rate != rate:
                raise GatewayProtocolError(
                    f"speech changed rate mid-stream: {rate} -> {frame.sample_rate} Hz"
                )
            else:
                yield frame.pcm
    if rate is None:
        yield wav_stream_header(SPEECH_RATE)


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte PCM16 mono WAV header with both sizes 0xFFFFFFFF ("until the end")."""
    fields = (
        (16, 4),  # fmt chunk size
        (1, 2),  # PCM
        (1, 2),  # mono
        (sample_rate, 4),
        (sample_rate * SAMPLE_WIDTH, 4),  # byte rate
        (SAMPLE_WIDTH, 2),  # block align
        (8 * SAMPLE_WIDTH, 2),  # bits per sample
    )
    fmt = b"".join(value.to_bytes(size, "little") for value, size in fields)
    size = STREAMING_SIZE.to_bytes(4, "little")
    return b"RIFF" + size + b"WAVEfmt " + fmt + b"data" + size
