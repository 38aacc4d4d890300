"""Simulated callers: a live microphone and an ear, one class per transport.

:class:`Caller` is what every transport shares. Its microphone is a queue of frames that the
transport's sender takes one per 20 ms, in real time, silence when the script has nothing to
say; ``say()`` queues a recording and returns the caller-clock time its first frame was
captured. The ear (:mod:`voice.bench.ear`) records reply audio with its arrival time, and
is where a reply's onset is found, for every transport; events are kept in order.

The transports: :mod:`voice.bench.native` (the native protocol, and :func:`call` for
`voice call`), :mod:`voice.bench.webrtc` (a browser-like aiortc peer) and
:mod:`voice.bench.carrier` (a Twilio or Telnyx media stream). `voice bench`, `voice call`,
the benchmarks and the tests all call through these.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from voice.audio.frames import FRAME_MS, PcmFrame
from voice.bench.ear import Ear

MIC_STALL_S = 10.0
"""How far behind its audio a caller's microphone may fall before it counts as stalled."""

EventHook = Callable[[dict[str, Any]], None]
"""Called with each event as it arrives (`voice call` prints them)."""


class Caller:
    """Connect with ``async with``; talk with ``say()``; read ``events``, ``errors``, ``ear``.

    ``keep_audio`` keeps the reply audio as received in ``received`` (PCM16 at the ear's
    rate), for a caller that saves or inspects it; a load generator leaves it off.
    """

    interrupt_event = "response.interrupted"
    """The event type that tells this caller its reply was cut."""

    def __init__(
        self, ear: Ear, *, keep_audio: bool = False, on_event: EventHook | None = None
    ) -> None:
        self.ear = ear
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self.received = bytearray()
        self.mic_started: float | None = None
        """When the microphone's first frame was captured (caller clock): where the audio
        the server counts in (``audio_end_ms``) begins."""
        self._keep_audio = keep_audio
        self._on_event = on_event
        self._mic: deque[bytes] = deque()
        self._first_sent: asyncio.Future[float] | None = None
        self._spoken = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Caller:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def say(self, audio: PcmFrame) -> float:
        """Queue ``audio``; returns, once it is being sent, when its first sample was spoken
        (caller clock): recording offsets add to this to give caller-clock times. On a line
        that is gone, it returns at once: nothing more will be sent."""
        self._spoken.clear()
        self._mic.extend(self._frames(audio))
        self._first_sent = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            self._first_sent.set_result(time.monotonic())
        return await self._first_sent

    def _frames(self, audio: PcmFrame) -> Iterable[bytes]:
        """``audio`` cut into the transport's 20 ms frames, the last one padded."""
        raise NotImplementedError

    def _next_frame(self, captured: float) -> bytes | None:
        """The microphone's frame captured at ``captured``: queued speech, or None (silence)."""
        if self.mic_started is None:
            self.mic_started = captured
        if not self._mic:
            return None
        frame = self._mic.popleft()
        first = self._first_sent
        if first is not None and not first.done():
            first.set_result(captured)
        if not self._mic:
            self._spoken.set()
            self._changed.set()  # a waiter may be waiting for the end of what it said
        return frame

    @property
    def spoken(self) -> bool:
        """Everything queued has been sent (or the line is gone)."""
        return self._spoken.is_set()

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

    def _hear(self, pcm: bytes, now: float) -> None:
        """Reply audio arrived at ``now`` (PCM16 at the ear's rate)."""
        self.ear.receive(pcm, now)
        if self._keep_audio:
            self.received += pcm
        self._changed.set()

    def _record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)
        self._changed.set()

    def _hung_up(self, why: str | None = None) -> None:
        """The line is gone (``why``, if it broke): record that once, and wake every waiter."""
        if why is not None and not self.closed.is_set():
            self.errors.append(f"connection_closed: {why}")
        self.closed.set()
        self._changed.set()
        self._spoken.set()  # nothing more will be sent
        first = self._first_sent
        if first is not None and not first.done():
            first.set_result(time.monotonic())

    async def wait_until(self, predicate: Callable[[], Any], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds, checked whenever this caller hears or records
        anything; False on timeout, or if the line is gone and it still does not hold."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    if self.closed.is_set():
                        return bool(predicate())
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, since: int, timeout_s: float
    ) -> dict[str, Any] | None:
        """The first event from index ``since`` on that matches; None on timeout or close."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            nonlocal since
            found.extend(e for e in self.events[since:] if predicate(e))
            since = len(self.events)
            return bool(found)

        await self.wait_until(seen, timeout_s)
        return found[0] if found else None

    async def wait_for_events(self, kind: str, count: int = 1, *, timeout_s: float) -> bool:
        """Wait until ``count`` events of type ``kind`` arrived in all; False on timeout or
        if the line is gone first."""
        return await self.wait_until(lambda: len(self.of_type(kind)) >= count, timeout_s)

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
        return None if found is None else found.get("timings")

    # What a call on the native protocol's events heard (the WebRTC data channel carries
    # the same events).

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def transcript(self) -> str:
        return " ".join(e["text"] for e in self.of_type("input.transcript"))

    @property
    def reply_text(self) -> str:
        return "".join(e["delta"] for e in self.of_type("response.text.delta"))

    @property
    def first_sound_at(self) -> float | None:
        """When the first reply sound reached the ear (caller clock), if any did."""
        spans = self.ear.spans()
        return spans[0].start if spans else None

    @property
    def voice_to_voice_ms(self) -> float | None:
        """First reply sound heard − end of the caller's first speech, as the server's VAD
        placed it (``input.speech_stopped``) on the microphone's clock."""
        stopped = [e for e in self.of_type("input.speech_stopped") if not e.get("discarded")]
        heard = self.first_sound_at
        if not stopped or heard is None or self.mic_started is None:
            return None
        speech_end = self.mic_started + float(stopped[0]["audio_end_ms"]) / 1000.0
        return (heard - speech_end) * 1000.0

    def reply_frame(self) -> PcmFrame:
        """The reply audio kept (``keep_audio``), as received."""
        return PcmFrame(bytes(self.received), self.ear.sample_rate)


def cut(data: bytes, step: int, pad: bytes = b"\0") -> Iterator[bytes]:
    """``data`` in frames of ``step`` bytes, the last one filled up with ``pad``."""
    return (data[i : i + step].ljust(step, pad) for i in range(0, len(data), step))


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


def with_token(url: str, token: str | None) -> str:
    """``url`` carrying a caller token as ``?token=`` (the form every transport reads)."""
    if not token:
        return url
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("token", token)])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class CallRefused(ConnectionError):
    """The server refused the call: ``str()`` is its status and code (``HTTP 401
    unauthorized``), as `voice bench` counts it; ``message`` is what the server said."""

    def __init__(self, status: int, body: bytes) -> None:
        try:
            error = json.loads(body or b"{}").get("error", {})
        except (ValueError, AttributeError):
            error = {}
        super().__init__(f"HTTP {status} {error.get('code', '')}".strip())
        self.message: str = error.get("message", "")


async def connect_ws(url: str, **options: Any) -> ClientConnection:
    """A WebSocket to the server; a handshake it refuses raises :class:`CallRefused`."""
    try:
        return await connect(url, **options)
    except InvalidStatus as exc:
        raise CallRefused(exc.response.status_code, bytes(exc.response.body or b"")) from exc
