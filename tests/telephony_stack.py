"""A voice server on 127.0.0.1 for carrier tests, with a gateway that remembers what it was
asked (the simulated gateway over real HTTP, as in tests/stack.py) and metrics that remember
every event, so a test can see what the dialog kept and which events a call produced.
"""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.samples import manifest, recording
from tests.servers import serve_app
from tests.stack import SIMULATION
from tests.timing import MS
from voice.app.factory import create_app
from voice.app.metrics import Metrics
from voice.audio.frames import PcmFrame
from voice.audio.wav import read_wav
from voice.config import Settings
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway


class RecordingGateway(SimulatedGateway):
    """Keeps the messages of every chat request (the dialog as the model sees it) and the
    audio of every transcription request."""

    def __init__(self, settings):
        super().__init__(settings)
        self.chats = []
        self.transcribed = []
        self.prompts = []

    async def transcribe(self, wav, *, prompt=None, call=None):
        self.transcribed.append(read_wav(wav))
        self.prompts.append(prompt)
        return await super().transcribe(wav, prompt=prompt, call=call)

    def chat(self, messages, *, call=None):
        self.chats.append([{"role": m.role, "content": m.content} for m in messages])
        return super().chat(messages, call=call)


def recording_events(metrics: Metrics) -> Metrics:
    """The app's own metrics, made to also keep every event they observe (``.events``)."""
    metrics.events = []
    observe = metrics.observe

    def record(event):
        metrics.events.append(event)
        observe(event)

    metrics.observe = record
    return metrics


@dataclass
class Stack:
    ws: str
    """``ws://127.0.0.1:PORT``"""
    http: str
    gateway: RecordingGateway
    metrics: Metrics
    settings: Settings = field(repr=False)

    async def until(self, predicate, timeout_s=20.0):
        """Wait for server-side state to satisfy ``predicate``."""
        async with asyncio.timeout(timeout_s * 1000 * MS):
            while not predicate():  # noqa: ASYNC110  # server-owned state
                await asyncio.sleep(10 * MS)

    async def idle(self):
        """Every gateway request has ended."""
        await self.until(lambda: sum(self.gateway.in_flight.values()) == 0, 5)


@asynccontextmanager
async def telephony_stack(simulation=SIMULATION, **sections):
    gateway = RecordingGateway(simulation)
    async with serve_app(create_gateway_app(gateway)) as gateway_url:
        sections.setdefault("gateway", {})["url"] = gateway_url
        settings = Settings.model_validate(sections)
        app = create_app(settings)
        metrics = recording_events(app.state.voice.metrics)
        async with serve_app(app) as url:
            yield Stack(url.replace("http", "ws", 1), url, gateway, metrics, settings)


def speech(name: str, tail_s: float = 0.1) -> PcmFrame:
    """A sample cut just after its speech ends: the caller's silence follows by itself."""
    frame = recording(name)
    end = round((manifest()[name]["speech_end_s"] + tail_s) * frame.sample_rate) * 2
    return PcmFrame(frame.pcm[:end], frame.sample_rate)


def onset_s(name: str) -> float:
    return manifest()[name]["speech_start_s"]
