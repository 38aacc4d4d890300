"""The gateway HTTP server over real sockets on 127.0.0.1, driven by a plain httpx client."""

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from tests.servers import serve_app
from tests.timing import MS, SCALE
from voice.audio.frames import PcmFrame
from voice.core.dialog import ChatMessage
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import Fault, SimulatedGateway, SimulationSettings

REPLY = "One two three four."
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
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
SPEECH = {"model": "tts-1", "input": "Hello there, friend.", "voice": "alloy"}
WAV = b"RIFF" + bytes(40)


@pytest.fixture
def gateway():
    return SimulatedGateway(FAST)


@pytest.fixture
async def client(gateway):
    async with (
        serve_app(create_gateway_app(gateway)) as url,
        httpx.AsyncClient(base_url=url, timeout=2000 * MS) as client,
    ):
        yield client


def set_faults(gateway, *faults, **latencies):
    gateway.update(FAST.model_copy(update={"faults": list(faults), **latencies}))


def sse_events(body: str) -> list[str]:
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e.removeprefix("data: ") for e in events]


async def until(condition, within_ms: float = 2000) -> None:
    """Poll ``condition`` (a counter has no event to wait on) until it holds."""
    async with asyncio.timeout(within_ms * MS):
        while True:
            if condition():
                return
            await asyncio.sleep(MS)


async def test_health_and_request_ids(client):
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["x-request-id"].startswith("req_")
    r = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_models(client):
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == FAST.models


async def test_transcription(client):
    files = {"file": ("turn.wav", WAV, "audio/wav")}
    r = await client.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert r.status_code == 200
    assert r.json() == {"text": "what time is it"}
    data = {"model": "whisper-1", "response_format": "text"}
    r = await client.post("/v1/audio/transcriptions", files=files, data=data)
    assert r.text == "what time is it"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"data": {"model": "whisper-1"}}, "'file'"),
        ({"files": {"file": ("a.wav", WAV)}}, "'model'"),
        (
            {"files": {"file": ("a.wav", WAV)}, "data": {"model": "m", "response_format": "srt"}},
            "response_format",
        ),
        ({"json": {"model": "whisper-1"}}, "'file'"),
    ],
)
async def test_transcription_validates_the_form(client, kwargs, problem):
    r = await client.post("/v1/audio/transcriptions", **kwargs)
    assert r.status_code == 400
    error = r.json()["error"]
    assert problem in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "gateway_bad_request"


async def test_chat_without_streaming(client):
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_chat_streams_sse_chunks(client):
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == REPLY
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


async def test_chat_deltas_arrive_while_the_reply_is_still_being_written(client, gateway):
    set_faults(gateway, ms_per_token=30 * SCALE)
    request = {**CHAT, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=request) as r:
        lines = r.aiter_lines()
        first = await anext(lines)
        assert first.startswith("data: ")
        assert gateway.in_flight["chat"] == 1
        rest = [line async for line in lines]
    assert rest[-2:] == ["data: [DONE]", ""]
    assert gateway.in_flight["chat"] == 0


async def test_speech_pcm_streams_the_gateway_audio(client, gateway):
    expected = b"".join([f.pcm async for f in SimulatedGateway(FAST).speak(SPEECH["input"])])
    set_faults(gateway, tts_rtf=0.5)
    request = {**SPEECH, "response_format": "pcm"}
    async with client.stream("POST", "/v1/audio/speech", json=request) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "audio/pcm"
        chunks = r.aiter_bytes()
        received = await anext(chunks)
        assert received
        assert gateway.in_flight["speak"] == 1, "first bytes must come before synthesis ends"
        received += b"".join([chunk async for chunk in chunks])
    assert received == expected


