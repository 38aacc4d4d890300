"""A phone call over a carrier's media-stream WebSocket, shared by every carrier dialect.

Carriers speak nearly one protocol: JSON text frames; inbound ``connected``, ``start``,
``media`` (base64 audio), ``dtmf``, ``mark`` and ``stop``; outbound only ``media``, ``mark``
and ``clear``. A :class:`Dialect` (``twilio.py``, ``telnyx.py``) is one small class that
parses its carrier's spelling of those messages into the vocabulary below and spells the
three we send. Everything else lives here once: decoding, reordering, the
:class:`~voice.pipeline.session.Session`, barge-in with exact played position
(:mod:`voice.transports.mark_playout`), DTMF, and bad input, which is dropped, counted,
logged once per kind, and never ends the call.

Task ownership: :meth:`TelephonyCall.run` reads the socket in its own task and owns the
playout's sending task; both the session and that task are cancelled and awaited when the
carrier sends ``stop`` or the socket drops, which cancels every gateway request in flight.
"""

from __future__ import annotations

import abc
import asyncio
import binascii
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.frames import CloseCode

from voice.audio.frames import SAMPLE_WIDTH
from voice.config import DTMF_DIGITS, Settings
from voice.core.events import DtmfReceived
from voice.core.reorder import ReorderBuffer
from voice.errors import AudioFormatError, ProtocolError
from voice.pipeline.session import Session
from voice.pipeline.sink import NullSink, no_events
from voice.transports.codecs import Codec
from voice.transports.mark_playout import MarkedPlayout
from voice.transports.wire import hangup_code

logger = logging.getLogger(__name__)

T = TypeVar("T")

BLOCK_MS = 10
"""Media payloads must hold whole blocks of this many ms of audio ..."""
MAX_MEDIA_MS = 100
"""... and at most this much (carriers send 20 ms)."""
STOP_GRACE_S = 5.0
"""After ``stop``, how long to wait for the carrier to close the socket before we do."""


# -- the shared inbound vocabulary ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The carrier's greeting; nothing to do."""


@dataclass(frozen=True, slots=True)
class Start:
    """The stream begins: who it is, in which audio format, with the caller's parameters."""

    stream_id: str
    call_id: str
    codec: Codec
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    """One frame of caller audio; ``chunk`` numbers media frames in order, from 1."""

    chunk: int
    payload: str
    """Base64, as sent; decoded by the call, which counts a bad one."""
    inbound: bool = True
    """False for the outbound track of a both-tracks stream (not the caller: ignored)."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The stream is over (the caller hung up, or the call left the stream)."""


@dataclass(frozen=True, slots=True)
class CarrierError:
    """The carrier reports a problem with the stream (Telnyx ``error``)."""

    detail: str


Inbound = Connected | Start | Media | Dtmf | MarkEcho | Stop | CarrierError


def dropped(kind: str, detail: str) -> ProtocolError:
    """A message we cannot use: ``kind`` labels the counter and the once-per-kind log line."""
    return ProtocolError(detail, code=kind)


def parse_wire(adapter: TypeAdapter[T], text: str) -> T:
    """Validate one text frame; raise what :func:`dropped` makes, labelled by what was wrong."""
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise dropped("bad_json", "message is not JSON") from None
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise dropped("unknown_event", f"event {str(error.get('input'))[:40]!r}") from None
        where = ".".join(str(p) for p in error["loc"][1:]) or "message"
        raise dropped("bad_message", f"{where}: {error['msg']}") from None


# -- the wire models every dialect shares ----------------------------------------------------


class WireMessage(BaseModel):
    """A carrier's JSON message, or a part of one. A dialect that spells its fields in
    camelCase subclasses with ``alias_generator=to_camel``; one-word fields read the same."""

    # Carriers may add fields at any time; only the ones we read are checked.
    model_config = ConfigDict(frozen=True, extra="ignore")


class WireEvent(WireMessage):
    """A whole inbound message; a dialect's union of them is discriminated on ``event``."""

    @abc.abstractmethod
    def inbound(self) -> Inbound:
        """The message in the shared vocabulary; raises :class:`AudioFormatError` for a
        stream in audio we cannot serve."""


class MediaFormat(WireMessage):
    encoding: str
    sample_rate: int
    channels: int = 1


class ConnectedEvent(WireEvent):
    event: Literal["connected"]

    def inbound(self) -> Connected:
        return Connected()


class MediaBody(WireMessage):
    track: str = "inbound"
    chunk: int
    payload: str


class MediaEvent(WireEvent):
    event: Literal["media"]
    media: MediaBody

    def inbound(self) -> Media:
        media = self.media
        return Media(media.chunk, media.payload, inbound=media.track == "inbound")


class DtmfBody(WireMessage):
    digit: str


class DtmfEvent(WireEvent):
    event: Literal["dtmf"]
    dtmf: DtmfBody

    def inbound(self) -> Dtmf:
        return Dtmf(self.dtmf.digit)


