"""The far end of a carrier's media stream (Twilio, or Telnyx): one simulated phone call.

It behaves as the carrier does, written from the carriers' documentation and independent of
the server's code: ``connected``, ``start``, then one ``media`` message per 20 ms at real-time
cadence (silence when the caller says nothing), numbered as the carrier numbers them, and
``stop`` at the end. Reply audio is played on a modelled playback clock (:class:`FarEnd`):
each chunk starts when the one before it ends; a ``mark`` is echoed once the audio queued
before it has played (at once if nothing is queued); a ``clear`` drops what is queued and
returns every mark still waiting. Anything the server sends that the carrier would reject is
recorded in ``violations`` (and ``errors``).

The protocol carries no server timings and no end-of-reply event: for `voice bench`, a reply
counts as finished once it has been heard and then nothing more arrived for ``QUIET_S``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, PcmFrame
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample
from voice.bench.caller import Caller, connect_ws, cut, real_time
from voice.bench.ear import Ear

FRAME_S = FRAME_MS / 1000.0
QUIET_S = 1.0
"""Silence from the server that marks the end of a reply on a protocol with no such event."""


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

    @property
    def silence(self) -> bytes:
        """One byte of silence: mu-law codes it as 0xFF."""
        return b"\0" if self.encoding == "L16" else b"\xff"

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
            f'{{"track":"inbound","chunk":"{chunk}","timestamp":"{(chunk - 1) * FRAME_MS}",'
            f'"payload":"{payload}"}}}}'
        )

    def connected(self) -> str:
        if self.name == "twilio":
            return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        return json.dumps({"event": "connected", "version": "1.0.0"})

    def start(self, sid: str, call_sid: str, parameters: dict[str, str]) -> str:
        if self.name == "twilio":
            body: dict[str, Any] = {
                "accountSid": "AC" + "0" * 32,
                "streamSid": sid,
                "callSid": call_sid,
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

    def default_sid(self) -> str:
        return "MZ" + "a" * 32 if self.name == "twilio" else "32DE0DEA-53CB-4B21"


TWILIO = Carrier("twilio", "audio/x-mulaw", 8_000)
TELNYX_PCMU = Carrier("telnyx", "PCMU", 8_000)
TELNYX_L16 = Carrier("telnyx", "L16", 16_000)


@dataclass
class Played:
    """One reply chunk on the far end's playback clock."""

    start: float
    end: float
    audio: bytes
    """Decoded PCM16 at the carrier's rate (empty when not kept)."""


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


