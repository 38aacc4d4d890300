"""``/ready`` says whether this process reaches its gateway (voice/app/gateway_health.py):
`voice serve` as a process and in this one, the simulated gateway over real HTTP on
127.0.0.1, stopped and started again on its port."""

import asyncio
import logging
import time
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.processes import free_port, voice_serve
from tests.samples import recording, text
from tests.servers import serve_app
from tests.stack import SIMULATION
from tests.timing import MS
from voice.app.factory import create_app
from voice.app.gateway_health import GatewayHealth
from voice.bench.native import NativeCaller
from voice.config import GatewaySettings, Settings
from voice.core.events import ErrorEvent, ResponseDone, TurnTimings
from voice.errors import GatewayUnavailable
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import Fault, SimulatedGateway

SAMPLE = "q01_what_time.wav"
TURNS = SIMULATION.model_copy(
    update={"transcripts": [text(SAMPLE)], "replies": ["It is half past three."]}
)
API_KEY = "sk-health-secret-0123456789"
PROBE_S = 200 * MS
REFUSED = "could not connect to the gateway (connection refused)"
FRESH = httpx.Limits(max_keepalive_connections=0)  # each request may reach another worker


def settings(url, **gateway):
    return Settings.model_validate(
        {"gateway": {"url": url, "probe_s": PROBE_S, "probe_timeout_s": 1.0, **gateway}}
    )


async def ready(url):
    async with httpx.AsyncClient(base_url=url, limits=FRESH) as client:
        answer = await client.get("/ready")
    return answer.status_code, answer.json()


async def until_ready(url, status, timeout_s=10.0, answers=1):
    """The ``/ready`` body once ``answers`` in a row have ``status``; fails at ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        bodies = [await ready(url) for _ in range(answers)]
        if all(code == status for code, _ in bodies):
            return bodies[-1][1]
        assert time.monotonic() < deadline, f"/ready never answered {status}: {bodies}"
        await asyncio.sleep(50 * MS)


async def a_turn(caller):
    """Say one sentence; the turn's last event: its ``response.done`` or its ``error``."""
    since = len(caller.events)
    await caller.say(recording(SAMPLE))
    event = await caller.wait_for(
        lambda e: e.get("type") in ("response.done", "error"), since=since, timeout_s=30
    )
    assert event is not None, caller.events[since:]
    return event


@asynccontextmanager
async def gateway_on(port, simulation=TURNS, api_key=None):
    """The simulated gateway over HTTP on ``port``; yields it."""
    simulated = SimulatedGateway(simulation)
    async with serve_app(create_gateway_app(simulated, api_key=api_key), port=port):
        yield simulated


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_a_gateway_down_at_start_keeps_ready_503_with_the_reason_until_it_answers(workers):
    port = free_port()  # nothing listens there yet
    gateway_url = f"http://127.0.0.1:{port}/v1"
    env = {"VOICE_GATEWAY_PROBE_S": str(PROBE_S), "VOICE_GATEWAY_API_KEY": API_KEY}
    async with voice_serve(workers=workers, env=env, gateway_url=gateway_url) as (process, url):
        # Every worker probed at its start and says so; the process answers all the same.
        body = await until_ready(url, 503, answers=4)
        assert body["status"] == "gateway_unreachable"
        assert body["gateway"].startswith(f"{gateway_url}: {REFUSED}")
        assert API_KEY not in str(body)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).status_code == 200
        async with gateway_on(port, api_key=API_KEY) as simulated:
            started = time.monotonic()
            body = await until_ready(url, 200, answers=4)
            took = time.monotonic() - started
            assert body["status"] == "ready" and "gateway" not in body
            assert took < 5 * PROBE_S + 2, f"ready {took:.1f} s after the gateway came up"
            # Probed until it answered, then no more.
            assert 1 <= simulated.requests["models"] <= 2 * workers
            async with NativeCaller(url.replace("http", "ws", 1) + "/v1/session") as caller:
                assert (await a_turn(caller))["status"] == "completed"
        log = process.log()
        assert "gateway unreachable" in log and "answers again" in log
        assert API_KEY not in log


