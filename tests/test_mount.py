"""The app mounted inside a user's Starlette or FastAPI service, the standard way, under a
prefix, over real sockets: the page and its files, health, a real turn through the mounted
WebSocket, metrics, and carrier URLs that name the prefix."""

import re

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import voice
from tests.samples import recording, text
from tests.servers import serve_app
from tests.stack import REPLY, SIMULATION
from voice.bench.native import call
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway


async def _home(request):
    return PlainTextResponse("the host app")


def starlette_host(voice_app):
    return Starlette(
        routes=[Route("/", _home), Mount("/voice", app=voice_app)],
        lifespan=voice_app.router.lifespan_context,
    )


def fastapi_host(voice_app):
    host = FastAPI(lifespan=voice_app.router.lifespan_context)
    host.add_route("/", _home)
    host.mount("/voice", voice_app)
    return host


@pytest.mark.parametrize("host", [starlette_host, fastapi_host])
async def test_mounted_under_a_prefix_every_route_and_a_real_turn_work(host, monkeypatch):
    sample = "q01_what_time.wav"
    simulated = SimulatedGateway(SIMULATION.model_copy(update={"transcripts": [text(sample)]}))
    async with serve_app(create_gateway_app(simulated)) as gateway_url:
        # create_app() with no arguments reads the VOICE_* environment, as `voice serve` does.
        monkeypatch.setenv("VOICE_GATEWAY_URL", gateway_url)
        monkeypatch.setenv("VOICE_PUBLIC_URL", "https://voice.example")
        voice_app = voice.create_app()
        async with (
            serve_app(host(voice_app)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            assert (await client.get("/")).text == "the host app"
            # A browser sent to the bare prefix lands on the page, with the slash its
            # relative URLs need.
            bare = await client.get("/voice")
            assert bare.is_redirect and bare.headers["location"].endswith("/voice/")
            page = await client.get("/voice/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            # The page's own URLs are relative: each resolves under the prefix.
            for ref in re.findall(r'(?:href|src)="(web/[^"]+)"', page.text):
                assert (await client.get(f"/voice/{ref}")).status_code == 200, ref
            assert (await client.get("/voice/health")).json() == {"status": "ok"}
            assert (await client.get("/voice/ready")).status_code == 200
            twiml = await client.get("/voice/v1/twilio/twiml")
            assert "wss://voice.example/voice/v1/twilio" in twiml.text

            ws = url.replace("http", "ws", 1) + "/voice/v1/session"
            result = await call(ws, recording(sample), timeout_s=30)
            assert result.transcript == text(sample)
            assert result.reply_text == REPLY
            assert result.of_type("response.done")[0]["status"] == "completed"

            metrics = (await client.get("/voice/metrics")).text
            assert "voice_sessions_total 1" in metrics
            assert 'voice_responses_total{status="completed"} 1' in metrics
    assert sum(simulated.in_flight.values()) == 0
