"""A protocol-faithful far end of a carrier media stream (Twilio, or Telnyx), for tests.

It behaves as the carrier does, written from the carriers' documentation and independent of
the server's code: ``connected``, ``start``, then one ``media`` message per 20 ms at real-time
cadence (silence when the caller says nothing), numbered as the carrier numbers them, and
``stop`` at the end. Reply audio is played on a modelled playback clock: each chunk starts
when the one before it ends; a ``mark`` is echoed once the audio queued before it has played
(at once if nothing is queued); a ``clear`` drops what is queued and returns every mark still
waiting. Anything the server sends that the carrier would reject is recorded in
``violations``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import PcmFrame
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample

FRAME_S = 0.020


@dataclass(frozen=True)
class Carrier:
    """How one carrier spells its messages and codes its audio."""

    name: str
    encoding: str
    rate: int

    @property
    def sample_bytes(self) -> int:
        return 2 if self.encoding == "L16" else 1

    @property
    def frame_bytes(self) -> int:
        return int(self.rate * FRAME_S) * self.sample_bytes

    def encode(self, pcm16: bytes, rate: int) -> bytes:
        pcm = resample(pcm16, rate, self.rate) if rate != self.rate else pcm16
        if self.encoding == "L16":  # RTP L16 is big-endian
            return np.frombuffer(pcm, "<i2").astype(">i2").tobytes()
        return mulaw_encode(pcm)

    def decode(self, data: bytes) -> bytes:
        if self.encoding == "L16":
            return np.frombuffer(data, ">i2").astype("<i2").tobytes()
        return mulaw_decode(data)

    @property
    def names(self) -> tuple[str, str]:
        """The carrier's spelling of the sequence number and stream id fields."""
        if self.name == "twilio":
            return "sequenceNumber", "streamSid"
        return "sequence_number", "stream_id"

    def message(self, event: str, seq: int, sid: str, body: dict[str, Any] | None = None) -> str:
        # Spelled out rather than json.dumps'ed: a load generator sends thousands a second.
        number, stream = self.names
        head = f'{{"event":"{event}","{number}":"{seq}","{stream}":{json.dumps(sid)}'
        if body is None:
            return head + "}"
        return f'{head},"{event}":{json.dumps(body, separators=(",", ":"))}}}'

    def media(self, seq: int, sid: str, chunk: int, payload: str) -> str:
        """One inbound media message (``payload`` is base64 already)."""
        number, stream = self.names
        return (
            f'{{"event":"media","{number}":"{seq}","{stream}":{json.dumps(sid)},"media":'
            f'{{"track":"inbound","chunk":"{chunk}","timestamp":"{(chunk - 1) * 20}",'
            f'"payload":"{payload}"}}}}'
        )

    def connected(self) -> str:
        if self.name == "twilio":
            return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        return json.dumps({"event": "connected", "version": "1.0.0"})

    def start(self, sid: str, parameters: dict[str, str]) -> str:
        if self.name == "twilio":
            body: dict[str, Any] = {
                "accountSid": "AC" + "0" * 32,
                "streamSid": sid,
                "callSid": "CA" + "1" * 32,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
        else:
            body = {
                "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
                "call_control_id": "v2:test-call",
                "custom_parameters": parameters,
                "media_format": {
                    "encoding": self.encoding,
                    "sample_rate": self.rate,
                    "channels": 1,
                },
            }
        return self.message("start", 1, sid, body)


TWILIO = Carrier("twilio", "audio/x-mulaw", 8_000)
TELNYX_PCMU = Carrier("telnyx", "PCMU", 8_000)
TELNYX_L16 = Carrier("telnyx", "L16", 16_000)


@dataclass
class Played:
    """One reply chunk on the far end's playback clock."""

    start: float
    end: float
    audio: bytes
    """Decoded PCM16 at the carrier's rate."""


@dataclass
class FarEnd:
    """The carrier's playback of reply audio, with marks and clears, on a modelled clock."""

    rate: int
    chunks: list[Played] = field(default_factory=list)
    marks_due: deque[tuple[float, str]] = field(default_factory=deque)
    clears: list[float] = field(default_factory=list)
    first_media_at: float | None = None
    last_media_at: float | None = None
    media_messages: int = 0
    mark_messages: int = 0
    max_buffered_s: float = 0.0
    """The most reply audio queued here, not yet played, at any time."""

    @property
    def play_end(self) -> float:
        return self.chunks[-1].end if self.chunks else 0.0

    def media(self, pcm: bytes, now: float, samples: int | None = None) -> None:
        """A chunk arrives: ``pcm``, or only its length in ``samples`` when not kept."""
        if self.first_media_at is None:
            self.first_media_at = now
        self.last_media_at = now
        self.media_messages += 1
        start = max(now, self.play_end)
        seconds = (len(pcm) // 2 if samples is None else samples) / self.rate
        self.chunks.append(Played(start, start + seconds, pcm))
        self.max_buffered_s = max(self.max_buffered_s, self.play_end - now)

    def mark(self, name: str, now: float) -> None:
        self.mark_messages += 1
        self.marks_due.append((max(now, self.play_end), name))

    def clear(self, now: float) -> None:
        """Drop what has not played; every mark still waiting is due back at once."""
        self.clears.append(now)
        kept = []
        for chunk in self.chunks:
            if chunk.start >= now:
                continue
            if chunk.end > now:
                samples = int((now - chunk.start) * self.rate)
                chunk = Played(chunk.start, now, chunk.audio[: samples * 2])
            kept.append(chunk)
        self.chunks = kept
        names = [name for _, name in self.marks_due]
        self.marks_due.clear()
        self.marks_due.extend((now, name) for name in names)

    def played_audio(self, until: float | None = None) -> bytes:
        """The reply audio heard by ``until`` (default: all that will play)."""
        out = bytearray()
        for chunk in self.chunks:
            if until is not None and chunk.start >= until:
                break
            if until is not None and chunk.end > until:
                out += chunk.audio[: int((until - chunk.start) * self.rate) * 2]
                break
            out += chunk.audio
        return bytes(out)


class CarrierCaller:
    """Connect with ``async with``; talk with ``say()``; inspect ``far_end`` and ``violations``.

    ``swap_every``: every that-many frames, two neighbouring media messages are sent in
    swapped order (as a carrier that does not guarantee order may). ``keep_audio=False``
    keeps only the length of reply chunks (a load generator's far end). ``deflate`` offers
    permessage-deflate; off by default, as carriers' media (base64 audio) barely compresses.
    """

    def __init__(
        self,
        url: str,
        carrier: Carrier = TWILIO,
        *,
        parameters: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        swap_every: int = 0,
        keep_audio: bool = True,
        deflate: bool = False,
    ) -> None:
        self.url = url
        self.carrier = carrier
        self.sid = "MZ" + "a" * 32 if carrier.name == "twilio" else "32DE0DEA-53CB-4B21"
        self.parameters = parameters or {}
        self.headers = headers or {}
        self.swap_every = swap_every
        self.keep_audio = keep_audio
        self.deflate = deflate
        self.far_end = FarEnd(carrier.rate)
        self.violations: list[str] = []
        self.echoed: list[tuple[float, str]] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._seq = 1
        self._chunk = 0
        self._mic: deque[bytes] = deque()
        self._first_sent: asyncio.Future[float] | None = None
        self._spoken = asyncio.Event()
        self._marks = asyncio.Event()
        self._changed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> CarrierCaller:
        await self.connect()
        await self.begin()
        return self

    async def connect(self) -> None:
        """Open the socket and greet (``connected``); nothing else is sent yet."""
        self._ws = await connect(
            self.url,
            additional_headers=self.headers,
            open_timeout=10,
            compression="deflate" if self.deflate else None,
        )
        await self._ws.send(self.carrier.connected())
        self._tasks.append(asyncio.create_task(self._receive()))

    async def begin(self) -> None:
        """Send ``start``, then media every 20 ms from now on."""
        assert self._ws is not None
        await self._ws.send(self.carrier.start(self.sid, self.parameters))
        self._tasks.append(asyncio.create_task(self._send_media()))
        self._tasks.append(asyncio.create_task(self._echo_marks()))

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    async def say(self, audio: PcmFrame) -> float:
        """Queue ``audio``; returns when its first sample was spoken (monotonic clock)."""
        data = self.carrier.encode(audio.pcm, audio.sample_rate)
        step = self.carrier.frame_bytes
        pad = b"\xff" if self.carrier.encoding != "L16" else b"\0"  # mu-law silence is 0xFF
        self._mic.extend(data[i : i + step].ljust(step, pad) for i in range(0, len(data), step))
        self._spoken.clear()
        self._first_sent = asyncio.get_running_loop().create_future()
        return await self._first_sent

    async def until_spoken(self) -> None:
        await self._spoken.wait()

    async def send(self, text: str | bytes) -> None:
        """Send a raw message as it is (for bad-input tests)."""
        assert self._ws is not None
        await self._ws.send(text)

    async def dtmf(self, digit: str) -> None:
        body = (
            {"track": "inbound_track", "digit": digit}
            if self.carrier.name == "twilio"
            else {"digit": digit}
        )
        await self._send_numbered("dtmf", body)

    async def stop(self) -> None:
        """Send ``stop`` (the caller hung up); the microphone goes quiet."""
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        await self._send_numbered("stop", {"callSid": "CA" + "1" * 32})

    def media(self, payload: bytes | str, chunk: int | None = None) -> str:
        """A media message with this caller's numbering (``payload`` bytes are base64ed)."""
        if isinstance(payload, bytes):
            payload = base64.b64encode(payload).decode()
        self._seq += 1
        if chunk is None:
            self._chunk += 1
            chunk = self._chunk
        body = {"track": "inbound", "chunk": str(chunk), "timestamp": "0", "payload": payload}
        return self.carrier.message("media", self._seq, self.sid, body)

    async def wait_until(self, predicate, timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds, checked on every message received or echoed."""
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

    async def _send_numbered(self, event: str, body: dict[str, Any]) -> None:
        assert self._ws is not None
        self._seq += 1
        await self._ws.send(self.carrier.message(event, self._seq, self.sid, body))

    def _media_message(self, frame: bytes) -> str:
        self._chunk += 1
        self._seq += 1
        payload = base64.b64encode(frame).decode()
        return self.carrier.media(self._seq, self.sid, self._chunk, payload)

    async def _send_media(self) -> None:
        assert self._ws is not None
        silence = (b"\0" if self.carrier.encoding == "L16" else b"\xff") * self.carrier.frame_bytes
        started = time.monotonic()
        held: str | None = None
        n = 0
        while True:
            captured = started + n * FRAME_S
            n += 1
            delay = captured + FRAME_S - time.monotonic()
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
            message = self._media_message(frame)
            if self.swap_every and n % self.swap_every == 0 and held is None:
                held = message  # sent after the next one
                continue
            await self._ws.send(message)
            if held is not None:
                await self._ws.send(held)
                held = None

    async def _echo_marks(self) -> None:
        due = self.far_end.marks_due
        while True:
            if not due:
                self._marks.clear()
                await self._marks.wait()
                continue
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                self._marks.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._marks.wait()
                except TimeoutError:
                    pass
                continue
            _, name = due.popleft()
            await self._echo(name)

    async def _echo(self, name: str) -> None:
        self.echoed.append((time.monotonic(), name))
        self._changed.set()
        await self._send_numbered("mark", {"name": name})

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                self._check(message, time.monotonic())
                self._changed.set()
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()
            self._changed.set()

    def _check(self, message: str | bytes, now: float) -> None:
        if isinstance(message, bytes):
            self.violations.append("binary frame")
            return
        try:
            data = json.loads(message)
        except json.JSONDecodeError:
            self.violations.append(f"not JSON: {message[:60]!r}")
            return
        event = data.get("event")
        if self.carrier.name == "twilio" and data.get("streamSid") != self.sid:
            self.violations.append(f"{event} without our streamSid")
        if event == "media" and not self.keep_audio:
            # A load generator only needs each chunk's length, not its audio.
            encoded = data["media"]["payload"]
            size = len(encoded) * 3 // 4 - encoded[-2:].count("=")
            self.far_end.media(b"", now, samples=size // self.carrier.sample_bytes)
        elif event == "media":
            try:
                payload = base64.b64decode(data["media"]["payload"], validate=True)
            except (KeyError, TypeError, ValueError):
                self.violations.append("media without a base64 payload")
                return
            if len(payload) % self.carrier.sample_bytes:
                self.violations.append("media payload of part of a sample")
            self.far_end.media(self.carrier.decode(payload), now)
        elif event == "mark":
            name = data.get("mark", {}).get("name")
            if not isinstance(name, str):
                self.violations.append("mark without a name")
                return
            self.far_end.mark(name, now)
            self._marks.set()
        elif event == "clear":
            self.far_end.clear(now)
            self._marks.set()
        else:
            self.violations.append(f"unexpected event {event!r}")
