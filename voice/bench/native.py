"""A caller on the native protocol: PCM16 binary frames up and down, JSON events.

:class:`NativeCaller` is `voice bench`'s caller on ``ws://HOST/v1/session``; :func:`call`
plays one recording through it and hangs up once the replies are done, for `voice call`, the
benchmarks and the tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, SPEECH_RATE, PcmFrame, frame_bytes
from voice.audio.resample import resample
from voice.bench.caller import Caller, EventHook, connect_ws, cut, real_time
from voice.bench.ear import Ear
from voice.config import PCM_RATES

MAX_MESSAGE = 2**22
"""Largest message accepted from the server (reply audio comes in chunks well below it)."""


class NativeCaller(Caller):
    """A caller on the native protocol.

    ``session`` adds to the ``session.update`` sent first (e.g. ``instructions``); audio goes
    up at ``input_rate`` and is asked for at ``output_rate``.
    """

    def __init__(
        self,
        url: str,
        *,
        input_rate: int = 16_000,
        output_rate: int = SPEECH_RATE,
        session: dict[str, Any] | None = None,
        keep_audio: bool = False,
        on_event: EventHook | None = None,
    ) -> None:
        super().__init__(Ear(output_rate), keep_audio=keep_audio, on_event=on_event)
        self.url = url
        self.input_rate = input_rate
        self._session = {
            "input_audio": {"format": "pcm16", "sample_rate": input_rate},
            "output_audio": {"format": "pcm16", "sample_rate": output_rate},
            **(session or {}),
        }
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> NativeCaller:
        self._ws = await connect_ws(self.url, max_size=MAX_MESSAGE, open_timeout=10)
        await self._ws.send(json.dumps({"type": "session.update", "session": self._session}))
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
        return cut(pcm, frame_bytes(self.input_rate, FRAME_MS))

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
                    self._hear(message, now)
                    continue
                event = json.loads(message)
                if event.get("type") == "response.interrupted":
                    self.ear.flush(now)  # a caller drops reply audio it still holds
                if event.get("type") == "error":
                    self.errors.append(event.get("code", "error"))
                self._record(event)
        except (ConnectionClosed, OSError) as exc:
            self._hung_up(str(exc))
        finally:
            self._hung_up()


async def call(
    url: str,
    recording: PcmFrame,
    *,
    instructions: str | None = None,
    output_rate: int = SPEECH_RATE,
    responses: int = 1,
    timeout_s: float = 60.0,
    on_event: EventHook | None = None,
) -> NativeCaller:
    """Stream ``recording`` in real time, then silence, until ``responses`` replies end.

    Returns the caller, hung up, once enough ``response.done`` events arrived, the server
    closed, or ``timeout_s`` passed; its reply audio is kept, at ``output_rate``. The
    recording goes up at its own rate if the protocol takes it, else at 16 kHz.
    """
    rate = recording.sample_rate if recording.sample_rate in PCM_RATES else 16_000
    session = None if instructions is None else {"instructions": instructions}
    caller = NativeCaller(
        url,
        input_rate=rate,
        output_rate=output_rate,
        session=session,
        keep_audio=True,
        on_event=on_event,
    )
    async with caller:
        try:
            async with asyncio.timeout(timeout_s):
                await caller.say(recording)
                await caller.wait_for_events("response.done", responses, timeout_s=timeout_s)
        except TimeoutError:
            pass  # what arrived by then is the result
    return caller