class MarkBody(WireMessage):
    name: str


class MarkEvent(WireEvent):
    event: Literal["mark"]
    mark: MarkBody

    def inbound(self) -> MarkEcho:
        return MarkEcho(self.mark.name)


class StopEvent(WireEvent):
    event: Literal["stop"]

    def inbound(self) -> Stop:
        return Stop()


SharedEvents: TypeAlias = ConnectedEvent | MediaEvent | DtmfEvent | MarkEvent | StopEvent
"""The inbound messages every carrier spells alike; a dialect adds its ``start`` (and any
message of its own) and discriminates the union on ``event``."""


class Dialect(abc.ABC):
    """One carrier's spelling of the media-stream protocol.

    ``messages`` reads its inbound messages, which :meth:`parse` turns into the shared
    vocabulary; the other three methods spell our messages for one stream. Payloads are
    already encoded in the stream's codec.
    """

    name: ClassVar[str]
    messages: ClassVar[TypeAdapter[WireEvent]]
    """Its ``start`` (and any message of its own) with :data:`SharedEvents`, discriminated
    on ``event``."""

    def parse(self, text: str) -> Inbound:
        """The :data:`Inbound` message in ``text``, or raise the error :func:`dropped` makes
        (or :class:`AudioFormatError` for a stream in audio we cannot serve)."""
        return parse_wire(self.messages, text).inbound()

    @abc.abstractmethod
    def media(self, stream_id: str, payload: bytes) -> str: ...

    @abc.abstractmethod
    def mark(self, stream_id: str, name: str) -> str: ...

    @abc.abstractmethod
    def clear(self, stream_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class _Outbound:
    """A dialect bound to one stream: the messages the playout sends."""

    dialect: Dialect
    stream_id: str

    def media(self, payload: bytes) -> str:
        return self.dialect.media(self.stream_id, payload)

    def mark(self, name: str) -> str:
        return self.dialect.mark(self.stream_id, name)

    def clear(self) -> str:
        return self.dialect.clear(self.stream_id)


# -- the call ------------------------------------------------------------------------------


class TelephonyCall:
    """Runs one carrier media stream until ``stop`` or the socket drops."""

    def __init__(
        self,
        websocket: WebSocket,
        session: Session,
        *,
        dialect: Dialect,
        settings: Settings,
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self.id = session.id
        self.dialect = dialect
        self.dropped: Counter[str] = Counter()
        """Inbound messages dropped, by kind, for this call."""
        self.session = session
        self.playout: MarkedPlayout | None = None
        """Reply audio towards the carrier; there once ``start`` named the codec."""
        self._ws = websocket
        self._settings = settings
        self._on_dropped = on_dropped
        self._log = session.log
        self._reorder: ReorderBuffer[bytes] = ReorderBuffer(settings.telephony.jitter_frames)
        self._frame_ms = 20.0
        self._block = self._max_payload = 0  # payload sizes, set by start
        self._stopped = False
        self._pacer: asyncio.Task[None] | None = None
        self._close_code = CloseCode.NORMAL_CLOSURE
        self._closer: asyncio.Task[None] | None = None
        # Until start names the codec, reply audio has nowhere to go; the limits (idle,
        # session length) count from the connection.
        session.attach(NullSink(), no_events, self._hang_up)

    async def run(self) -> None:
        try:
            await self._read()
        finally:
            await self._end()
            if self._closer is not None:
                await asyncio.gather(self._closer, return_exceptions=True)
            try:
                await self._ws.close(code=self._close_code)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # already closed by the carrier
            if self.dropped:
                self._log.info("dropped inbound messages: %s", dict(self.dropped))

    async def _read(self) -> None:
        max_bytes = self._settings.server.max_frame_bytes
        while True:
            if self._stopped:
                try:
                    async with asyncio.timeout(STOP_GRACE_S):
                        message = await self._ws.receive()
                except TimeoutError:
                    return
            else:
                message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text: str | None = message.get("text")
            try:
                if text is None:
                    raise dropped("binary_frame", "binary frame; carriers send JSON text")
                if len(text) > max_bytes:
                    raise dropped("too_large", f"message of {len(text)} bytes")
                if not await self._on_message(self.dialect.parse(text)):
                    return
            except ProtocolError as exc:
                self._drop(exc.code, exc.message)
            except AudioFormatError as exc:
                # No audio we can decode: the call cannot be served at all.
                self._log.error("cannot serve this stream: %s", exc.message)
                self._close_code = CloseCode.UNSUPPORTED_DATA
                return

    async def _on_message(self, message: Inbound) -> bool:
        """Act on one message; False when the call cannot go on."""
        match message:
            case Media():
                await self._on_media(message)
            case MarkEcho(name=name):
                if self.playout is None or not await self.playout.on_mark(name):
                    raise dropped("unknown_mark", f"mark {name[:40]!r} was not sent by us")
            case Dtmf(digit=digit):
                await self._on_dtmf(digit)
            case Start():
                return await self._on_start(message)
            case Stop():
                if self._stopped:
                    raise dropped("after_stop", "a second stop")
                self._log.info("carrier stopped the stream")
                self._stopped = True
                await self._end()
            case CarrierError(detail=detail):
                self._log.warning("carrier reports an error: %s", detail[:200])
            case Connected():
                pass
        return True

    async def _on_start(self, start: Start) -> bool:
        if self._stopped:
            raise dropped("after_stop", "start after stop")
        if self.playout is not None:
            raise dropped("duplicate_start", "a second start on one stream")
        telephony = self._settings.telephony
        self._block = start.codec.bytes_for(BLOCK_MS)
        self._max_payload = start.codec.bytes_for(MAX_MEDIA_MS)
        self.playout = MarkedPlayout(
            codec=start.codec,
            messages=_Outbound(self.dialect, start.stream_id),
            send=self._send,
            lead_ms=telephony.lead_ms,
            chunk_ms=telephony.chunk_ms,
            max_queue_ms=self._settings.pipeline.audio_queue_ms,
        )
        # Session events have no carrier message: they reach only the app's observer.
        self.session.attach(self.playout, no_events, self._hang_up)
        # 8 kHz audio goes to the session as it is (see Session.set_input_rate).
        self.session.set_input_rate(start.codec.rate)
        limit = self._settings.limits.max_instructions_chars
        self.session.configure(
            instructions=_parameter(start, "instructions", limit),
            voice=_parameter(start, "voice", 200),
        )
        self._pacer = asyncio.create_task(self.playout.run())
        self._log.info(
            "%s stream %s for call %s: %s %d Hz",
            self.dialect.name,
            start.stream_id,
            start.call_id,
            start.codec.name,
            start.codec.rate,
        )
        return True

    async def _on_media(self, media: Media) -> None:
        if self.playout is None:
            raise dropped("before_start", "media before start")
        if self._stopped:
            raise dropped("after_stop", "media after stop")
        if not media.inbound:
            raise dropped("other_track", "media of a track other than the caller's")
        codec = self.playout.codec
        payload: bytes | None = None
        problem: ProtocolError | None = None
        try:
            # strict_mode checks the alphabet in C (b64decode's validate runs a regex).
            payload = binascii.a2b_base64(media.payload, strict_mode=True)
        except (binascii.Error, ValueError):
            problem = dropped("bad_base64", "media payload is not base64")
        if payload is not None and not (
            0 < len(payload) <= self._max_payload and len(payload) % self._block == 0
        ):
            problem = dropped("bad_payload_size", f"media payload of {len(payload)} bytes")
            payload = None
        # A frame we cannot use still holds its place: it is filled with silence at once,
        # rather than waited for as if it were late.
        for frame in self._reorder.push(media.chunk, payload):
            if frame is None:
                samples = round(self.session.input_rate * self._frame_ms / 1000)
                await self.session.feed(bytes(samples * SAMPLE_WIDTH))
            else:
                self._frame_ms = codec.duration_ms(len(frame))
                await self.session.feed(codec.decode(frame))
        if self._reorder.late:
            late, self._reorder.late = self._reorder.late, 0
            for _ in range(late):
                self._drop("late_media", "media frame too late to reorder, or repeated")
        if problem is not None:
            raise problem

    async def _on_dtmf(self, digit: str) -> None:
        if self.playout is None or self._stopped:
            raise dropped("before_start" if self.playout is None else "after_stop", "dtmf")
        if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
            raise dropped("bad_message", f"dtmf digit {digit[:10]!r}")
        digit = digit.upper()
        self.session.emit(DtmfReceived(digit))
        if digit == self._settings.telephony.interrupt_digit and self.session.replying:
            self._log.info("caller pressed %s: stopping the reply", digit)
            await self.session.interrupt()

    async def _end(self) -> None:
        """Cancel the session (and with it every gateway request) and the sending task."""
        await self.session.aclose()
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
            self._pacer = None

    def _hang_up(self, reason: str) -> None:
        """The session ended (a limit, a drain): close the stream; the reader then stops."""
        if self._closer is None:
            self._closer = asyncio.create_task(self._close(reason))

    async def _close(self, reason: str) -> None:
        try:
            await self._ws.close(code=hangup_code(reason), reason=reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # already closed by the carrier

    async def _send(self, text: str) -> None:
        try:
            await self._ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The carrier went away mid-reply; the reader sees the disconnect and cleans up.
            pass

    def _drop(self, kind: str, detail: str) -> None:
        self.dropped[kind] += 1
        if self._on_dropped is not None:
            self._on_dropped(kind)
        if self.dropped[kind] == 1:
            self._log.warning("dropped %s (%s); further ones are only counted", kind, detail)


def _parameter(start: Start, name: str, limit: int) -> str | None:
    """A stream ``<Parameter>`` the caller's webhook passed on, cut to ``limit`` characters."""
    value = start.parameters.get(name)
    return None if value is None else value[:limit]
