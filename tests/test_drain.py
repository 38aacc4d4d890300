"""A deploy stops the server (SIGTERM) without dropping a call: `voice serve` as a process, a
call over a real socket mid-reply, the simulated gateway over HTTP (voice/app/drain.py)."""

import asyncio
import json
import os
import signal

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.deploy_stack import until
from tests.processes import voice_serve, workers_of
from tests.samples import recording, text
from tests.servers import serve_app
from tests.stack import SIMULATION
from voice.app.factory import create_app
from voice.bench.native import NativeCaller
from voice.config import Settings
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway

SAMPLE = "q01_what_time.wav"
# A reply of about 3 s of audio, so that the stop signal lands while it plays.
SLOW = SIMULATION.model_copy(update={"transcripts": [text(SAMPLE)], "speech_ms_per_char": 40})
FRESH = httpx.Limits(max_keepalive_connections=0)  # each request may reach another worker


async def refused_handshake(url):
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url.replace("http", "ws", 1) + "/v1/session", open_timeout=10):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body)["error"]["code"]


async def a_turn(caller, timeout_s=30):
    since = len(caller.events)
    await caller.say(recording(SAMPLE))
    return await caller.wait_for(
        lambda e: e.get("type") == "response.done", since=since, timeout_s=timeout_s
    )


def stop(process, whole_group):
    """SIGTERM to the server; ``whole_group``: to each of its processes at once, workers
    included, as ``systemctl stop`` does (KillMode=control-group)."""
    pids = [process.pid] + (workers_of(process.pid) if whole_group else [])
    for pid in pids:
        os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize(
    ("workers", "whole_group"),
    [(1, False), (2, False), (2, True)],
    ids=["one-process", "two-workers", "two-workers-all-signalled"],
)
async def test_sigterm_lets_a_call_mid_reply_go_on_refuses_new_ones_and_exits_0(
    workers, whole_group
):
    async with voice_serve(workers=workers, simulation=SLOW) as (process, url):
        ws_url = url.replace("http", "ws", 1) + "/v1/session"
        async with NativeCaller(ws_url) as caller:
            since = len(caller.events)
            await caller.say(recording(SAMPLE))
            # The reply has begun to play.
            assert await caller.wait_until(lambda: caller.ear.received_s > 0.5, timeout_s=30)
            stop(process, whole_group)
            async with httpx.AsyncClient(base_url=url, limits=FRESH) as client:
                # Every worker says so: no more calls here; the process still answers.
                async def all_draining():
                    answers = [await client.get("/ready") for _ in range(4)]
                    return all(a.status_code == 503 for a in answers) and all(
                        a.json()["status"] == "draining" for a in answers
                    )

                await until(all_draining, "/ready to say draining", 5)
                assert (await client.get("/health")).status_code == 200
                for _ in range(2):
                    assert await refused_handshake(url) == (503, "server_draining")
            # The reply in flight plays to its end, and the call goes on: another turn.
            first = await caller.wait_for(
                lambda e: e.get("type") == "response.done", since=since, timeout_s=30
            )
            assert first is not None and first["status"] == "completed", caller.events
            second = await a_turn(caller)
            assert second is not None and second["status"] == "completed"
            assert process.poll() is None
        # The caller hung up: nothing is left to drain.
        assert await asyncio.to_thread(process.wait, 20) == 0
        log = process.log()
        assert "draining" in log
        assert "Traceback" not in log


async def test_past_the_drain_timeout_a_call_is_ended_going_away_with_1001():
    env = {"VOICE_DRAIN_TIMEOUT_S": "1"}
    async with voice_serve(workers=1, simulation=SLOW, env=env) as (process, url):
        async with NativeCaller(url.replace("http", "ws", 1) + "/v1/session") as caller:
            await caller.wait_for(
                lambda e: e.get("type") == "session.created", since=0, timeout_s=10
            )
            process.send_signal(signal.SIGTERM)
            ended = await caller.wait_for(
                lambda e: e.get("type") == "session.ended", since=0, timeout_s=15
            )
            assert ended is not None and ended["reason"] == "going_away"
            await asyncio.wait_for(caller.closed.wait(), 10)
            assert caller._ws.close_code == 1001
        assert await asyncio.to_thread(process.wait, 20) == 0


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_a_second_signal_stops_at_once(workers):
    async with voice_serve(workers=workers, simulation=SLOW) as (process, url):
        async with NativeCaller(url.replace("http", "ws", 1) + "/v1/session") as caller:
            await caller.wait_for(
                lambda e: e.get("type") == "session.created", since=0, timeout_s=10
            )
            process.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(base_url=url) as client:

                async def unready():
                    return (await client.get("/ready")).status_code == 503

                await until(unready, "/ready to answer 503", 5)
            assert process.poll() is None  # a call is in progress: it waits
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(caller.closed.wait(), 15)
            await asyncio.to_thread(process.wait, 15)


async def test_while_draining_every_transport_refuses_new_calls_with_503():
    simulated = SimulatedGateway(SLOW)
    async with serve_app(create_gateway_app(simulated)) as gateway_url:
        app = create_app(Settings.model_validate({"gateway": {"url": gateway_url}}))
        async with serve_app(app) as url:
            drained = app.state.voice.drain.begin()  # no call in progress: it ends at once
            await asyncio.wait_for(drained, 5)
            ws = url.replace("http", "ws", 1)
            for path in ("/v1/session", "/v1/twilio", "/v1/telnyx"):
                with pytest.raises(InvalidStatus) as caught:
                    async with connect(ws + path, open_timeout=10):
                        pass
                body = json.loads(caught.value.response.body)
                assert caught.value.response.status_code == 503, path
                assert body["error"]["code"] == "server_draining"
            async with httpx.AsyncClient(base_url=url) as client:
                offer = await client.post("/v1/webrtc/offer", json={"sdp": "v=0", "type": "offer"})
                assert offer.status_code == 503
                assert offer.json()["error"]["code"] == "server_draining"
                ready = await client.get("/ready")
                assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert simulated.requests["transcribe"] + simulated.requests["chat"] == 0