async def test_a_gateway_that_goes_away_makes_ready_503_after_the_threshold_then_comes_back():
    port = free_port()
    app = create_app(settings(f"http://127.0.0.1:{port}", failure_threshold=2))
    async with AsyncExitStack() as gateway:
        await gateway.enter_async_context(gateway_on(port))
        async with serve_app(app) as url:
            ws_url = url.replace("http", "ws", 1) + "/v1/session"
            async with NativeCaller(ws_url) as caller:
                assert (await a_turn(caller))["status"] == "completed"
                await gateway.aclose()  # the gateway goes away; the call goes on
                failed = await a_turn(caller)
                assert failed["type"] == "error" and failed["code"] == "gateway_unavailable"
                assert (await ready(url))[0] == 200  # one failure is under the threshold
                assert (await a_turn(caller))["code"] == "gateway_unavailable"
                body = await until_ready(url, 503, timeout_s=2)
                assert body["status"] == "gateway_unreachable"
                assert f"2 turns in a row failed: {REFUSED}" in body["gateway"]
                async with gateway_on(port) as back:
                    await until_ready(url, 200, timeout_s=5 * PROBE_S + 2)
                    assert back.requests["models"] >= 1  # a probe found it
                    assert (await a_turn(caller))["status"] == "completed"


async def test_no_probe_while_turns_succeed():
    port = free_port()
    async with gateway_on(port) as simulated:
        async with serve_app(create_app(settings(f"http://127.0.0.1:{port}"))) as url:
            assert simulated.requests["models"] == 1  # the probe at start
            async with NativeCaller(url.replace("http", "ws", 1) + "/v1/session") as caller:
                for _ in range(2):
                    assert (await a_turn(caller))["status"] == "completed"
            assert (await ready(url))[0] == 200
        # Many probe periods passed: not one more request for the models.
        assert simulated.requests["models"] == 1
        assert simulated.requests["chat"] == 2


async def test_models_the_gateway_does_not_list_are_named_in_one_warning(caplog):
    listed = TURNS.model_copy(update={"models": ["whisper-1", "gpt-4o-mini", "other-tts"]})
    port = free_port()
    async with gateway_on(port, listed):
        app = create_app(settings(f"http://127.0.0.1:{port}", llm_model="llama-3-8b"))
        with caplog.at_level(logging.WARNING, logger="voice.app.gateway_health"):
            async with serve_app(app) as url:
                assert (await ready(url))[0] == 200  # a warning, not a failure
    warnings = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "llama-3-8b (VOICE_LLM_MODEL), tts-1 (VOICE_TTS_MODEL)" in warnings[0]
    assert "whisper-1" not in warnings[0]


async def test_a_refused_api_key_keeps_ready_503_and_the_key_out_of_the_reason():
    port = free_port()
    wrong = "sk-wrong-key-0123456789"
    async with gateway_on(port, api_key=API_KEY):
        app = create_app(settings(f"http://127.0.0.1:{port}", api_key=wrong))
        async with serve_app(app) as url:
            status, body = await ready(url)
    assert (status, body["status"]) == (503, "gateway_unreachable")
    assert "refused our API key for the models request: HTTP 401" in body["gateway"]
    assert wrong not in str(body)


async def test_a_gateway_that_does_not_answer_is_unreachable_within_the_probe_timeout():
    async def hold(reader, writer):
        await reader.read()  # read until the client gives up; never answer

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        app = create_app(settings(f"http://127.0.0.1:{port}", probe_timeout_s=0.3))
        started = time.monotonic()
        async with serve_app(app) as url:
            took = time.monotonic() - started
            status, body = await ready(url)
    assert (status, body["status"]) == (503, "gateway_unreachable")
    assert "0.3 s" in body["gateway"], body
    assert took < 3, f"startup waited {took:.1f} s for a silent gateway"