async def test_speech_wav_has_a_streaming_header(client, gateway):
    set_faults(gateway, tts_rtf=0.5)
    request = {**SPEECH, "response_format": "wav"}
    async with client.stream("POST", "/v1/audio/speech", json=request) as r:
        assert r.headers["content-type"] == "audio/wav"
        chunks = r.aiter_bytes()
        received = await anext(chunks)
        assert gateway.in_flight["speak"] == 1
        received += b"".join([chunk async for chunk in chunks])
    riff, riff_size, wave_fmt = struct.unpack("<4sI8s", received[:16])
    assert (riff, riff_size, wave_fmt) == (b"RIFF", 0xFFFFFFFF, b"WAVEfmt ")
    fmt = struct.unpack("<IHHIIHH", received[16:36])
    assert fmt == (16, 1, 1, 24_000, 48_000, 2, 16)
    assert received[36:44] == b"data" + struct.pack("<I", 0xFFFFFFFF)
    audio_ms = (len(received) - 44) / 48
    assert audio_ms == pytest.approx(len(SPEECH["input"]) * FAST.speech_ms_per_char, abs=0.1)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({**SPEECH, "response_format": "mp3"}, "response_format"),
        ({"model": "tts-1"}, "input"),
        ({**SPEECH, "input": ""}, "input"),
        ([SPEECH], "body"),
    ],
)
async def test_speech_validates_the_request(client, body, problem):
    r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == 400
    assert problem in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/audio/speech"])
async def test_bad_json_is_a_400(client, path):
    r = await client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "request body is not valid JSON"


async def test_chat_validates_messages(client):
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 400
    assert "messages" in r.json()["error"]["message"]


async def test_payment_required_returns_the_challenge(client, gateway):
    set_faults(gateway, Fault(route="chat", kind="status", status=402))
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 402
    assert r.json()["x402Version"] == 1
    assert r.json()["accepts"][0]["resource"] == "/v1/chat/completions"


async def test_rate_limit_sets_retry_after(client, gateway):
    set_faults(gateway, Fault(route="speak", kind="status", status=429, retry_after=1.5))
    r = await client.post("/v1/audio/speech", json=SPEECH)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "rate_limited"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert "x-request-id" in r.headers


@pytest.mark.parametrize(
    ("route", "path", "kwargs"),
    [
        (
            "transcribe",
            "/v1/audio/transcriptions",
            {"files": {"file": ("a.wav", WAV)}, "data": {"model": "m"}},
        ),
        ("chat", "/v1/chat/completions", {"json": CHAT}),
        ("chat", "/v1/chat/completions", {"json": {**CHAT, "stream": True}}),
        ("speak", "/v1/audio/speech", {"json": SPEECH}),
        ("models", "/v1/models", {}),
    ],
)
@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_keep_their_status(client, gateway, route, path, kwargs, status):
    set_faults(gateway, Fault(route=route, kind="status", status=status))
    method = "GET" if route == "models" else "POST"
    r = await client.request(method, path, **kwargs)
    assert r.status_code == status
    assert r.json()["error"]["code"] == "gateway_unavailable"
    assert r.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("path", "route", "body"),
    [
        ("/v1/chat/completions", "chat", {**CHAT, "stream": True}),
        ("/v1/audio/speech", "speak", SPEECH),
    ],
)
async def test_a_drop_after_streaming_began_breaks_the_connection(
    client, gateway, path, route, body
):
    set_faults(gateway, Fault(route=route, kind="drop", after_chunks=2))
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                received += chunk
    assert received, "the stream had begun"
    assert not received.endswith(b"data: [DONE]\n\n")
    await until(lambda: gateway.in_flight[route] == 0)


async def test_a_drop_before_the_body_is_an_error_status(client, gateway):
    set_faults(gateway, Fault(route="chat", kind="drop", after_chunks=1))
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "stream dropped"


async def test_a_client_that_gives_up_cancels_the_gateway_request(client, gateway):
    set_faults(gateway, Fault(route="transcribe", kind="hang"))
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", WAV)},
            data={"model": "m"},
            timeout=100 * MS,
        )
    await until(lambda: gateway.in_flight["transcribe"] == 0)


