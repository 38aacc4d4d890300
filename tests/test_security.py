"""Callers authenticated and pages checked, over real sockets: each refusal is an HTTP status
before any session exists (the WebSocket handshake itself is refused), says what to fix
without repeating the token, and costs the operator no gateway request."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.processes import voice_serve
from tests.samples import recording, text
from tests.stack import REPLY, SIMULATION, app_stack
from voice.app.auth import Pins, TokenVerifier, mint
from voice.bench.caller import CallRefused, with_token
from voice.bench.native import call
from voice.errors import Unauthorized

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SECRET = "a-test-secret-that-is-long-enough-0123456789"


def billed(gateway):
    """Requests that cost the operator: ASR, chat, TTS (not the warm-up's model list)."""
    requests = gateway.requests
    return requests["transcribe"] + requests["chat"] + requests["speak"]


async def refused_handshake(url, headers=None):
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers or {}, open_timeout=10):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}").get("error", {})


async def test_without_a_valid_token_the_handshake_is_refused_with_401_saying_why():
    expired = mint(SECRET, ttl_s=60, now=time.time() - 3600)
    foreign = mint("another-secret-that-is-long-enough-0123456789")
    async with app_stack(auth={"secret": SECRET}) as (url, simulated):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        status, error = await refused_handshake(ws)
        assert (status, error["code"]) == (401, "unauthorized") and "required" in error["message"]
        status, error = await refused_handshake(with_token(ws, expired))
        assert status == 401 and "expired" in error["message"]
        assert expired not in error["message"]
        status, error = await refused_handshake(ws, {"Authorization": f"Bearer {foreign}"})
        assert status == 401 and "signature" in error["message"]
        status, error = await refused_handshake(with_token(ws, "garbage"))
        assert status == 401 and "malformed" in error["message"]
        async with httpx.AsyncClient(base_url=url) as client:
            metrics = (await client.get("/metrics")).text
    assert "voice_sessions_total 0" in metrics
    assert "voice_sessions_rejected_total 4" in metrics
    assert billed(simulated) == 0


async def test_a_valid_token_in_the_query_or_the_header_gets_a_turn():
    sample = "q01_what_time.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with app_stack(simulation, auth={"secret": SECRET}) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        result = await call(with_token(ws, mint(SECRET, sub="user-1")), recording(sample))
        assert result.reply_text == REPLY
        async with connect(ws, additional_headers={"Authorization": f"Bearer {mint(SECRET)}"}):
            pass  # accepted


async def test_a_token_pins_instructions_voice_and_length():
    pins = Pins(instructions="Answer in French.", voice="nova", max_session_s=1.0)
    token = mint(SECRET, pins=pins.model_copy(update={"allow_update": False}))
    async with app_stack(auth={"secret": SECRET}) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        async with connect(with_token(ws, token)) as socket:
            created = json.loads(await socket.recv())
            assert created["session"]["instructions"] == "Answer in French."
            assert created["session"]["voice"] == "nova"
            update = {"type": "session.update", "session": {"instructions": "Obey me."}}
            await socket.send(json.dumps(update))
            error = json.loads(await socket.recv())
            assert error["code"] == "invalid_session_update" and "token" in error["message"]
            async with asyncio.timeout(10):
                async for message in socket:
                    if json.loads(message)["type"] == "session.ended":
                        break
            await socket.wait_closed()
            assert socket.close_code == 1000 and socket.close_reason == "max_duration"


async def test_instructions_past_the_cap_are_refused():
    async with app_stack(limits={"max_instructions_chars": 100}) as (url, _):
        async with connect(url.replace("http", "ws", 1) + "/v1/session") as socket:
            json.loads(await socket.recv())  # session.created
            update = {"type": "session.update", "session": {"instructions": "x" * 101}}
            await socket.send(json.dumps(update))
            error = json.loads(await socket.recv())
            assert error["code"] == "invalid_session_update" and "100" in error["message"]


async def test_a_page_from_another_origin_is_refused_with_403_before_anything_else():
    async with app_stack(auth={"secret": SECRET}) as (url, simulated):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        token = mint(SECRET)
        for origin in ("https://evil.example", "null"):
            status, error = await refused_handshake(with_token(ws, token), {"Origin": origin})
            assert (status, error["code"]) == (403, "origin_not_allowed"), origin
        # Its own page, reached by its address, may call.
        async with connect(with_token(ws, token), additional_headers={"Origin": url}):
            pass
        async with httpx.AsyncClient(base_url=url) as client:
            offer = {"sdp": "v=0", "type": "offer"}
            evil = {"Origin": "https://evil.example", "Authorization": f"Bearer {token}"}
            response = await client.post("/v1/webrtc/offer", json=offer, headers=evil)
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "origin_not_allowed"
    assert billed(simulated) == 0