async def test_a_gateway_without_a_models_route_is_reachable_with_a_warning(caplog):
    async def not_found(request):
        return JSONResponse({"error": {"message": "no such route"}}, status_code=404)

    async with serve_app(Starlette(routes=[Route("/v1/models", not_found)])) as gateway_url:
        with caplog.at_level(logging.WARNING, logger="voice.app.gateway_health"):
            async with serve_app(create_app(settings(gateway_url))) as url:
                assert (await ready(url))[0] == 200
    assert any("could not check the configured model ids" in r.getMessage() for r in caplog.records)


async def test_a_gateway_in_the_process_is_not_probed_and_always_ready():
    failing = TURNS.model_copy(
        update={"faults": [Fault(route="transcribe", kind="status", status=503, count=-1)]}
    )
    simulated = SimulatedGateway(failing)
    app = create_app(settings(None, failure_threshold=1), gateway=simulated)
    async with serve_app(app) as url:
        async with NativeCaller(url.replace("http", "ws", 1) + "/v1/session") as caller:
            assert (await a_turn(caller))["code"] == "gateway_unavailable"
        assert (await ready(url))[0] == 200
    assert simulated.requests["models"] == 0


class ScriptedProbe:
    """Answers probes from a script: a list of model ids, or an error to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    async def probe(self, timeout_s):
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


MODELS = ["whisper-1", "gpt-4o-mini", "tts-1"]


def failed(code="gateway_unavailable"):
    return ErrorEvent(code, REFUSED)


def done(status):
    return ResponseDone("resp_1", "", status, TurnTimings())


async def test_a_completed_reply_starts_the_count_again_and_other_errors_do_not_count():
    probe = ScriptedProbe(MODELS)
    health = GatewayHealth(
        probe=probe, settings=GatewaySettings(url="http://gw.test/v1", failure_threshold=2)
    )
    await health.start()
    for event in (failed(), done("completed"), failed("gateway_timeout"), done("failed")):
        health.observe(event)
    for code in ("payment_required", "gateway_bad_request", "rate_limited", "internal_error"):
        health.observe(failed(code))
    assert health.reachable and probe.calls == 1  # only the start's probe
    health.observe(failed())
    assert not health.reachable
    assert health.reason == f"http://gw.test/v1: 2 turns in a row failed: {REFUSED}"
    await health.aclose()


async def test_probes_run_every_period_while_unreachable_and_stop_when_one_answers():
    down = GatewayUnavailable("could not connect to the gateway (refused)")
    probe = ScriptedProbe(down, down, down, MODELS)
    health = GatewayHealth(
        probe=probe, settings=GatewaySettings(url="http://gw.test/v1", probe_s=20 * MS)
    )
    await health.start()
    assert health.reason == "http://gw.test/v1: could not connect to the gateway (refused)"
    deadline = time.monotonic() + 5
    while not health.reachable:
        assert time.monotonic() < deadline
        await asyncio.sleep(10 * MS)
    assert probe.calls == 4
    await asyncio.sleep(100 * MS)  # five periods: no probe while reachable
    assert probe.calls == 4
    await health.aclose()


async def test_closing_stops_the_probes():
    probe = ScriptedProbe(GatewayUnavailable("refused"))
    health = GatewayHealth(
        probe=probe, settings=GatewaySettings(url="http://gw.test/v1", probe_s=10 * MS)
    )
    await health.start()
    deadline = time.monotonic() + 5
    while probe.calls < 3:  # the start's probe, then one a period
        assert time.monotonic() < deadline
        await asyncio.sleep(10 * MS)
    await health.aclose()
    calls = probe.calls
    await asyncio.sleep(50 * MS)
    assert probe.calls == calls and not health.reachable