async def test_a_client_that_leaves_mid_upload_is_no_error(client, caplog):
    # A speculative transcription cancelled while its WAV is still being sent.
    port = client.base_url.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    writer.write(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        + body
        + WAV
    )
    await writer.drain()
    await asyncio.sleep(50 * MS)  # the server is reading the form
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(100 * MS)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert (await client.get("/v1/models")).status_code == 200  # and the server goes on


async def test_a_client_that_leaves_mid_stream_closes_the_gateway_stream(client, gateway):
    set_faults(gateway, Fault(route="chat", kind="hang", after_chunks=1))
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        await anext(r.aiter_lines())
        assert gateway.in_flight["chat"] == 1
    await until(lambda: gateway.in_flight["chat"] == 0)


async def test_unknown_routes_and_methods_are_openai_style_errors(client):
    r = await client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await client.get("/v1/chat/completions")
    assert r.status_code == 405
    assert "POST" in r.headers["allow"]


async def test_bearer_auth():
    app = create_gateway_app(SimulatedGateway(FAST), api_key="sk-test")
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-test"}):
            r = await client.get("/v1/models", headers=headers)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.headers["x-request-id"]
            assert r.json()["error"]["type"] == "authentication_error"
            assert "sk-test" not in r.text
        r = await client.get("/v1/models", headers={"Authorization": "Bearer sk-test"})
        assert r.status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_simulate_reads_and_replaces_the_settings(client, gateway):
    r = await client.get("/v1/simulate")
    assert r.status_code == 200
    assert SimulationSettings.model_validate(r.json()) == FAST
    new = FAST.model_copy(
        update={
            "replies": ["Changed."],
            "faults": [Fault(route="models", kind="status", status=503)],
        }
    )
    r = await client.post("/v1/simulate", json=new.model_dump(mode="json"))
    assert r.status_code == 200
    assert gateway.settings == new
    assert (await client.post("/v1/chat/completions", json=CHAT)).json()["choices"][0]["message"][
        "content"
    ] == "Changed."
    assert (await client.get("/v1/models")).status_code == 503


async def test_simulate_validates_the_settings(client, gateway):
    r = await client.post(
        "/v1/simulate", json={"faults": [{"route": "transcribe", "kind": "drop"}]}
    )
    assert r.status_code == 400
    assert "faults.0" in r.json()["error"]["message"]
    r = await client.post("/v1/simulate", json={"asr_ms": -1})
    assert r.status_code == 400
    assert gateway.settings == FAST


class SixteenKilohertz:
    """A gateway whose speech comes at 16 kHz; it does nothing else."""

    async def transcribe(
        self, wav: bytes, *, prompt: str | None = None, call: object = None
    ) -> str:
        raise NotImplementedError

    async def chat(
        self, messages: Sequence[ChatMessage], *, call: object = None
    ) -> AsyncIterator[str]:
        raise NotImplementedError
        yield ""

    async def speak(
        self, text: str, *, voice: object = None, call: object = None
    ) -> AsyncIterator[PcmFrame]:
        for _ in range(3):
            yield PcmFrame(b"\x01\x00" * 320, 16_000)

    async def models(self) -> list[str]:
        return []

    async def warm(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_pcm_needs_24khz_but_wav_takes_any_rate():
    app = create_gateway_app(SixteenKilohertz())
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/v1/audio/speech", json={**SPEECH, "response_format": "pcm"})
        assert r.status_code == 502
        assert "16000 Hz" in r.json()["error"]["message"]
        r = await client.post("/v1/audio/speech", json={**SPEECH, "response_format": "wav"})
        assert r.status_code == 200
        assert struct.unpack("<I", r.content[24:28]) == (16_000,)
        assert len(r.content) == 44 + 3 * 640
        assert (await client.get("/v1/simulate")).status_code == 404
