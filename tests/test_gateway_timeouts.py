"""A gateway that hangs costs a bounded wait, per route: the first byte and each stall are
timed, a hung request is tried once more at most, and only the gateway's time counts, never
the reader's. Real HTTP against the simulated gateway, hanging on cue; the dead air a caller
hears with the defaults is benchmarks/dead_air.py's to measure."""

import asyncio
import time

import pytest

from tests.samples import recording, text
from tests.stack import SIMULATION, stack
from tests.test_gateway_e2e import FAST, MESSAGES, REPLY, http_gateway, set_faults, wav_bytes
from voice.bench.native import NativeCaller
from voice.config import Settings
from voice.errors import GatewayTimeout
from voice.gateway.retry import RetryPolicy
from voice.gateway.simulated import Fault, SimulatedGateway

SHORT = {
    "asr_timeout_s": 0.3,
    "llm_first_token_timeout_s": 0.3,
    "llm_stall_timeout_s": 0.3,
    "tts_first_byte_timeout_s": 0.3,
    "tts_stall_timeout_s": 0.3,
    "max_retries": 2,
    "retry_backoff_s": 0.01,
}


async def consume(route, gateway):
    if route == "transcribe":
        return [await gateway.transcribe(wav_bytes())]
    stream = gateway.chat(MESSAGES) if route == "chat" else gateway.speak(REPLY)
    got = []
    async for item in stream:
        got.append(item)
    return got


@pytest.mark.parametrize(
    ("route", "requests"),
    # A chat that reached the gateway is never sent twice (it may be generating already).
    [("transcribe", 2), ("chat", 1), ("speak", 2)],
)
async def test_a_request_that_gets_no_answer_times_out_and_is_tried_once_more(route, requests):
    simulated = SimulatedGateway(FAST)
    set_faults(simulated, Fault(route=route, kind="hang", count=-1))
    async with http_gateway(simulated, **SHORT) as gateway:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout, match="sent no .* response within 0.3 s"):
            await consume(route, gateway)
        waited = time.monotonic() - started
    assert simulated.requests[route] == requests
    assert waited < 0.3 * requests + 1.0  # bounded: not the old 30 s read timeout


@pytest.mark.parametrize("route", ["chat", "speak"])
async def test_a_stream_that_stalls_times_out_after_what_it_sent(route):
    simulated = SimulatedGateway(FAST)
    set_faults(simulated, Fault(route=route, kind="hang", after_chunks=2, count=-1))
    received = []
    async with http_gateway(simulated, **SHORT) as gateway:
        stream = gateway.chat(MESSAGES) if route == "chat" else gateway.speak(REPLY)
        with pytest.raises(GatewayTimeout, match="stalled for 0.3 s"):
            async for item in stream:
                received.append(item)
    assert received, "what came before the stall was delivered"
    assert simulated.requests[route] == 1  # a stream that had begun is never replayed


async def test_a_slow_reader_is_not_a_stalled_gateway():
    slow = FAST.model_copy(update={"speech_ms_per_char": 40})
    async with http_gateway(SimulatedGateway(slow), **SHORT) as gateway:
        frames = 0
        async for _ in gateway.speak(REPLY):
            frames += 1
            await asyncio.sleep(0.5)  # longer than the stall time, between chunks
    assert frames > 1


async def test_a_hung_route_is_answered_with_the_spoken_notice():
    faults = [Fault(route="chat", kind="hang", count=-1)]
    simulation = SIMULATION.model_copy(update={"transcripts": [text("q01_what_time.wav")]})
    simulation = simulation.model_copy(update={"faults": faults})
    gateway = {"llm_first_token_timeout_s": 0.5}
    async with stack(simulation, gateway=gateway) as (url, _):
        async with NativeCaller(url) as caller:
            await caller.say(recording("q01_what_time.wav"))
            error = await caller.wait_for(lambda e: e.get("type") == "error", since=0, timeout_s=20)
            assert error is not None and error["code"] == "gateway_timeout"
            assert "within 0.5 s" in error["message"]
            assert await caller.wait_until(lambda: caller.ear.received_s > 2.0, 10)


def test_the_default_timeouts_keep_a_hang_under_8_s_of_dead_air():
    # The arithmetic behind the promise: the hangover, then each attempt a hung request gets
    # (the first and one retry; a chat that reached the gateway gets none), the longest
    # backoff between them, and on the reply's path the stages that went before it.
    settings = Settings()
    g, hangover_s = settings.gateway, settings.turn.hangover_ms / 1000
    tries = 1 + RetryPolicy(g.max_retries, g.retry_backoff_s).max_timeout_retries
    backoff_s = g.retry_backoff_s
    asr_s, first_sentence_s = 1.0, 1.5  # a slow but working gateway's, before the hang
    worst = {
        "transcription": hangover_s + tries * g.asr_timeout_s + backoff_s,
        "chat": hangover_s + asr_s + g.llm_first_token_timeout_s,
        "speech": hangover_s + asr_s + first_sentence_s + tries * g.tts_first_byte_timeout_s
        + backoff_s,
    }  # fmt: skip
    assert max(worst.values()) < 8.0, worst
