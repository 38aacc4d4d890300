"""A rolling restart on this machine: HAProxy from the shipped config in front of two
`voice serve` processes, phone calls (Twilio Media Streams) arriving over ~9 s, and one
instance stopped (SIGTERM) half way. No call may lose a turn."""

import asyncio
import re
import signal
import time
from contextlib import AsyncExitStack

import pytest

from tests.deploy_stack import haproxy, voice_instance
from tests.servers import serve_app
from tests.stack import SIMULATION
from voice.bench.runner import run_bench
from voice.bench.workload import DEFAULT_SAMPLES, Workload, load_recordings
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway

pytestmark = pytest.mark.deploy

CALLS, TURNS, OVER_S = 12, 3, 9.0
STARTED = re.compile(r"twilio call started")


def calls_started(log: str, *, after: str | None = None) -> int:
    if after is not None:
        log = log[log.index(after) :]
    return len(STARTED.findall(log))


async def test_a_rolling_restart_drops_no_call_and_sends_new_ones_to_the_other_instance():
    async with AsyncExitStack() as stack:
        gateway = SimulatedGateway(SIMULATION)
        gateway_url = await stack.enter_async_context(serve_app(create_gateway_app(gateway)))
        a = await stack.enter_async_context(voice_instance(gateway_url))
        b = await stack.enter_async_context(voice_instance(gateway_url))
        lb = await stack.enter_async_context(haproxy([a.address, b.address]))
        await lb.until_status({"voice1": "UP", "voice2": "UP"})

        workload = Workload(sessions=CALLS, ramp_per_s=CALLS / OVER_S, turns=TURNS, think_s=0.5)
        bench = asyncio.create_task(
            run_bench(lb.ws_url + "/v1/twilio", workload, load_recordings(DEFAULT_SAMPLES))
        )
        await asyncio.sleep(OVER_S / 2)
        a_before = calls_started(a.process.log())
        a.process.popen.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        result = await asyncio.wait_for(bench, 120)
        # The drained instance exits by itself, 0, once its last call has ended.
        status = await asyncio.to_thread(a.process.popen.wait, 30)
        drained_s = time.monotonic() - stopped_at
        a_log, b_log = a.process.log(), b.process.log()

    turns = [(t.session, t.turn) for t in result.turns]
    assert sorted(turns) == [(s, t) for s in range(CALLS) for t in range(TURNS)]
    assert result.errors() == {}, result.errors()
    assert all(t.voice_to_voice_ms is not None for t in result.turns)
    assert status == 0, a_log
    # Calls were on `a` when it was stopped, and they finished there; no call started on
    # `a` after the stop: every later one went to `b`.
    assert a_before > 0
    assert calls_started(a_log, after="draining") == 0
    assert calls_started(a_log) + calls_started(b_log) == CALLS
    print(
        f"rolling restart: {CALLS} calls x {TURNS} turns, every turn answered; "
        f"{a_before} calls on the stopped instance finished there, it exited 0 after "
        f"{drained_s:.1f} s; {calls_started(b_log)} calls on the other; voice-to-voice p50 "
        f"{result.summary()['voice_to_voice_ms']['p50']:.0f} ms"
    )
