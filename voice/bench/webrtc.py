"""One simulated browser on WebRTC: an aiortc peer that calls as the page in voice/web does.

It opens the ``events`` data channel and one sendrecv audio transceiver, posts its offer
(ICE gathered in full) to ``POST /v1/webrtc/offer``, and applies the answer; ``codec`` (a
MIME type such as ``audio/PCMU``) makes the offer carry that codec only, else it offers all
of aiortc's, Opus first, as a browser does. Its microphone track hands aiortc one 20 ms
frame per 20 ms of the caller's clock, recorded speech or silence; the reply track's decoded
frames (at 48 kHz, G.711 and G.722 resampled to it) go to the ear as they come out of
aiortc's jitter buffer, which is when a browser would play them. A barge-in needs no flush
here: the server stops sending, and what already arrived is what the caller heard. The
JSON events on the data channel are the native protocol's, so server timings join each turn
as they do there.

Nothing here contacts a STUN server; against a server on loopback, candidates are gathered
on 127.0.0.1 only (the server offers it when it listens there).
"""

from __future__ import annotations

import asyncio
import fractions
import ipaddress
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voice.audio.frames import SAMPLE_WIDTH, PcmFrame
from voice.audio.resample import Resampler, resample
from voice.bench.caller import Caller, CallRefused, EventHook, cut
from voice.bench.ear import Ear
from voice.transports.ice import AIOICE_DEFAULT, HostAddresses, gathering_on, rtc_configuration
from voice.transports.rtc_audio import caller_pcm

OFFER_PATH = "/v1/webrtc/offer"
RATE = 48_000
"""The microphone track's rate: Opus's own, so aiortc's encoder does not resample."""
SAMPLES = RATE // 50  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
SILENCE = bytes(SAMPLES * SAMPLE_WIDTH)
CONNECT_TIMEOUT_S = 15.0
"""Longest wait for the answer and then for the events channel to open."""


def offer_url(url: str) -> str:
    """The offer endpoint for ``url``: a server's base URL, or the endpoint itself."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(OFFER_PATH):
        path += OFFER_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _gathering_for(url: str) -> HostAddresses:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return HostAddresses(only=("127.0.0.1",)) if loopback else AIOICE_DEFAULT


async def local_offer(pc: RTCPeerConnection, addresses: HostAddresses) -> str:
    """Set ``pc``'s offer, its ICE candidates gathered (in full) on ``addresses``; its SDP."""
    with gathering_on(addresses):
        await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    return sdp


class _Microphone(MediaStreamTrack):
    """The caller's microphone as aiortc pulls it: one frame per 20 ms, by pts."""

    kind = "audio"

    def __init__(self, caller: WebRtcCaller) -> None:
        super().__init__()
        self._caller = caller
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += SAMPLES
        captured = self._start + self._pts / RATE
        # A frame leaves once all of it was captured, as from a live microphone.
        delay = captured + SAMPLES / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(self._caller._next_frame(captured) or SILENCE)
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = TIME_BASE
        return frame


class WebRtcCaller(Caller):
    """A browser-like caller over WebRTC (see the module docstring).

    ``session`` goes with the offer (the server's session settings); ``send()`` puts a
    control message on the events channel.
    """

    def __init__(
        self,
        url: str,
        *,
        session: dict[str, Any] | None = None,
        codec: str | None = None,
        keep_audio: bool = False,
        on_event: EventHook | None = None,
    ) -> None:
        super().__init__(Ear(RATE), keep_audio=keep_audio, on_event=on_event)
        self.url = offer_url(url)
        self.session_id = ""
        self._session = session
        self._codec = codec
        self._pc = RTCPeerConnection(rtc_configuration(()))
        self._channel: Any = None
        self._mic_track = _Microphone(self)
        self._leaving = False  # we hang up: the connection closing is no error then

    @property
    def connection_state(self) -> str:
        """The peer connection's state, as aiortc names it (``connected``, ``closed``…)."""
        state: str = self._pc.connectionState
        return state

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send ``message`` on the events channel (a dict as JSON, text or bytes as is)."""
        self._channel.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def __aenter__(self) -> WebRtcCaller:
        try:
            await self._connect()
        except BaseException:
            await self._pc.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._leaving = True
        await self._pc.close()
        await super().__aexit__(*exc)

    async def _connect(self) -> None:
        pc = self._pc
        self._channel = channel = pc.createDataChannel("events")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("message", self._on_message)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        transceiver = pc.addTransceiver(self._mic_track, direction="sendrecv")
        if self._codec is not None:
            codecs = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType == self._codec])
        sdp = await local_offer(pc, _gathering_for(self.url))
        body: dict[str, Any] = {"sdp": sdp, "type": "offer"}
        if self._session is not None:
            body["session"] = self._session
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            answer = await asyncio.to_thread(_post_offer, self.url, body)
            self.session_id = answer.get("session_id", "")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await opened.wait()

    def _frames(self, audio: PcmFrame) -> Iterable[bytes]:
        pcm = audio.pcm
        if audio.sample_rate != RATE:
            pcm = resample(pcm, audio.sample_rate, RATE)
        return cut(pcm, SAMPLES * SAMPLE_WIDTH)

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            self.errors.append("bad_event")
            return
        if event.get("type") == "error":
            self.errors.append(event.get("code", "error"))
        self._record(event)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._listen(track)))

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state in ("failed", "closed"):
            self._hung_up(None if self._leaving else f"WebRTC connection {state}")

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler: Resampler | None = None  # for G.711 and G.722, decoded at 8 or 16 kHz
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                pcm = caller_pcm(frame)
                if frame.sample_rate != RATE:
                    resampler = resampler or Resampler(frame.sample_rate, RATE)
                    pcm = resampler.process(pcm)
                self._hear(pcm, time.monotonic())
        except MediaStreamError:
            self._hung_up(None if self._leaving else "the reply track ended")


def _post_offer(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the offer (blocking: run it on a thread); the answer, or :class:`CallRefused`."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # No proxy: the media goes straight to the server's candidates, so must the offer.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CONNECT_TIMEOUT_S) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise CallRefused(exc.code, exc.read()) from exc
