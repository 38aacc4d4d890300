"""deploy/haproxy/haproxy.cfg as shipped, run by Debian's HAProxy on loopback in front of real
`voice serve` processes (against the simulated gateway over HTTP): sessions end to end
through it, new calls kept off an instance whose /ready fails or that is gone, retries on
503, the per-address limit and TLS."""

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import connect

from tests.deploy_stack import (
    HAPROXY_CFG,
    free_port,
    haproxy,
    haproxy_binary,
    until,
    voice_instance,
)
from tests.samples import recording
from tests.servers import serve_app
from tests.stack import REPLY, SIMULATION
from voice.bench.caller import CallRefused
from voice.bench.native import NativeCaller, call
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway

pytestmark = pytest.mark.deploy

SAMPLES = ("q01_what_time.wav", "q02_going_to_rain.wav", "q06_pharmacy_hours.wav")


def check_config(**variables):
    """``haproxy -c`` on the shipped file with ``variables`` as its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")} | variables
    done = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(HAPROXY_CFG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, done.stdout + done.stderr


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key in one PEM file (HAProxy's ``crt``), and an
    SSL context that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "lb.pem"
    path.write_bytes(cert_pem + key_pem)
    context = ssl.create_default_context(cadata=cert_pem.decode())
    return path, context


def test_the_shipped_config_is_valid_with_one_instance_or_eight_tls_and_a_user(tmp_path):
    status, output = check_config(LB_INSTANCE_1="127.0.0.1:8080")
    assert status == 0, output
    assert "Configuration file is valid" in output
    assert "WARNING" not in output and "ALERT" not in output, output

    cert, _ = self_signed(tmp_path)
    every = {f"LB_INSTANCE_{n}": f"10.0.0.{n}:8080" for n in range(1, 9)}
    status, output = check_config(
        **every,
        LB_BIND=":8080",
        LB_TLS_BIND="127.0.0.1:8443",
        LB_TLS_CERT=str(cert),
        LB_STATS_BIND="127.0.0.1:8404",
        LB_MAX_CONN_PER_ADDRESS="200",
        LB_USER="root",
    )
    assert status == 0, output
    assert "WARNING" not in output and "ALERT" not in output, output


def test_the_config_names_the_variable_it_misses():
    status, output = check_config()
    assert status != 0
    assert "set LB_INSTANCE_1" in output, output


@asynccontextmanager
async def simulated_gateway():
    async with serve_app(create_gateway_app(SimulatedGateway(SIMULATION))) as url:
        yield url


def answered(result):
    """The one reply of a finished native call: completed, with the simulated text."""
    (done,) = result.of_type("response.done")
    assert done["status"] == "completed", result.events
    assert done["text"] == REPLY
    assert result.received, "no reply audio"
    return done


async def created(caller):
    assert await caller.wait_for_events("session.created", timeout_s=10), caller.events


async def test_a_call_through_haproxy_and_none_to_an_instance_that_is_not_ready():
    async with simulated_gateway() as gateway_url, AsyncExitStack() as stack:
        # `a` takes one session: with it, its /ready says 503, as a draining instance's does.
        a = await stack.enter_async_context(voice_instance(gateway_url, "--max-sessions", "1"))
        b = await stack.enter_async_context(voice_instance(gateway_url))
        lb = await stack.enter_async_context(haproxy([a.address, b.address]))
        await lb.until_status({"voice1": "UP", "voice2": "UP"})
        url = lb.ws_url + "/v1/session"

        # A whole turn through HAProxy: upgrade, audio both ways, events.
        answered(await call(url, recording("q03_weather_paris.wav"), timeout_s=30))

        # Two sessions held at once: least-connections gives each instance one (once `a`,
        # full during that call if it took it, is back in the rotation).
        await lb.until_status({"voice1": "UP", "voice2": "UP"})
        await lb.until_idle()
        before = {"a": await a.metric("voice_sessions_total")}
        before["b"] = await b.metric("voice_sessions_total")
        one, two = NativeCaller(url, keep_audio=True), NativeCaller(url, keep_audio=True)
        async with one, two:
            await created(one)
            await created(two)
            assert await a.metric("voice_sessions_active") == 1
            assert await b.metric("voice_sessions_active") == 1
            # `a` is full: its /ready fails, and HAProxy takes it out of the rotation.
            await lb.until_status({"voice1": "DOWN", "voice2": "UP"})

            async def held_turn(caller, sample):
                await caller.say(recording(sample))
                assert await caller.wait_for_events("response.done", timeout_s=30), caller.events
                return caller

            # New calls all go to `b`; the calls already on each instance go on, through
            # HAProxy, the one on the instance marked down included.
            results = await asyncio.gather(
                *(call(url, recording(sample), timeout_s=30) for sample in SAMPLES),
                held_turn(one, "q04_remind_mother.wav"),
                held_turn(two, "q05_reset_password.wav"),
            )
            for result in results:
                answered(result)
            # Each held one session; every new call went to `b`.
            assert await a.metric("voice_sessions_total") == before["a"] + 1
            assert await b.metric("voice_sessions_total") == before["b"] + 1 + len(SAMPLES)
            assert (await lb.servers())["voice1"]["status"] == "DOWN"

        # Its session over, `a` is ready again and back in the rotation.
        await lb.until_status({"voice1": "UP", "voice2": "UP"})


async def test_new_calls_reach_the_other_instance_at_once_when_one_is_gone():
    async with simulated_gateway() as gateway_url, AsyncExitStack() as stack:
        a = await stack.enter_async_context(voice_instance(gateway_url))
        b = await stack.enter_async_context(voice_instance(gateway_url))
        lb = await stack.enter_async_context(haproxy([a.address, b.address]))
        await lb.until_status({"voice1": "UP", "voice2": "UP"})
        before = await b.metric("voice_sessions_total")

        await a.process.stop(signal.SIGKILL)
        # Before HAProxy's checks notice (two failures, a second apart), calls sent to `a`
        # fail to connect and are redispatched to `b`: none reaches the caller as an error.
        url = lb.ws_url + "/v1/session"
        async with AsyncExitStack() as sessions:
            callers = [await sessions.enter_async_context(NativeCaller(url)) for _ in range(4)]
            for caller in callers:
                await created(caller)
            assert await b.metric("voice_sessions_active") == 4
        servers = await lb.servers()
        assert int(servers["voice1"]["wredis"]) >= 1, servers["voice1"]
        assert await b.metric("voice_sessions_total") == before + 4
        await lb.until_status({"voice1": "DOWN", "voice2": "UP"})


def draining_instance(refused):
    """An instance in the moment between draining and HAProxy's next check: /ready still 200,
    every new session refused with 503 ``server_draining`` before the upgrade, every offer
    likewise; ``refused`` gets the path of each session and the body size of each offer."""

    async def ready(request):
        return JSONResponse({"sessions": 0, "max_sessions": 1})

    body = {"error": {"code": "server_draining", "message": "draining"}}

    async def session(websocket):
        refused.append(websocket.url.path)
        await websocket.send_denial_response(JSONResponse(body, status_code=503))

    async def offer(request):
        refused.append(len(await request.body()))
        return JSONResponse(body, status_code=503)

    return Starlette(
        routes=[
            Route("/ready", ready),
            Route("/health", ready),
            WebSocketRoute("/v1/session", session),
            Route("/v1/webrtc/offer", offer, methods=["POST"]),
        ]
    )


async def test_a_503_before_the_upgrade_is_retried_on_another_instance():
    refused = []
    async with simulated_gateway() as gateway_url, AsyncExitStack() as stack:
        draining = await stack.enter_async_context(serve_app(draining_instance(refused)))
        b = await stack.enter_async_context(voice_instance(gateway_url))
        lb = await stack.enter_async_context(haproxy([draining.removeprefix("http://"), b.address]))
        await lb.until_status({"voice1": "UP", "voice2": "UP"})
        url = lb.ws_url + "/v1/session"
        async with AsyncExitStack() as sessions:
            # Each held session on `b` makes the draining one, with none, least loaded: every
            # new call is tried there first.
            for n in range(1, 4):
                caller = await sessions.enter_async_context(NativeCaller(url))
                await created(caller)
                assert await b.metric("voice_sessions_active") == n
            assert len(refused) >= 2, refused
            # An offer too, body and all (a browser's is 2-6 KiB): the real instance answers
            # it, here 400 for an SDP that is no offer.
            offer = json.dumps({"type": "offer", "sdp": "v=0\r\n" + "a=x-padding\r\n" * 500})
            async with httpx.AsyncClient(base_url=lb.url, timeout=10) as client:
                json_body = {"Content-Type": "application/json"}
                answer = await client.post("/v1/webrtc/offer", content=offer, headers=json_body)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_offer"
            assert refused[-1] == len(offer), refused
        assert (await lb.servers())["voice1"]["status"] == "UP"  # /ready said 200 all along


async def test_one_address_may_hold_only_so_many_connections():
    async with simulated_gateway() as gateway_url, AsyncExitStack() as stack:
        a = await stack.enter_async_context(voice_instance(gateway_url))
        lb = await stack.enter_async_context(
            haproxy([a.address], env={"LB_MAX_CONN_PER_ADDRESS": "2"})
        )
        await lb.until_status({"voice1": "UP"})
        url = lb.ws_url + "/v1/session"
        async with NativeCaller(url) as one:
            async with NativeCaller(url) as two:
                await created(one)
                await created(two)
                with pytest.raises(CallRefused) as refused:
                    async with NativeCaller(url):
                        pass
                assert str(refused.value) == "HTTP 429 too_many_connections"
                assert "too many connections" in refused.value.message
                assert await a.metric("voice_sessions_active") == 2

            # One closed, a new one fits again (once HAProxy has counted the close).
            async def fits():
                try:
                    async with NativeCaller(url) as three:
                        await created(three)
                        return True
                except CallRefused:
                    return False

            await until(fits, "a third connection to fit after one closed")


async def test_wss_through_haproxy_terminating_tls(tmp_path):
    cert, context = self_signed(tmp_path)
    async with simulated_gateway() as gateway_url, AsyncExitStack() as stack:
        a = await stack.enter_async_context(voice_instance(gateway_url))
        tls_port = free_port()
        lb = await stack.enter_async_context(
            haproxy(
                [a.address],
                env={"LB_TLS_BIND": f"127.0.0.1:{tls_port}", "LB_TLS_CERT": str(cert)},
            )
        )
        await lb.until_status({"voice1": "UP"})
        async with connect(f"wss://127.0.0.1:{tls_port}/v1/session", ssl=context) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            assert await a.metric("voice_sessions_active") == 1


async def test_an_oversized_handshake_is_answered_400_before_any_instance():
    # Port 9 (discard): nothing listens; the request must not get that far.
    async with haproxy(["127.0.0.1:9"]) as lb, httpx.AsyncClient(base_url=lb.url) as client:
        long_line = await client.get("/v1/session", headers={"X-Big": "a" * 20_000})
        assert long_line.status_code == 400
        many = {f"X-Header-{n}": "v" for n in range(120)}
        assert (await client.get("/v1/session", headers=many)).status_code == 400
        assert (await lb.servers())["voice1"]["stot"] == "0"
