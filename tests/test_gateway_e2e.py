"""HttpGateway against our own gateway server over real HTTP on 127.0.0.1.

The same path the service takes in production, with the SimulatedGateway behind the server:
transcripts, chat deltas, speech, and every fault surfacing as its error type.
"""

import asyncio
import io
import json
import wave
from contextlib import asynccontextmanager

import pytest

from tests.servers import serve_app
from tests.timing import MS, SCALE
from voice.config import GatewaySettings
from voice.core.dialog import ChatMessage
from voice.errors import (
    GatewayAuthError,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentRequired,
    RateLimited,
)
from voice.gateway.http import HttpGateway
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import Fault, SimulatedGateway, SimulationSettings

API_KEY = "sk-e2e-secret"
REPLY = "Sure. It is half past three. Anything else?"
FAST = SimulationSettings(
    asr_ms=5 * SCALE,
    ttft_ms=5 * SCALE,
    ms_per_token=2 * SCALE,
    tts_ttfb_ms=5 * SCALE,
    tts_rtf=0.05,
    speech_ms_per_char=10 * SCALE,
    transcripts=["what time is it"],
    replies=[REPLY],
)
MESSAGES = [ChatMessage("user", "what time is it")]


def wav_bytes() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\0\0" * 1600)
    return buf.getvalue()


@pytest.fixture
def simulated():
    return SimulatedGateway(FAST)


@asynccontextmanager
async def http_gateway(simulated, **settings):
    app = create_gateway_app(simulated, api_key=API_KEY)
    async with serve_app(app) as url:
        options = {"api_key": API_KEY, "max_retries": 0, **settings}
        async with HttpGateway(GatewaySettings(url=url, **options)) as gateway:
            yield gateway


@pytest.fixture
async def gateway(simulated):
    async with http_gateway(simulated) as gateway:
        yield gateway


def set_faults(simulated, *faults):
    simulated.update(FAST.model_copy(update={"faults": list(faults)}))


async def until(condition, within_ms: float = 2000) -> None:
    """Poll ``condition`` (a counter has no event to wait on) until it holds."""
    async with asyncio.timeout(within_ms * MS):
        while True:
            if condition():
                return
            await asyncio.sleep(MS)


async def test_transcript(gateway):
    assert await gateway.transcribe(wav_bytes()) == "what time is it"


async def test_chat_deltas_arrive_one_by_one(gateway):
    deltas = [delta async for delta in gateway.chat(MESSAGES)]
    assert "".join(deltas) == REPLY
    assert len(deltas) == len(REPLY.split())


@pytest.mark.parametrize("tts_format", ["pcm", "wav"])
async def test_speech(simulated, tts_format):
    expected = b"".join([f.pcm async for f in SimulatedGateway(FAST).speak(REPLY)])
    async with http_gateway(simulated, tts_format=tts_format) as gateway:
        frames = [frame async for frame in gateway.speak(REPLY)]
    assert {f.sample_rate for f in frames} == {24_000}
    assert b"".join(f.pcm for f in frames) == expected


async def test_models(gateway):
    assert await gateway.models() == FAST.models


async def test_a_wrong_api_key_is_an_auth_error(simulated):
    async with serve_app(create_gateway_app(simulated, api_key=API_KEY)) as url:
        settings = GatewaySettings(url=url, api_key="sk-wrong", max_retries=0)
        async with HttpGateway(settings) as gateway:
            with pytest.raises(GatewayAuthError) as err:
                await gateway.models()
    assert err.value.status == 401
    assert "sk-wrong" not in repr(err.value)


async def test_payment_required(gateway, simulated):
    set_faults(simulated, Fault(route="chat", kind="status", status=402))
    with pytest.raises(PaymentRequired) as err:
        [delta async for delta in gateway.chat(MESSAGES)]
    assert json.loads(err.value.challenge)["x402Version"] == 1


async def test_rate_limited(gateway, simulated):
    set_faults(simulated, Fault(route="speak", kind="status", status=429, retry_after=2))
    with pytest.raises(RateLimited) as err:
        [frame async for frame in gateway.speak(REPLY)]
    assert err.value.retry_after == 2


async def test_server_error(gateway, simulated):
    set_faults(simulated, Fault(route="transcribe", kind="status", status=500))
    with pytest.raises(GatewayUnavailable) as err:
        await gateway.transcribe(wav_bytes())
    assert err.value.status == 500


async def test_a_retryable_error_is_retried(simulated):
    set_faults(simulated, Fault(route="transcribe", kind="status", status=503))
    async with http_gateway(simulated, max_retries=1, retry_backoff_s=10 * MS) as gateway:
        assert await gateway.transcribe(wav_bytes()) == "what time is it"
    assert simulated.requests["transcribe"] == 2


async def test_a_hang_times_out_and_the_server_lets_go(simulated):
    set_faults(simulated, Fault(route="chat", kind="hang"))
    async with http_gateway(simulated, llm_first_token_timeout_s=200 * MS) as gateway:
        with pytest.raises(GatewayTimeout):
            [delta async for delta in gateway.chat(MESSAGES)]
        await until(lambda: simulated.in_flight["chat"] == 0)


@pytest.mark.parametrize("route", ["chat", "speak"])
async def test_a_drop_mid_stream_is_unavailable(gateway, simulated, route):
    set_faults(simulated, Fault(route=route, kind="drop", after_chunks=2))
    stream = gateway.chat(MESSAGES) if route == "chat" else gateway.speak(REPLY)
    received = []
    with pytest.raises(GatewayUnavailable):
        async for item in stream:
            received.append(item)
    assert received, "the stream had begun before it dropped"


@pytest.mark.parametrize("route", ["chat", "speak"])
async def test_cancelling_the_consumer_closes_the_server_side_stream(simulated, route):
    slow = FAST.model_copy(update={"ms_per_token": 50 * SCALE, "tts_rtf": 1.0})
    simulated.update(slow)
    async with http_gateway(simulated) as gateway:
        received = []

        async def consume():
            stream = gateway.chat(MESSAGES) if route == "chat" else gateway.speak(REPLY)
            async for item in stream:
                received.append(item)

        task = asyncio.create_task(consume())
        await until(lambda: received)
        assert simulated.in_flight[route] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: simulated.in_flight[route] == 0)
