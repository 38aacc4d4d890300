"""One simulated caller on the native protocol: a live microphone and an ear.

The microphone sends 20 ms frames in real time, silence when the script has nothing to say;
``say()`` queues a recording and returns the caller-clock time its first frame leaves. The
ear records every reply chunk with its arrival time, and events are kept in order. Turn
metrics are computed from the ear (:mod:`voice.bench.ear`), not from server events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, PcmFrame, frame_bytes
from voice.audio.resample import resample
from voice.bench.ear import Ear

OUTPUT_RATE = 24_000


class NativeCaller:
    """Connect with ``async with``; talk with ``say()``; read ``events`` and ``ear``."""

    def __init__(self, url: str, *, input_rate: int = 16_000) -> None:
        self.url = url
        self.input_rate = input_rate
        self.ear = Ear(OUTPUT_RATE)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[str] = []
        self._mic: deque[bytes] = deque()
        self._first_sent: asyncio.Future[float] | None = None
        self._spoken = asyncio.Event()
        self._new_event = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    async def __aenter__(self) -> NativeCaller:
        self._ws = await connect(self.url, max_size=2**22, open_timeout=10)
        session = {
            "input_audio": {"format": "pcm16", "sample_rate": self.input_rate},
            "output_audio": {"format": "pcm16", "sample_rate": OUTPUT_RATE},
        }
        await self._ws.send(json.dumps({"type": "session.update", "session": session}))
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    async def say(self, audio: PcmFrame) -> float:
        """Queue ``audio``; returns, once it is being sent, when its first sample was spoken
        (caller clock): recording offsets add to this to give caller-clock times."""
        pcm = audio.pcm
        if audio.sample_rate != self.input_rate:
            pcm = resample(pcm, audio.sample_rate, self.input_rate)
        step = frame_bytes(self.input_rate, FRAME_MS)
        frames = [pcm[i : i + step].ljust(step, b"\0") for i in range(0, len(pcm), step)]
        self._spoken.clear()
        self._mic.extend(frames)
        self._first_sent = asyncio.get_running_loop().create_future()
        return await self._first_sent

    interrupt_event = "response.interrupted"
    """What tells this caller its reply was cut."""

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

    def hush(self) -> None:
        """Drop what is queued but not yet sent (the caller starts something else)."""
        self._mic.clear()
        self._spoken.set()

    async def until_spoken(self) -> None:
        """Wait until everything queued has been sent."""
        await self._spoken.wait()

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

    async def _send(self) -> None:
        assert self._ws is not None
        step = frame_bytes(self.input_rate, FRAME_MS)
        silence = bytes(step)
        started = time.monotonic()
        n = 0
        while True:
            # Each frame leaves once its 20 ms have elapsed, as from a live microphone. Its
            # audio began at ``captured``: times are taken from this schedule, not from when
            # a busy load generator got round to sending, so a lagging client can only make
            # latencies look worse, never better.
            captured = started + n * FRAME_MS / 1000.0
            n += 1
            delay = captured + FRAME_MS / 1000.0 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._mic:
                frame = self._mic.popleft()
                first = self._first_sent
                if first is not None and not first.done():
                    first.set_result(captured)
                if not self._mic:
                    self._spoken.set()
            else:
                frame = silence
            await self._ws.send(frame)

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
                self.events.append((now, event))
                self._new_event.set()
        except (ConnectionClosed, OSError) as exc:
            self.errors.append(f"connection_closed: {exc}")
        finally:
            self.closed.set()
            self._new_event.set()