class CarrierCaller(Caller):
    """Connect with ``async with``; talk with ``say()``; inspect ``far_end`` and ``violations``.

    ``parameters`` arrive at the server as the stream's custom parameters; ``headers`` go
    with the handshake (a signature, a token). ``swap_every``: every that-many frames, two
    neighbouring media messages are sent in swapped order (as a carrier that does not
    guarantee order may). ``keep_audio`` keeps the decoded reply in ``far_end``'s chunks
    (and ``received``); ``listen=False`` keeps only the length of reply chunks, decoding
    nothing and leaving the ear empty (a load generator that counts bytes). ``deflate``
    offers permessage-deflate; off by default, as carriers' media (base64 audio) barely
    compresses.
    """

    interrupt_event = "clear"
    """What tells this caller its reply was cut: the carrier's ``clear``."""

    def __init__(
        self,
        url: str,
        carrier: Carrier = TWILIO,
        *,
        sid: str | None = None,
        parameters: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        swap_every: int = 0,
        listen: bool = True,
        keep_audio: bool = False,
        deflate: bool = False,
    ) -> None:
        super().__init__(Ear(carrier.rate), keep_audio=keep_audio)
        self.url = url
        self.carrier = carrier
        self.sid = sid or carrier.default_sid()
        self.call_sid = "CA" + self.sid[2:]
        self.parameters = parameters or {}
        self.headers = headers or {}
        self.swap_every = swap_every
        self.listen = listen
        self.deflate = deflate
        self.far_end = FarEnd(carrier.rate)
        self.violations: list[str] = []
        self.echoed: list[tuple[float, str]] = []
        self._seq = 1
        self._chunk = 0
        self._held: str | None = None
        self._marks = asyncio.Event()
        self._stopped = False
        self._ws: ClientConnection | None = None
        self._streaming: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> CarrierCaller:
        await self.connect()
        await self.begin()
        return self

    async def connect(self) -> None:
        """Open the socket and greet (``connected``); nothing else is sent yet."""
        self._ws = await connect_ws(
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
        await self._ws.send(self.carrier.start(self.sid, self.call_sid, self.parameters))
        self._streaming = [
            asyncio.create_task(real_time(FRAME_S, self._send_media)),
            asyncio.create_task(self._echo_marks()),
        ]
        self._tasks += self._streaming

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None and self._streaming and not self._stopped:
            try:
                await self.stop()
            except ConnectionClosed:
                pass
        await super().__aexit__(*exc)
        if self._ws is not None:
            await self._ws.close()

    def _frames(self, audio: PcmFrame) -> Iterable[bytes]:
        data = self.carrier.encode(audio.pcm, audio.sample_rate)
        return cut(data, self.carrier.frame_bytes, self.carrier.silence)

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
        self._stopped = True
        for task in self._streaming:
            task.cancel()
        await asyncio.gather(*self._streaming, return_exceptions=True)
        await self._send_numbered("stop", {"callSid": self.call_sid})

    def media(self, payload: bytes | str, chunk: int | None = None) -> str:
        """A media message with this caller's numbering (``payload`` bytes are base64ed);
        ``chunk`` numbers it as another than the next."""
        if isinstance(payload, bytes):
            payload = base64.b64encode(payload).decode()
        self._seq += 1
        if chunk is None:
            self._chunk += 1
            chunk = self._chunk
        return self.carrier.media(self._seq, self.sid, chunk, payload)

    async def reply_finished(
        self, *, since: int, after: float, timeout_s: float, completed: bool = False
    ) -> dict[str, float | None] | None:
        """Wait until a reply was heard after ``after`` and the line has gone quiet; the
        protocol carries no timings, so this returns None."""
        deadline = time.monotonic() + timeout_s
        far = self.far_end
        while time.monotonic() < deadline and not self.closed.is_set():
            heard = self.ear.onset_after(after) is not None
            now = time.monotonic()
            quiet = now - (far.last_media_at or 0.0) > QUIET_S
            if heard and quiet and now > far.play_end:
                return None
            await asyncio.sleep(0.05)
        return None

    async def _send_numbered(self, event: str, body: dict[str, Any]) -> None:
        assert self._ws is not None
        # Numbered before any await: the sender and the mark echo share one numbering.
        self._seq += 1
        await self._ws.send(self.carrier.message(event, self._seq, self.sid, body))

    async def _send_media(self, captured: float) -> None:
        assert self._ws is not None
        frame = self._next_frame(captured) or self.carrier.silence * self.carrier.frame_bytes
        message = self.media(frame)
        if self.swap_every and self._chunk % self.swap_every == 0 and self._held is None:
            self._held = message  # sent after the next one
            return
        await self._ws.send(message)
        if self._held is not None:
            held, self._held = self._held, None
            await self._ws.send(held)

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
            self.echoed.append((time.monotonic(), name))
            self._changed.set()
            await self._send_numbered("mark", {"name": name})

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                self._check(message, time.monotonic())
        except (ConnectionClosed, OSError) as exc:
            self._hung_up(None if self._stopped else str(exc))
        finally:
            self._hung_up()

    def _violation(self, what: str) -> None:
        self.violations.append(what)
        self.errors.append(f"protocol_violation: {what}")

    def _check(self, message: str | bytes, now: float) -> None:
        if isinstance(message, bytes):
            self._violation("binary frame")  # Twilio rejects these (31950)
            return
        try:
            data = json.loads(message)
        except json.JSONDecodeError:
            self._violation(f"not JSON: {message[:60]!r}")
            return
        event = data.get("event")
        if self.carrier.name == "twilio" and data.get("streamSid") != self.sid:
            self._violation(f"{event} without our streamSid")
        if event == "media" and not self.listen:
            # A load generator only needs each chunk's length, not its audio.
            encoded = data["media"]["payload"]
            size = len(encoded) * 3 // 4 - encoded[-2:].count("=")
            self.far_end.media(b"", now, samples=size // self.carrier.sample_bytes)
        elif event == "media":
            try:
                payload = base64.b64decode(data["media"]["payload"], validate=True)
            except (KeyError, TypeError, ValueError):
                self._violation("media without a base64 payload")
                return
            if len(payload) % self.carrier.sample_bytes:
                self._violation("media payload of part of a sample")
            pcm = self.carrier.decode(payload)
            self.far_end.media(pcm if self._keep_audio else b"", now, len(pcm) // 2)
            self._hear(pcm, now)
        elif event == "mark":
            name = data.get("mark", {}).get("name")
            if not isinstance(name, str):
                self._violation("mark without a name")
                return
            self.far_end.mark(name, now)
            self._marks.set()
        elif event == "clear":
            self.far_end.clear(now)
            self.ear.flush(now)
            self._marks.set()
        else:
            self._violation(f"unexpected event {event!r}")
        self._record({"type": event})
