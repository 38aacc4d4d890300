"""The one interface to inference: the :class:`Gateway` protocol.

Three kinds of work (transcribe, chat, speak) plus model listing and connection warm-up.
Implementations: ``http.HttpGateway`` (any OpenAI-compatible gateway), ``simulated``
(scripted latencies and faults), ``local`` (embedded offline engines).

Streams are async iterators. The consumer closes them early by cancelling the task that
iterates, or with ``contextlib.aclosing``; an implementation must release its request
(close the HTTP stream) when that happens. Errors are :class:`voice.errors.GatewayError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from voice.audio.frames import PcmFrame
from voice.core.dialog import ChatMessage


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
