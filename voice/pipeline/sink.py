"""What the pipeline writes to: a transport's sink for reply audio, and its events out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from voice.audio.frames import PcmFrame
from voice.core.events import SessionEvent

Emit = Callable[[SessionEvent], None]
"""Hands one event to the transport; never blocks (transports queue, bounded)."""

Hangup = Callable[[str], None]
"""Asks the transport to end the call, for the reason given (``idle``, ...), after the
events already emitted have gone out; never blocks."""


class AudioSink(Protocol):
    """Reply audio towards the caller: paced, clearable, and aware of what was played.

    ``played_ms`` is the transport's best knowledge of the reply audio the caller has
    heard since ``start_response()``: a playhead model for pushed PCM, echoed marks for
    Twilio, RTP timestamps for WebRTC.
    """

    first_sent_at: float | None

    async def write(self, frame: PcmFrame) -> None: ...

    async def finish(self) -> None: ...

    async def wait_played(self) -> None: ...

    def clear(self) -> None: ...

    def start_response(self) -> None: ...

    def played_ms(self) -> float: ...


class NullSink:
    """Reply audio with nowhere to go: a session's sink until its transport attaches one."""

    first_sent_at: float | None = None

    async def write(self, frame: PcmFrame) -> None:
        pass

    async def finish(self) -> None:
        pass

    async def wait_played(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def start_response(self) -> None:
        pass

    def played_ms(self) -> float:
        return 0.0
