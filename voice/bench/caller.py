"""Simulated callers: a live microphone and an ear, one class per transport.

:class:`Caller` is what every transport shares. Its microphone is a queue of frames that the
transport's sender takes one per 20 ms, in real time, silence when the script has nothing to
say; ``say()`` queues a recording and returns the caller-clock time its first frame was
captured. The ear (:mod:`voice.bench.ear`) records reply audio with its arrival time, and
events are kept in order. Turn metrics are computed from the ear, not from server events.

:class:`NativeCaller` speaks the native protocol; ``voice.bench.twilio`` and
``voice.bench.webrtc`` hold the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, SPEECH_RATE, PcmFrame, frame_bytes
from voice.audio.resample import resample
from voice.bench.ear import Ear

MIC_STALL_S = 10.0
"""How far behind its audio a caller's microphone may fall before it counts as stalled."""


class Caller:
    """Connect with ``async with``; talk with ``say()``; read ``events``, ``errors``, ``ear``."""

    interrupt_event = "response.interrupted"
    """The event type that tells this caller its reply was cut."""

    def __init__(self, ear: Ear) -> None:
        self.ear = ear
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self._mic: deque[bytes] = deque()
        self._first_sent: asyncio.Future[float] | None = None
        self._spoken = asyncio.Event()
        self._new_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Caller:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def say(self, audio: PcmFrame) -> float:
        """Queue ``audio``; returns, once it is being sent, when its first sample was spoken
        (caller clock): recording offsets add to this to give caller-clock times."""
        self._spoken.clear()
        self._mic.extend(self._frames(audio))
        self._first_sent = asyncio.get_running_loop().create_future()
        return await self._first_sent

    def _frames(self, audio: PcmFrame) -> Iterable[bytes]:
        """``audio`` cut into the transport's 20 ms frames, the last one padded."""
        raise NotImplementedError

    def _next_frame(self, captured: float) -> bytes | None:
        """The microphone's frame captured at ``captured``: queued speech, or None (silence)."""
        if not self._mic:
            return None
        frame = self._mic.popleft()
        first = self._first_sent
        if first is not None and not first.done():
            first.set_result(captured)
        if not self._mic:
            self._spoken.set()
        return frame

    def hush(self) -> None:
        """Drop what is queued but not yet sent (the caller starts something else)."""
        self._mic.clear()
        self._spoken.set()

    async def until_spoken(self) -> None:
        """Wait until everything queued has been sent, or the line is gone.

        A transport whose sender stopped pulling frames (a stalled WebRTC connection) would
        keep this waiting for ever: past the queued audio's length plus
        :data:`MIC_STALL_S`, the rest is dropped and ``microphone_stalled`` recorded.
        """
        try:
            async with asyncio.timeout(len(self._mic) * FRAME_MS / 1000.0 + MIC_STALL_S):
                await self._spoken.wait()
        except TimeoutError:
            self.errors.append("microphone_stalled")
            self.hush()

    def _record(self, now: float, event: dict[str, Any]) -> None:
        self.events.append((now, event))
        self._new_event.set()

    def _hung_up(self, why: str | None = None) -> None:
        """The line is gone (``why``, if it broke): record that once, and wake every waiter."""
        if why is not None and not self.closed.is_set():
            self.errors.append(f"connection_closed: {why}")
        self.closed.set()
        self._new_event.set()
        self._spoken.set()  # nothing more will be sent

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, since: int, timeout_s: float
    ) -> tuple[float, dict[str, Any]] | None:
        """The first event from index ``since`` on that matches; None on timeout or close."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for at, event in self.events[since:]:
                        if predicate(event):
                            return at, event
                    since = len(self.events)
                    if self.closed.is_set():
                        return None
                    self._new_event.clear()
                    await self._new_event.wait()
        except TimeoutError:
            return None

    async def reply_finished(
        self, *, since: int, after: float, timeout_s: float, completed: bool = False
    ) -> dict[str, float | None] | None:
        """Wait for ``response.done`` (only a non-interrupted one if ``completed``); return
        its server timings, or None on timeout."""

        def done(event: dict[str, Any]) -> bool:
            if event.get("type") != "response.done":
                return False
            return not completed or event.get("status") != "interrupted"

        found = await self.wait_for(done, since=since, timeout_s=timeout_s)
        return None if found is None else found[1].get("timings")


async def real_time(frame_s: float, send: Callable[[float], Any]) -> None:
    """Call ``send(captured)`` once per frame as a live microphone would, forever.

    Each frame leaves once its time has elapsed; ``captured`` is when its audio began, taken
    from the schedule, not from when a busy load generator got round to sending, so a
    lagging client can only make latencies look worse, never better.
    """
    started = time.monotonic()
    n = 0
    while True:
        captured = started + n * frame_s
        n += 1
        delay = captured + frame_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(captured)


class NativeCaller(Caller):
    """A caller on the native protocol: PCM16 binary frames and JSON events."""

    def __init__(self, url: str, *, input_rate: int = 16_000) -> None:
        super().__init__(Ear(SPEECH_RATE))
        self.url = url
        self.input_rate = input_rate
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> NativeCaller:
        self._ws = await connect(self.url, max_size=2**22, open_timeout=10)
        session = {
            "input_audio": {"format": "pcm16", "sample_rate": self.input_rate},
            "output_audio": {"format": "pcm16", "sample_rate": SPEECH_RATE},
        }
        await self._ws.send(json.dumps({"type": "session.update", "session": session}))
        self._tasks = [
            asyncio.create_task(real_time(FRAME_MS / 1000.0, self._send)),
            asyncio.create_task(self._receive()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._ws is not None:
            await self._ws.close()

    def _frames(self, audio: PcmFrame) -> Iterable[bytes]:
        pcm = audio.pcm
        if audio.sample_rate != self.input_rate:
            pcm = resample(pcm, audio.sample_rate, self.input_rate)
        step = frame_bytes(self.input_rate, FRAME_MS)
        return (pcm[i : i + step].ljust(step, b"\0") for i in range(0, len(pcm), step))

    async def _send(self, captured: float) -> None:
        assert self._ws is not None
        frame = self._next_frame(captured)
        await self._ws.send(frame or bytes(frame_bytes(self.input_rate, FRAME_MS)))

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.ear.receive(message, now)
                    continue
                event = json.loads(message)
                if event.get("type") == "response.interrupted":
                    self.ear.flush(now)  # a caller drops reply audio it still holds
                if event.get("type") == "error":
                    self.errors.append(event.get("code", "error"))
                self._record(now, event)
        except (ConnectionClosed, OSError) as exc:
            self._hung_up(str(exc))
        finally:
            self._hung_up()
