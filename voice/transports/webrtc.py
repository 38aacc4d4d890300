"""The WebRTC transport: one browser's peer connection bound to a :class:`Session`.

Signalling is one HTTP exchange (``voice/webrtc_routes.py``): the browser posts its offer,
with every candidate gathered, and gets the answer with all of ours (aiortc gathers inside
``setLocalDescription``; no trickle). Then:

- the browser's microphone track is read frame by frame, turned into PCM16 mono
  (:func:`~voice.transports.rtc_audio.caller_pcm`) and fed to the session;
- reply audio goes out on a :class:`~voice.transports.rtc_audio.ReplyTrack`, the session's
  audio sink: paced by pts, silence when empty, cleared at once on barge-in, and encoded to
  Opus by the track itself (other codecs are left to aiortc);
- the data channel the browser opened, labelled ``events``, carries the native protocol's
  JSON events both ways (docs/protocol.md). Events emitted before it opens wait in a bounded
  backlog; ``session.update`` may change instructions and voice (audio is fixed by SDP), and
  ``response.cancel`` stops the reply.

The peer connection is closed and the session forgotten when the events channel closes,
the connection fails or closes (the browser went away, or ICE consent expired), it never
connects within ``connect_timeout_s``, the caller's track ends, or the app shuts down. aiortc
is touched only here, in :mod:`~voice.transports.rtc_audio` and :mod:`~voice.transports.ice`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import av
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from voice.config import Settings
from voice.core.events import ErrorEvent, SessionEvent
from voice.errors import AudioFormatError, InvalidOffer, ProtocolError, VoiceError
from voice.pipeline.session import Session
from voice.transports.ice import HostAddresses, gathering_on, rtc_configuration
from voice.transports.offer import Offer, check_fixed_audio
from voice.transports.rtc_audio import ReplyTrack, caller_pcm, shorten_inbound_buffer
from voice.transports.wire import (
    ResponseCancel,
    SessionConfig,
    SessionUpdate,
    event_to_wire,
    parse_client_event,
    voice_fields,
)

logger = logging.getLogger(__name__)

EVENTS_LABEL = "events"
"""The data channel the browser creates for JSON events."""
EVENT_BACKLOG = 256
"""Events kept while the events channel is not open yet; past this they are dropped, logged."""
MAX_BUFFERED_BYTES = 1 << 20
"""Events waiting in SCTP for a browser that stopped reading; past this they are dropped."""
CONTROL_QUEUE = 32
"""Control messages waiting to be handled; a caller that floods gets an error per extra one."""
MAX_MESSAGE_CHARS = 64 * 1024
CLOSE_TIMEOUT_S = 5.0
"""Longest wait for aiortc to stop its transports when a peer connection closes."""


class WebRtcSession:
    """One browser's peer connection, its :class:`Session`, and their shared lifetime.

    Built by the offer route, which then awaits :meth:`answer`. ``on_closed`` is called once,
    with the reason, when the session has been torn down (after :meth:`aclose`, or after the
    browser left); the route uses it to forget the session and count it out.
    """

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        on_closed: Callable[[WebRtcSession, str], None] | None = None,
    ) -> None:
        self.id = session.id
        self.log = session.log
        self._settings = settings
        self._on_closed = on_closed
        self.pc = RTCPeerConnection(rtc_configuration(settings.webrtc.ice_servers))
        self.track = ReplyTrack(max_queue_ms=settings.pipeline.audio_queue_ms)
        self.session = session
        session.attach(self.track, self._send_event, self.close)
        self._channel: RTCDataChannel | None = None
        self._backlog: deque[str] = deque()
        self._dropped_events = 0
        self._inbox: asyncio.Queue[str] = asyncio.Queue(CONTROL_QUEUE)
        self._lock = asyncio.Lock()
        """Serialises what reaches the session: caller audio and control messages."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = False
        self._connected = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None
        self._codec = {"format": "opus", "sample_rate": 48_000}
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    @property
    def connected(self) -> bool:
        """The browser's media path is up (it has been, at least once)."""
        return self._connected.is_set()

    async def answer(self, offer: Offer, addresses: HostAddresses) -> str:
        """Apply the (validated) offer and return the answer's SDP, with every candidate.

        Raises :class:`InvalidOffer` if aiortc refuses the offer, or another error if the
        server cannot gather candidates; either way the caller then closes this session.
        """
        if offer.session is not None:
            try:
                self._apply(offer.session)
            except ProtocolError as exc:
                raise InvalidOffer(exc.message, code=exc.code) from None
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            self.pc.addTrack(self.track)
            answer = await self.pc.createAnswer()
        except Exception as exc:  # aiortc raises ValueError, OperationError, ... on SDP
            raise InvalidOffer(f"the offer could not be applied: {exc}") from exc
        with gathering_on(addresses):
            await self.pc.setLocalDescription(answer)
        sdp = self.pc.localDescription.sdp
        if "a=candidate:" not in sdp:
            raise VoiceError(
                "the server found no local address to offer an ICE candidate on; "
                "set VOICE_WEBRTC_HOST_ADDRESSES"
            )
        self._codec = _negotiated_codec(sdp)
        self.track.negotiated(str(self._codec["format"]))
        self._send_json({"type": "session.created", "session": self._describe()})
        self._spawn(self._control(), "control")
        self._spawn(self._watch_connect(), "connect watchdog")
        return sdp

    def _send_event(self, event: SessionEvent) -> None:
        self._send_json(event_to_wire(event))

    def close(self, reason: str) -> None:
        """Start tearing down (once); :meth:`aclose` waits for it."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._shutdown(reason))

    async def aclose(self, reason: str = "closed by the server") -> None:
        self.close(reason)
        assert self._closing is not None
        # Shielded: a cancelled caller (a request handler, a shutdown) must not leave the
        # peer connection half closed.
        await asyncio.shield(self._closing)

    # -- aiortc's events (synchronous callbacks: they must never raise) --------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._reading:
            self._reading = True
            for receiver in self.pc.getReceivers():
                if receiver.track is track and not shorten_inbound_buffer(receiver):
                    self.log.warning("this aiortc keeps its own receive buffer: +60 ms uplink")
            self._spawn(self._read_audio(track), "caller audio")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_LABEL or self._channel is not None:
            self.log.info(
                "ignoring data channel %r: events travel on %r", channel.label, EVENTS_LABEL
            )
            return
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self.close("the events channel closed"))
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self.close(f"the connection {state}")

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._error(
                "invalid_message",
                "the events channel takes JSON text messages; audio travels on the audio track",
            )
        elif len(message) > MAX_MESSAGE_CHARS:
            self._error("invalid_message", f"message over {MAX_MESSAGE_CHARS} characters")
        else:
            try:
                self._inbox.put_nowait(message)
            except asyncio.QueueFull:
                self._error("invalid_message", "too many messages at once; this one was dropped")

    # -- tasks -----------------------------------------------------------------------------

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue  # an audio track yields decoded audio frames only
                pcm = caller_pcm(frame)
                async with self._lock:
                    self.session.set_input_rate(frame.sample_rate)
                    await self.session.feed(pcm)
        except MediaStreamError:
            self.close("the caller's audio track ended")

    async def _control(self) -> None:
        while True:
            text = await self._inbox.get()
            try:
                match parse_client_event(text):
                    case SessionUpdate(session=config):
                        self._apply(config)
                        self._send_json({"type": "session.updated", "session": self._describe()})
                    case ResponseCancel():
                        async with self._lock:
                            await self.session.interrupt()
            except (ProtocolError, AudioFormatError) as exc:
                self._error(exc.code, exc.message)

    async def _watch_connect(self) -> None:
        timeout = self._settings.webrtc.connect_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            self.close(f"the browser did not connect within {timeout:g} s")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(self._guarded(coro, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("%s failed; closing the session", name)
            self.close(f"{name} failed")

    async def _shutdown(self, reason: str) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.session.aclose()
        finally:
            self.track.stop()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.pc.close()
            except TimeoutError:
                self.log.warning("peer connection took over %g s to close", CLOSE_TIMEOUT_S)
            except Exception:
                self.log.exception("closing the peer connection failed")
            if self._on_closed is not None:
                self._on_closed(self, reason)

    # -- events out ------------------------------------------------------------------------

    def _error(self, code: str, message: str) -> None:
        self.session.emit(ErrorEvent(code, message))

    def _send_json(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            self._flush()
            self._deliver(channel, text)
        elif channel is None or channel.readyState == "connecting":
            if len(self._backlog) < EVENT_BACKLOG:
                self._backlog.append(text)
            else:
                self._drop("the events channel has not opened")

    def _flush(self) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        while self._backlog:
            self._deliver(channel, self._backlog.popleft())

    def _deliver(self, channel: RTCDataChannel, text: str) -> None:
        if channel.bufferedAmount > MAX_BUFFERED_BYTES:
            self._drop("the browser is not reading the events channel")
            return
        channel.send(text)

    def _drop(self, why: str) -> None:
        self._dropped_events += 1
        if self._dropped_events == 1:
            self.log.warning("dropping events: %s", why)

    # -- session settings ------------------------------------------------------------------

    def _apply(self, config: SessionConfig) -> None:
        """Apply instructions and voice; audio formats are refused (fixed by SDP)."""
        check_fixed_audio(config)
        self.session.configure(instructions=config.instructions, voice=config.chosen_voice())

    def _describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "input_audio": dict(self._codec),
            "output_audio": dict(self._codec),
            **voice_fields(self.session.voice, self.session.settings.gateway),
            "instructions": self.session.instructions,
        }


def _negotiated_codec(answer_sdp: str) -> dict[str, Any]:
    """The audio codec aiortc chose: the first one in its answer's audio section."""
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "audio" and media.rtp.codecs:
            codec = media.rtp.codecs[0]
            return {"format": codec.mimeType.split("/")[-1].lower(), "sample_rate": codec.clockRate}
    return {"format": "opus", "sample_rate": 48_000}


class WebRtcPeers:
    """The live WebRTC sessions of one app: counted, and closed together at shutdown."""

    def __init__(self) -> None:
        self._live: dict[str, WebRtcSession] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._live

    def connecting(self) -> int:
        """Sessions answered whose browser has not connected yet."""
        return sum(not peer.connected for peer in self._live.values())

    def get(self, session_id: str) -> WebRtcSession | None:
        return self._live.get(session_id)

    def add(self, peer: WebRtcSession) -> None:
        self._live[peer.id] = peer

    def discard(self, peer: WebRtcSession) -> None:
        if self._live.get(peer.id) is peer:
            del self._live[peer.id]

    async def aclose(self) -> None:
        """Close every live session (app shutdown) and wait until each is torn down."""
        peers = list(self._live.values())
        await asyncio.gather(
            *(p.aclose("the server is shutting down") for p in peers), return_exceptions=True
        )
