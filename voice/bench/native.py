"""A caller on the native protocol: PCM16 binary frames up and down, JSON events.

:class:`NativeCaller` is `voice bench`'s caller on ``ws://HOST/v1/session``; :func:`call`
plays one recording through it and hangs up once the replies are done, for `voice call`, the
benchmarks and the tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, SPEECH_RATE, PcmFrame, frame_bytes
from voice.audio.resample import resample
from voice.bench.caller import Caller, EventHook, connect_ws, cut, real_time
from voice.bench.ear import Ear, sound_span
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
        self.unanswered: str | None = None
        """Why :func:`call` stopped waiting before its replies came, if it did."""

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


SETTLE_S = 1.0
"""After the last frame of the recording left, how long the server has to have heard all of
it (its VAD calls speech after 100 ms of voiced frames; the events come back in a few ms)
before a call with no turn open is over."""


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

    Returns the caller, hung up, once enough ``response.done`` events arrived or, with
    ``unanswered`` saying why, once none can come any more (:func:`why_no_reply`, asked
    whenever an event arrives), the server closed, or ``timeout_s`` passed. Its reply audio
    is kept, at ``output_rate``. The recording goes up at its own rate if the protocol
    takes it, else at 16 kHz.
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
    sound = sound_span(recording)
    last_sound_s = 0.0 if sound is None else sound.end
    first_frame = 0.0
    settled = False

    def over() -> bool:
        if len(caller.of_type("response.done")) >= responses:
            return True
        said_all = caller.spoken or time.monotonic() >= first_frame + last_sound_s
        caller.unanswered = why_no_reply(caller.events, said_all=said_all, settled=settled)
        return caller.unanswered is not None

    async with caller:
        try:
            async with asyncio.timeout(timeout_s):
                first_frame = await caller.say(recording)
                await caller.wait_until(lambda: over() or caller.spoken, timeout_s)
                await caller.wait_until(over, SETTLE_S)
                settled = True
                await caller.wait_until(over, timeout_s)
        except TimeoutError:  # what arrived by then is the result
            caller.unanswered = f"the {timeout_s:g} s timeout passed first"
        else:
            if not over():  # the line is gone
                caller.unanswered = _hung_up_reason(caller)
    return caller


def _hung_up_reason(caller: NativeCaller) -> str:
    ended = caller.of_type("session.ended")
    if ended:
        return f"the server ended the session: {ended[-1].get('message', '')}"
    broken = [e for e in caller.errors if e.startswith("connection_closed")]
    return f"the line broke ({broken[-1]})" if broken else "the server closed the call"


def why_no_reply(events: Sequence[dict[str, Any]], *, said_all: bool, settled: bool) -> str | None:
    """Why no (further) reply will come to what the caller said, or None while one may.

    ``events``: the session's, in order. ``said_all``: nothing audible is left to send, so
    no new turn can begin. ``settled``: besides, the server has had time to hear all of it
    (:data:`SETTLE_S`). A failed turn (an ``error`` with no reply under way: one under way
    ends with its own ``response.done``) ends the call once the caller has said all it
    had to say; anything else only once the server heard it all and no turn is open:
    speech not yet ended, a turn not yet transcribed, words not yet answered.
    """
    speaking = replying = awaiting = False
    untranscribed = turns = discarded = 0
    words = False
    failed: str | None = None
    for event in events:
        match event.get("type"):
            case "input.speech_started":
                speaking = True
                failed = None  # a new turn: what becomes of it is what counts now
            case "input.speech_stopped":
                speaking = False
                if event.get("discarded"):
                    discarded += 1
                else:
                    turns += 1
                    untranscribed += 1
            case "input.transcript":
                untranscribed = max(0, untranscribed - 1)
                if str(event.get("text", "")).strip():
                    awaiting = words = True
            case "response.started":
                replying, awaiting = True, False
            case "response.done":
                replying = False
            case "error":
                failed = f"the turn failed ({event.get('code', 'error')})"  # the event says why
                # What that turn was waiting for (its transcript, its reply) is not coming.
                untranscribed, awaiting = 0, False
    if replying or speaking:
        return None
    if failed is not None and (said_all or settled):
        return failed
    if not settled or awaiting or untranscribed:
        return None
    if turns == 0 and discarded:
        return "the server heard only sounds too short to be speech (coughs, clicks)"
    if turns == 0:
        return "the server heard no speech in the recording (is it silent, or only noise?)"
    if not words:
        return "the server heard speech but recognised no words in it"
    return "every turn the server heard has been answered"
