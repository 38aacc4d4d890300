"""A voice server on 127.0.0.1 for WebRTC tests, and the test side of its caller.

``webrtc_stack`` serves the real app with the simulated gateway behind it, over HTTP, as
tests/stack.py does for the native protocol; the app offers 127.0.0.1 only, so every packet
stays on loopback. The caller is `voice bench`'s (:class:`voice.bench.webrtc.WebRtcCaller`,
an aiortc peer that behaves as the browser page does); ``rtc_call`` connects one that keeps
the reply audio and plays a recording, and the helpers below wait and measure for tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiortc import RTCPeerConnection

from tests.servers import serve_app
from tests.stack import SIMULATION
from tests.timing import MS, SCALE
from voice.app.factory import create_app
from voice.audio.frames import PcmFrame
from voice.audio.level import rms_dbfs
from voice.bench.ear import THRESHOLD_DBFS
from voice.bench.webrtc import SAMPLES, WebRtcCaller, local_offer
from voice.config import Settings
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway
from voice.transports.ice import HostAddresses

LOOPBACK = HostAddresses(only=("127.0.0.1",))


@asynccontextmanager
async def webrtc_stack(simulation=SIMULATION, **sections):
    """The simulated gateway over HTTP and a voice app using it; yields (base url, app, gw)."""
    simulated = SimulatedGateway(simulation)
    async with serve_app(create_gateway_app(simulated)) as gateway_url:
        sections.setdefault("gateway", {})["url"] = gateway_url
        sections.setdefault("webrtc", {}).setdefault("host_addresses", ["127.0.0.1"])
        app = create_app(Settings.model_validate(sections))
        async with serve_app(app) as url:
            yield url, app, simulated


@asynccontextmanager
async def rtc_call(
    base_url: str,
    recording: PcmFrame | None = None,
    *,
    session: dict[str, Any] | None = None,
    codec: str | None = None,
) -> AsyncIterator[WebRtcCaller]:
    """Connect as a browser would, keeping the reply audio; yields the caller once its
    events channel is open, ``recording`` (if any) being spoken, then silence."""
    async with WebRtcCaller(base_url, session=session, codec=codec, keep_audio=True) as call:
        if recording is not None:
            await call.say(recording)
        yield call


async def events(call: WebRtcCaller, kind: str, count: int = 1, timeout_s: float = 30.0) -> None:
    """Wait until ``count`` events of type ``kind`` arrived in all."""
    arrived = await call.wait_for_events(kind, count, timeout_s=timeout_s * SCALE)
    assert arrived, f"{count} {kind} not received in {timeout_s} s: {call.events}"


def voiced_ms(call: WebRtcCaller) -> float:
    """Reply audio received that is not silence, in 20 ms frames."""
    step = SAMPLES * 2
    audio = call.received
    frames = [bytes(audio[i : i + step]) for i in range(0, len(audio), step)]
    return 20.0 * sum(1 for f in frames if rms_dbfs(f) > THRESHOLD_DBFS)


async def make_offer(pc: RTCPeerConnection) -> str:
    """``pc``'s offer, gathered on 127.0.0.1 only (a peer made by hand, not a caller)."""
    return await local_offer(pc, LOOPBACK)


async def wait_until(predicate, timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` until true (for state the server changes in the background)."""
    async with asyncio.timeout(timeout_s * SCALE):
        while not predicate():  # noqa: ASYNC110  # state another task changes, no event
            await asyncio.sleep(20 * MS)
