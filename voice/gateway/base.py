"""The one interface to inference: the :class:`Gateway` protocol.

Three kinds of work (transcribe, chat, speak) plus model listing and connection warm-up.
Implementations: ``http.HttpGateway`` (any OpenAI-compatible gateway), ``simulated``
(scripted latencies and faults), ``local`` (embedded offline engines).

Streams are async iterators. The consumer closes them early by cancelling the task that
iterates, or with :func:`closing`; an implementation must release its request (close the
HTTP stream) when that happens. Errors are :class:`voice.errors.GatewayError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from voice.audio.frames import PcmFrame
from voice.core.dialog import ChatMessage

T = TypeVar("T")


class Gateway(Protocol):
    async def transcribe(self, wav: bytes) -> str:
        """Text of the speech in ``wav`` (a complete WAV file, any rate)."""
        ...

    def chat(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Stream the assistant's reply to ``messages`` as text deltas."""
        ...

    def speak(self, text: str, *, voice: str | None = None) -> AsyncIterator[PcmFrame]:
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