async def test_an_offer_needs_a_token_and_json():
    async with app_stack(auth={"secret": SECRET}) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            offer = {"sdp": "v=0", "type": "offer"}
            response = await client.post("/v1/webrtc/offer", json=offer)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            # A cross-site "simple request" (text/plain, no preflight) never reaches the offer.
            auth = {"Authorization": f"Bearer {mint(SECRET)}", "Content-Type": "text/plain"}
            response = await client.post(
                "/v1/webrtc/offer", content=json.dumps(offer), headers=auth
            )
            assert response.status_code == 415
            assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_allowed_origins_are_the_operators_list():
    allowed = "https://app.example"
    async with app_stack(auth={"allowed_origins": allowed}) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        async with connect(ws, additional_headers={"Origin": "https://app.example"}):
            pass
        # With a list, even the server's own address is only what the list says.
        status, _ = await refused_handshake(ws, {"Origin": url})
        assert status == 403


def test_an_unsigned_token_never_passes():
    unsigned = jwt.encode({"exp": time.time() + 60}, key=None, algorithm="none")
    with pytest.raises(Unauthorized):
        TokenVerifier(SECRET).verify(unsigned)


async def test_on_a_network_address_a_carrier_without_its_credential_is_not_served():
    exposed = {"server": {"host": "0.0.0.0"}, "auth": {"secret": SECRET}}
    async with app_stack(**exposed) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/v1/twilio/twiml")).status_code == 404
        status, _ = await refused_handshake(url.replace("http", "ws", 1) + "/v1/telnyx")
        assert status in (403, 404)
    with_token_ = {**exposed, "telephony": {"twilio_auth_token": "twilio-token"}}
    async with app_stack(**with_token_) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            # Served, and checking the signature: an unsigned request is refused.
            assert (await client.get("/v1/twilio/twiml")).status_code == 403


async def test_metrics_can_require_a_token_while_health_and_ready_stay_open():
    async with app_stack(auth={"metrics_token": "metrics-secret"}) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/metrics")).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await client.get("/metrics", headers=wrong)).status_code == 401
            right = {"Authorization": "Bearer metrics-secret"}
            response = await client.get("/metrics", headers=right)
            assert response.status_code == 200 and "voice_sessions_total" in response.text
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 200


def test_voice_serve_on_a_network_address_needs_a_secret_or_no_auth():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    command = [sys.executable, "-m", "voice.cli", "serve", "--host", "0.0.0.0", "--port", "1"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "VOICE_AUTH_SECRET" in refused.stderr and "--no-auth" in refused.stderr
    # A short secret is refused as clearly.
    short = subprocess.run(
        command, env={**env, "VOICE_AUTH_SECRET": "short"}, capture_output=True, text=True
    )
    assert short.returncode == 2 and "32" in short.stderr


async def test_a_plain_http_request_on_a_websocket_route_gets_426():
    async with app_stack() as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            for path in ("/v1/session", "/v1/twilio", "/v1/telnyx"):
                response = await client.get(path)
                assert response.status_code == 426, path
                assert response.headers["upgrade"] == "websocket"
                assert response.json()["error"]["code"] == "upgrade_required"


async def test_voice_call_without_a_token_says_the_call_was_refused_and_why():
    async with app_stack(auth={"secret": SECRET}) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        with pytest.raises(CallRefused) as refused:
            await call(ws, recording("q01_what_time.wav"), timeout_s=10)
        assert str(refused.value) == "HTTP 401 unauthorized"
        assert "token is required" in refused.value.message
        env = {k: v for k, v in os.environ.items() if k != "VOICE_TOKEN"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voice.cli", "call", str(SAMPLES / "q01_what_time.wav"),
            "--url", ws, "--timeout", "10",
            env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    text_ = stderr.decode()
    assert "refused the call: HTTP 401 unauthorized" in text_ and "--token" in text_
    assert "Traceback" not in text_


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_a_token_in_the_query_never_reaches_the_server_log(workers):
    token = mint(SECRET, sub="log-reader")
    async with voice_serve(workers=workers, env={"VOICE_AUTH_SECRET": SECRET}) as (process, url):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        for _ in range(2):  # either worker may take it
            async with connect(with_token(ws, token)):
                pass
        async with httpx.AsyncClient(base_url=url) as client:
            await client.get("/health", params={"token": token})
        await asyncio.sleep(0.5)
        log = process.log()
    assert "token=[redacted]" in log
    assert token not in log and token.split(".")[2] not in log
