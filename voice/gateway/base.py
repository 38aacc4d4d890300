"""The one interface to inference: the :class:`Gateway` protocol.

Three kinds of work (transcribe, chat, speak) plus model listing and connection warm-up.
Implementations: ``http.HttpGateway`` (any OpenAI-compatible gateway), ``simulated``
(scripted latencies and faults), ``local`` (embedded offline engines).

Speech has a voice: a name, or a :class:`ReferenceVoice` (a recording and its words, for a
cloned voice); ``None`` is the voice the gateway was configured with. Each call may be
given a :class:`~voice.core.record.GatewayCall` that the gateway fills in as the request
goes (request id, idempotency key, attempts, receipts): the turn's record.

Streams are async iterators. The consumer closes them early by cancelling the task that
iterates, or with :func:`closing`; an implementation must release its request (close the
HTTP stream) when that happens. Errors are :class:`voice.errors.GatewayError`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from voice.audio.frames import PcmFrame
from voice.core.dialog import ChatMessage
from voice.core.record import GatewayCall

T = TypeVar("T")

DEFAULT_TASK_TYPE = "Base"
"""Qwen3-TTS's voice-cloning task, RunInfra's default for a reference-audio voice."""


@dataclass(frozen=True, slots=True)
class ReferenceVoice:
    """A cloned voice: ``audio`` (a ``data:audio/...;base64,`` URL or an ``http(s)://`` URL
    the gateway fetches), the words said in it, and the synthesis task. Raises
    :class:`ValueError` naming what is wrong with a field."""

    audio: str = field(repr=False)
    text: str
    task_type: str = DEFAULT_TASK_TYPE

    def __post_init__(self) -> None:
        check_ref_audio(self.audio)
        if not self.text.strip():
            raise ValueError("ref_text must say the words spoken in ref_audio")
        if not self.task_type.strip():
            raise ValueError("task_type must not be empty")


def check_ref_audio(audio: str) -> None:
    """Refuse reference audio that is neither base64 audio in a ``data:`` URL nor an
    ``http(s)`` URL (a path on this server is never accepted here)."""
    if audio.startswith("data:"):
        head, sep, payload = audio.partition(",")
        if not sep or not head.startswith("data:audio/") or not head.endswith(";base64"):
            raise ValueError("ref_audio as a data URL must be data:audio/<type>;base64,<audio>")
        try:
            decoded = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("ref_audio's data URL does not hold valid base64") from None
        if not decoded:
            raise ValueError("ref_audio's data URL holds no audio")
        return
    parts = urlsplit(audio)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError(
            "ref_audio must be an http(s) URL or a data:audio/...;base64, URL "
            "(no credentials in the URL)"
        )


Voice = str | ReferenceVoice | None
"""A named voice, a cloned one, or ``None``: the one the gateway is configured with."""


class Gateway(Protocol):
    async def transcribe(
        self, wav: bytes, *, prompt: str | None = None, call: GatewayCall | None = None
    ) -> str:
        """Text of the speech in ``wav`` (a complete WAV file, any rate). ``prompt``: the
        words said just before it, which the audio continues (OpenAI's ``prompt``)."""
        ...

    def chat(
        self, messages: Sequence[ChatMessage], *, call: GatewayCall | None = None
    ) -> AsyncIterator[str]:
        """Stream the assistant's reply to ``messages`` as text deltas."""
        ...

    def speak(
        self, text: str, *, voice: Voice = None, call: GatewayCall | None = None
    ) -> AsyncIterator[PcmFrame]:
        """Stream speech for ``text`` as PCM16 mono chunks, in order, as they arrive."""
        ...

    async def models(self) -> list[str]:
        """Ids of the models the gateway serves."""
        ...

    async def warm(self) -> None:
        """Open connections ahead of the first request; cheap to call often."""
        ...

    async def aclose(self) -> None:
        """Release connections and engines."""
        ...


@asynccontextmanager
async def closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Yield ``stream`` and close it however the block is left.

    Async generators have ``aclose``; the protocol promises only an ``AsyncIterator``, so a
    stream without one is left as it is (``contextlib.aclosing`` would fail on it).
    """
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
