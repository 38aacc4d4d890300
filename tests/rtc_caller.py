"""A WebRTC caller for tests: an aiortc peer that behaves as the browser page does.

It creates the ``events`` data channel and one sendrecv audio transceiver whose track plays a
recording in real time (then silence), gathers on 127.0.0.1 only, posts the offer to the real
app served by uvicorn, and records the JSON events and the reply audio that come back.
``webrtc_stack`` serves that app with the simulated gateway behind it, over HTTP, as
tests/stack.py does for the native protocol.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.servers import serve_app
from tests.stack import SIMULATION
from tests.timing import MS
from voice.app.factory import create_app
from voice.audio.frames import PcmFrame
from voice.audio.level import rms_dbfs
from voice.audio.resample import Resampler, resample
from voice.config import Settings
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway
from voice.transports.ice import HostAddresses, gathering_on
from voice.transports.rtc_audio import caller_pcm

RATE = 48_000
SAMPLES = 960
ONSET_DBFS = -45.0
LOOPBACK = HostAddresses(only=("127.0.0.1",))


@asynccontextmanager
async def webrtc_stack(simulation=SIMULATION, **sections):
    """The simulated gateway over HTTP and a voice app using it; yields (base url, app, gw).

    The app offers 127.0.0.1 only, so every packet of these tests stays on loopback.
    """
    simulated = SimulatedGateway(simulation)
    async with serve_app(create_gateway_app(simulated)) as gateway_url:
        sections.setdefault("gateway", {})["url"] = gateway_url
        sections.setdefault("webrtc", {}).setdefault("host_addresses", ["127.0.0.1"])
        app = create_app(Settings.model_validate(sections))
        async with serve_app(app) as url:
            yield url, app, simulated


class Microphone(MediaStreamTrack):
    """A live microphone: the recording at real-time pace (by pts), then silence."""

    kind = "audio"

    def __init__(self, recording: PcmFrame | None = None) -> None:
        super().__init__()
        pcm = b""
        if recording is not None:
            pcm = resample(recording.pcm, recording.sample_rate, RATE)
        self._pcm = pcm
        self._pts = 0
        self.started: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started is None:
            self.started = time.monotonic()
        else:
            self._pts += SAMPLES
            delay = self.started + self._pts / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        start = self._pts * 2
        chunk = self._pcm[start : start + SAMPLES * 2]
        chunk += bytes(SAMPLES * 2 - len(chunk))
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(chunk)
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


@dataclass
class RtcCall:
    pc: RTCPeerConnection
    mic: Microphone
    session_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    """Reply audio received, PCM16 mono at 48 kHz, silence included."""
    first_audio_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def transcript(self) -> str:
        return " ".join(e["text"] for e in self.of_type("input.transcript"))

    @property
    def reply_text(self) -> str:
        return "".join(e["delta"] for e in self.of_type("response.text.delta"))

    def voiced_ms(self) -> float:
        """Reply audio that is not silence, in 20 ms frames."""
        step = SAMPLES * 2
        frames = [self.audio[i : i + step] for i in range(0, len(self.audio), step)]
        return 20.0 * sum(1 for f in frames if rms_dbfs(bytes(f)) > ONSET_DBFS)

    async def wait_for(self, kind: str, count: int = 1, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s * MS * 1000):
            while len(self.of_type(kind)) < count:
                self.changed.clear()
                await self.changed.wait()

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        channel = self._channel
        channel.send(message if isinstance(message, str | bytes) else json.dumps(message))

    _channel: Any = None


async def make_offer(pc: RTCPeerConnection) -> str:
    with gathering_on(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


@asynccontextmanager
async def rtc_call(
    base_url: str,
    recording: PcmFrame | None = None,
    *,
    session: dict | None = None,
    codec: str | None = None,
) -> AsyncIterator[RtcCall]:
    """Connect as a browser would; yields the call once the answer is applied.

    ``codec`` (a MIME type such as ``audio/PCMU``) makes the offer carry that codec only;
    by default it offers all of aiortc's, Opus first, as a browser does.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = Microphone(recording)
    call = RtcCall(pc=pc, mic=mic)
    channel = pc.createDataChannel("events")
    call._channel = channel

    @channel.on("message")
    def on_message(message):
        call.events.append(json.loads(message))
        call.changed.set()

    readers: list[asyncio.Task] = []

    @pc.on("track")
    def on_track(track):
        readers.append(asyncio.create_task(_read_reply(track, call)))

    transceiver = pc.addTransceiver(mic, direction="sendrecv")
    if codec is not None:
        capabilities = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in capabilities if c.mimeType == codec])
    try:
        sdp = await make_offer(pc)
        body: dict[str, Any] = {"sdp": sdp, "type": "offer"}
        if session is not None:
            body["session"] = session
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.post("/v1/webrtc/offer", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["type"] == "answer"
        call.session_id = answer["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        yield call
    finally:
        await pc.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _read_reply(track, call: RtcCall) -> None:
    resampler: Resampler | None = None  # for G.711 and G.722, decoded at 8 or 16 kHz
    try:
        while True:
            frame = await track.recv()
            pcm = caller_pcm(frame)
            if frame.sample_rate != RATE:
                resampler = resampler or Resampler(frame.sample_rate, RATE)
                pcm = resampler.process(pcm)
            if call.first_audio_at is None and rms_dbfs(pcm) > ONSET_DBFS:
                call.first_audio_at = time.monotonic()
            call.audio += pcm
            call.changed.set()
    except MediaStreamError:
        return


async def wait_until(predicate, timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` until true (for state the server changes in the background)."""
    async with asyncio.timeout(timeout_s * MS * 1000):
        while not predicate():  # noqa: ASYNC110  # state another task changes, no event
            await asyncio.sleep(20 * MS)
