"""A whole stack on 127.0.0.1 for tests: the simulated gateway served over HTTP, and a voice
server using it through HttpGateway (voice → HttpGateway → uvicorn → SimulatedGateway).
"""

from contextlib import asynccontextmanager

from tests.servers import serve_app
from voice.app.factory import create_app
from voice.config import Settings
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway, SimulationSettings

REPLY = "Sure, here is the answer. It has a second sentence as well. And a third one."
SIMULATION = SimulationSettings(
    asr_ms=50,
    ttft_ms=80,
    ms_per_token=10,
    tts_ttfb_ms=40,
    tts_rtf=0.1,
    speech_ms_per_char=40,
    replies=[REPLY],
)


@asynccontextmanager
async def app_stack(simulation=SIMULATION, **sections):
    """A simulated gateway over HTTP and a voice server using it; yields (base url, gateway).

    The base URL is ``http://127.0.0.1:PORT``, where the page and every route are.
    """
    simulated = SimulatedGateway(simulation)
    async with serve_app(create_gateway_app(simulated)) as gateway_url:
        sections.setdefault("gateway", {})["url"] = gateway_url
        settings = Settings.model_validate(sections)
        async with serve_app(create_app(settings)) as url:
            yield url, simulated


@asynccontextmanager
async def stack(simulation=SIMULATION, **sections):
    """As :func:`app_stack`, but yields the native session's WebSocket URL."""
    async with app_stack(simulation, **sections) as (url, simulated):
        yield url.replace("http", "ws", 1) + "/v1/session", simulated
