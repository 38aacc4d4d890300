"""The native WebSocket transport at ``/v1/session``: PCM16 binary frames + JSON events.

The handler's own loop reads the caller. Reply audio leaves from the pacing task, straight
onto the socket, so the playhead counts only audio really sent and a barge-in can clear
everything else; events leave from a writer task with their own queue, so a burst of audio
never delays or drops them. One lock keeps the two from interleaving inside a send.
Protocol: docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.frames import CloseCode

from voice.audio.frames import SPEECH_RATE
from voice.config import Settings
from voice.core.events import ErrorEvent, SessionEvent
from voice.errors import AudioFormatError, FrameTooLarge, ProtocolError, VoiceError
from voice.pipeline.session import Session
from voice.transports.playout import PacedPlayout
from voice.transports.wire import (
    ResponseCancel,
    SessionConfig,
    SessionUpdate,
    event_to_wire,
    hangup_code,
    parse_client_event,
    voice_fields,
)

logger = logging.getLogger(__name__)

EVENT_QUEUE = 1024
"""Events queued for a caller whose socket is stuck; past this they are dropped, logged."""

CLOSE_TIMEOUT_S = 2.0
"""How long queued events may take to reach a caller before the socket is dropped."""


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class NativeSession:
    """Runs one native WebSocket caller, with the session the app admitted, until either
    side hangs up."""

    def __init__(self, websocket: WebSocket, session: Session, *, settings: Settings) -> None:
        self._ws = websocket
        self._settings = settings
        self._events: asyncio.Queue[str | _Close | None] = asyncio.Queue(EVENT_QUEUE)
        self._send_lock = asyncio.Lock()
        self._closing: _Close | None = None
        self._audio_started = False
        self._dropped_events = 0
        self.playout = PacedPlayout(
            out_rate=SPEECH_RATE,
            send=self._send_audio,
            lead_ms=settings.pipeline.playout_lead_ms,
            max_queue_ms=settings.pipeline.audio_queue_ms,
        )
        self.session = session
        session.attach(self.playout, self._send_event, self._hang_up)

    def _send_event(self, event: SessionEvent) -> None:
        self._send_json(event_to_wire(event))

    def _hang_up(self, reason: str) -> None:
        """The session ended (a limit, a drain): close once the events before it have gone."""
        self._closing = _Close(hangup_code(reason), reason)
        if self._events.full():
            self._events.get_nowait()  # a caller not reading: the close matters more
        self._events.put_nowait(self._closing)

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        pacer = asyncio.create_task(self.playout.run())
        try:
            self._send_json({"type": "session.created", "session": self._describe()})
            await self._read()
        finally:
            await self.session.aclose()
            pacer.cancel()
            await asyncio.gather(pacer, return_exceptions=True)
            # Let queued events (an error, the last response.done) go out, then close.
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._events.put(self._closing)
                    await writer
            except TimeoutError:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)

    async def _read(self) -> None:
        max_bytes = self._settings.server.max_frame_bytes
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data: bytes | None = message.get("bytes")
            text: str | None = message.get("text")
            try:
                if data is not None:
                    if len(data) > max_bytes:
                        raise FrameTooLarge(
                            f"binary frame of {len(data)} bytes is over the {max_bytes}-byte "
                            "limit; send audio in chunks of 20–100 ms"
                        )
                    if len(data) % 2:
                        raise AudioFormatError(
                            f"binary frame of {len(data)} bytes is not whole PCM16 samples "
                            "(odd length); audio must be 16-bit little-endian mono"
                        )
                    self._audio_started = True
                    await self.session.feed(data)
                elif text is not None:
                    if len(text) > max_bytes:
                        raise FrameTooLarge(
                            f"text frame of {len(text)} characters is over the {max_bytes} "
                            "limit; events are small JSON objects"
                        )
                    await self._on_text(text)
            except FrameTooLarge as exc:
                self._fail(exc, CloseCode.MESSAGE_TOO_BIG)
                return
            except AudioFormatError as exc:
                self._fail(exc, CloseCode.UNSUPPORTED_DATA)
                return
            except ProtocolError as exc:
                self.session.emit(ErrorEvent(exc.code, exc.message))

    async def _on_text(self, text: str) -> None:
        event = parse_client_event(text)
        match event:
            case SessionUpdate(session=config):
                self._update(config)
                self._send_json({"type": "session.updated", "session": self._describe()})
            case ResponseCancel():
                await self.session.interrupt()

    def _update(self, config: SessionConfig) -> None:
        """Apply all of ``config`` or, if any part cannot apply now, none of it."""
        new_in = config.input_audio.sample_rate if config.input_audio else None
        new_out = config.output_audio.sample_rate if config.output_audio else None
        if new_in not in (None, self.session.input_rate) and self._audio_started:
            raise ProtocolError(
                "input_audio can only change before the first audio frame",
                code="invalid_session_update",
            )
        if new_out not in (None, self.playout.out_rate) and self.session.replying:
            raise ProtocolError(
                "output_audio cannot change while a response is playing",
                code="invalid_session_update",
            )
        self.session.configure(instructions=config.instructions, voice=config.chosen_voice())
        if new_in is not None:
            self.session.set_input_rate(new_in)
        if new_out is not None and new_out != self.playout.out_rate:
            self.playout.out_rate = new_out
            self.playout.clear()

    def _describe(self) -> dict[str, object]:
        return {
            "id": self.session.id,
            "input_audio": {"format": "pcm16", "sample_rate": self.session.input_rate},
            "output_audio": {"format": "pcm16", "sample_rate": self.playout.out_rate},
            **voice_fields(self.session.voice, self.session.settings.gateway),
            "instructions": self.session.instructions,
        }

    def _send_json(self, payload: dict[str, object]) -> None:
        try:
            self._events.put_nowait(json.dumps(payload))
        except asyncio.QueueFull:
            self._dropped_events += 1
            if self._dropped_events == 1:
                logger.warning("[%s] caller's socket is stuck; dropping events", self.session.id)

    def _fail(self, error: VoiceError, code: int) -> None:
        """The session cannot go on: say why, then close with ``code`` once that is sent."""
        self.session.emit(ErrorEvent(error.code, error.message))
        self._closing = _Close(code, error.message[:120])

    async def _send_audio(self, chunk: bytes) -> None:
        try:
            async with self._send_lock:
                await self._ws.send_bytes(chunk)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The caller went away mid-reply; the reader sees the disconnect and cleans up.
            pass

    async def _write(self) -> None:
        try:
            while (item := await self._events.get()) is not None:
                async with self._send_lock:
                    if isinstance(item, str):
                        await self._ws.send_text(item)
                    else:
                        await self._ws.close(code=item.code, reason=item.reason)
                        return
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The caller went away mid-send; the reader sees the disconnect and cleans up.
            return
