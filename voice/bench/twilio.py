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
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, PcmFrame
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample
from voice.bench.caller import Caller, real_time
from voice.bench.ear import Ear

RATE = 8_000
FRAME = RATE * FRAME_MS // 1000  # mu-law bytes per 20 ms
SILENCE = b"\xff" * FRAME  # mu-law silence
QUIET_S = 1.0
"""Silence from the server that marks the end of a reply on a protocol with no such event."""


class TwilioCaller(Caller):
    """A carrier's far end on Twilio Media Streams (see the module docstring)."""

    interrupt_event = "clear"
    """What tells this caller its reply was cut: Twilio's ``clear``."""

    def __init__(self, url: str, *, index: int = 0) -> None:
        super().__init__(Ear(RATE))
        self.url = url
        self.sid = f"MZbench{index:025d}"
        self.last_media_at = 0.0
        self._marks: deque[tuple[float, str]] = deque()  # (due time, name)
        self._play_end = 0.0
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._chunk = 0

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
            asyncio.create_task(real_time(FRAME_MS / 1000.0, self._send)),
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._echo_marks()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._ws is not None:
            try:
                await self._send_event("stop", self._next_seq(), {"callSid": "CA" + self.sid[2:]})
            except ConnectionClosed:
                pass
            await self._ws.close()

    def _frames(self, audio: PcmFrame) -> Iterable[bytes]:
        pcm = (
            resample(audio.pcm, audio.sample_rate, RATE) if audio.sample_rate != RATE else audio.pcm
        )
        ulaw = mulaw_encode(pcm)
        return (ulaw[i : i + FRAME].ljust(FRAME, b"\xff") for i in range(0, len(ulaw), FRAME))

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

    async def _send(self, captured: float) -> None:
        frame = self._next_frame(captured) or SILENCE
        self._chunk += 1
        media = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(self._chunk * FRAME_MS),
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
                    self._hear(pcm, now)
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
                self._record({"type": kind})
        except (ConnectionClosed, OSError) as exc:
            self._hung_up(str(exc))
        finally:
            self._hung_up()

    async def _echo_marks(self) -> None:
        while True:
            now = time.monotonic()
            while self._marks and self._marks[0][0] <= now:
                _, name = self._marks.popleft()
                await self._send_event("mark", self._next_seq(), {"name": name})
            await asyncio.sleep(0.01)
