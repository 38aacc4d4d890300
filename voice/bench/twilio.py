"""One simulated phone call on the Twilio Media Streams protocol: a carrier's far end.

It speaks as Twilio does (``connected``, ``start``, one 20 ms mu-law ``media`` per 20 ms,
``stop``), plays reply audio on the ear's timeline, echoes each ``mark`` once the audio
queued before it has played, and on ``clear`` drops what it holds and returns the marks.
Works against any server speaking the protocol. The protocol carries no server timings and
no end-of-reply event: a reply counts as finished once it has been heard and then nothing
more arrived for ``QUIET_S``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, PcmFrame
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample
from voice.bench.ear import Ear

RATE = 8_000
FRAME = RATE * FRAME_MS // 1000  # mu-law bytes per 20 ms
QUIET_S = 1.0
"""Silence from the server that marks the end of a reply on a protocol with no such event."""


class TwilioCaller:
    """The same surface as :class:`~voice.bench.caller.NativeCaller`, over Twilio media."""

    def __init__(self, url: str, *, index: int = 0) -> None:
        self.url = url
        self.sid = f"MZbench{index:025d}"
        self.ear = Ear(RATE)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self.last_media_at = 0.0
        self._mic: deque[bytes] = deque()
        self._first_sent: asyncio.Future[float] | None = None
        self._spoken = asyncio.Event()
        self._new_event = asyncio.Event()
        self._marks: deque[tuple[float, str]] = deque()  # (due time, name)
        self._play_end = 0.0
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0

    interrupt_event = "clear"
    """What tells this caller its reply was cut: Twilio's ``clear``."""

    def _next_seq(self) -> int:
        # Taken before any await: the sender and the mark echo share one numbering.
        self._seq += 1
        return self._seq

    async def __aenter__(self) -> TwilioCaller:
        self._ws = await connect(self.url, max_size=2**22, open_timeout=10)
        await self._ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        start = {
            "accountSid": "AC" + "0" * 32,
            "streamSid": self.sid,
            "callSid": "CA" + self.sid[2:],
            "tracks": ["inbound"],
            "customParameters": {"bench": "1"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
        }
        await self._send_event("start", self._next_seq(), start)
        self._tasks = [
            asyncio.create_task(self._send()),
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._echo_marks()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            try:
                await self._send_event("stop", self._next_seq(), {"callSid": "CA" + self.sid[2:]})
            except ConnectionClosed:
                pass
            await self._ws.close()

    async def say(self, audio: PcmFrame) -> float:
        pcm = (
            resample(audio.pcm, audio.sample_rate, RATE) if audio.sample_rate != RATE else audio.pcm
        )
        ulaw = mulaw_encode(pcm)
        self._spoken.clear()
        self._mic.extend(
            ulaw[i : i + FRAME].ljust(FRAME, b"\xff") for i in range(0, len(ulaw), FRAME)
        )
        self._first_sent = asyncio.get_running_loop().create_future()
        return await self._first_sent

    def hush(self) -> None:
        self._mic.clear()
        self._spoken.set()

    async def until_spoken(self) -> None:
        await self._spoken.wait()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, since: int, timeout_s: float
    ) -> tuple[float, dict[str, Any]] | None:
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
        """Wait until a reply was heard after ``after`` and the line has gone quiet; the
        protocol carries no timings, so this returns None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.closed.is_set():
            heard = self.ear.onset_after(after) is not None
            now = time.monotonic()
            if heard and now - self.last_media_at > QUIET_S and now > self._play_end:
                return None
            await asyncio.sleep(0.05)
        return None

    async def _send_event(self, event: str, seq: int, body: dict[str, Any]) -> None:
        assert self._ws is not None
        message = {"event": event, "sequenceNumber": str(seq), "streamSid": self.sid, event: body}
        await self._ws.send(json.dumps(message))

    async def _send(self) -> None:
        silence = b"\xff" * FRAME  # mu-law silence
        started = time.monotonic()
        n = 0
        while True:
            captured = started + n * FRAME_MS / 1000.0
            n += 1
            delay = captured + FRAME_MS / 1000.0 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._mic:
                frame = self._mic.popleft()
                if self._first_sent is not None and not self._first_sent.done():
                    self._first_sent.set_result(captured)
                if not self._mic:
                    self._spoken.set()
            else:
                frame = silence
            media = {
                "track": "inbound",
                "chunk": str(n),
                "timestamp": str(n * FRAME_MS),
                "payload": base64.b64encode(frame).decode(),
            }
            await self._send_event("media", self._next_seq(), media)

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.errors.append("binary_frame")  # Twilio rejects these (31950)
                    continue
                event = json.loads(message)
                kind = event.get("event")
                if kind == "media":
                    pcm = mulaw_decode(base64.b64decode(event["media"]["payload"]))
                    self.ear.receive(pcm, now)
                    self._play_end = max(now, self._play_end) + len(pcm) / 2 / RATE
                    self.last_media_at = now
                elif kind == "mark":
                    self._marks.append((max(now, self._play_end), event["mark"]["name"]))
                elif kind == "clear":
                    self.ear.flush(now)
                    self._play_end = now
                    self._marks = deque((now, name) for _, name in self._marks)
                else:
                    self.errors.append(f"unexpected_event: {kind}")
                self.events.append((now, {"type": kind}))
                self._new_event.set()
        except (ConnectionClosed, OSError) as exc:
            self.errors.append(f"connection_closed: {exc}")
        finally:
            self.closed.set()
            self._new_event.set()

    async def _echo_marks(self) -> None:
        while True:
            now = time.monotonic()
            while self._marks and self._marks[0][0] <= now:
                _, name = self._marks.popleft()
                await self._send_event("mark", self._next_seq(), {"name": name})
            await asyncio.sleep(0.01)
