"""HttpGateway, scripted through httpx.MockTransport; then once over a real socket."""

import asyncio
import contextlib
import gc
import json
import logging
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.timing import MS
from voice.config import GatewaySettings
from voice.core.dialog import ChatMessage
from voice.errors import (
    ConfigError,
    GatewayAuthError,
    GatewayBadRequest,
    GatewayError,
    GatewayProtocolError,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentRequired,
    RateLimited,
)
from voice.gateway import http as http_module
from voice.gateway.http import HttpGateway

SECRET = "sk-test-NEVER-LOG-ME-4f9a"
URL = "http://gateway.test/v1"
MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]


class Body(httpx.AsyncByteStream):
    """A response body that arrives in pieces, then ends, fails or stalls; records aclose."""

    def __init__(self, *chunks: bytes, fail: Exception | None = None, stall: bool = False):
        self.chunks, self.fail, self.stall = chunks, fail, stall
        self.closed = False
        self.drained = asyncio.Event()  # every chunk has been handed over

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk
        self.drained.set()
        if self.fail is not None:
            raise self.fail
        if self.stall:
            await asyncio.Event().wait()  # until the reader is cancelled

    async def aclose(self):
        self.closed = True


Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler: answers requests in order (the last answer repeats)."""

    def __init__(self, *answers: Answer):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


def gateway(script: Script, **overrides) -> HttpGateway:
    overrides = {"url": URL, "api_key": SECRET, "retry_backoff_s": 0} | overrides
    return HttpGateway(GatewaySettings(**overrides), transport=httpx.MockTransport(script))


def reply(
    status: int = 200, body: object = b"", **headers: str
) -> Callable[[httpx.Request], httpx.Response]:
    """A fresh response per request (a response body can be read only once)."""

    def make(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes | str):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return make


def openai_error(message: str, kind: str, code: object = None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def sse(*events: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def delta(text: str | None = None, **extra: object) -> dict[str, object]:
    d = {"content": text} if text is not None else {}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": d | extra}]}


def streamed(body: Body, ctype: str = "text/event-stream", **headers: str) -> httpx.Response:
    return httpx.Response(200, stream=body, headers={"content-type": ctype, **headers})


def pieces(data: bytes, sizes=(1, 2, 3, 5, 8, 13)) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        out.append(data[i : i + sizes[k % len(sizes)]])
        i, k = i + sizes[k % len(sizes)], k + 1
    return out


async def collect(stream):
    return [item async for item in stream]


# -- construction, headers, timeouts --------------------------------------------------------


async def test_needs_a_url():
    with pytest.raises(ConfigError):
        HttpGateway(GatewaySettings(url=None))


async def test_every_request_carries_auth_ids_agent_and_extra_headers():
    script = Script(reply(200, {"data": [{"id": "m1"}]}))
    async with gateway(script, extra_headers={"X-Pipeline": "p7"}) as gw:
        assert await gw.models() == ["m1"]
        assert await gw.models() == ["m1"]
    first, second = script.requests
    assert first.url == "http://gateway.test/v1/models"
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert first.headers["user-agent"].startswith("voice/")
    assert first.headers["x-pipeline"] == "p7"
    uuid.UUID(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert "idempotency-key" not in first.headers


async def test_no_authorization_header_without_a_key():
    script = Script(reply(200, {"data": []}))
    async with gateway(script, api_key=None) as gw:
        await gw.models()
    assert "authorization" not in script.requests[0].headers


async def test_timeouts_come_from_settings_per_route():
    script = Script(reply(200, {"text": "x"}), streamed(Body(sse(delta("y")))))
    timeouts = {"asr_timeout_s": 7, "llm_first_token_timeout_s": 3, "llm_stall_timeout_s": 5}
    async with gateway(script, connect_timeout_s=1, **timeouts) as gw:
        await gw.transcribe(b"RIFF")
        await collect(gw.chat(MESSAGES))
    asr, chat = (r.extensions["timeout"] for r in script.requests)
    # httpx's read timeout is only a backstop past the first-byte and stall times.
    assert asr == {"connect": 1, "read": 8, "write": 7, "pool": 1}
    assert chat == {"connect": 1, "read": 6, "write": 3, "pool": 1}


# -- transcribe -----------------------------------------------------------------------------


async def test_transcribe_posts_multipart_and_reads_json():
    script = Script(reply(200, {"text": " Hello there. "}))
    async with gateway(script, asr_model="whisper-x", asr_language="de") as gw:
        assert await gw.transcribe(b"RIFF-wav-bytes") == "Hello there."
    request = script.requests[0]
    assert request.method == "POST" and request.url.path == "/v1/audio/transcriptions"
    assert request.headers["content-type"].startswith("multipart/form-data")
    body = request.content
    assert b'name="file"; filename="audio.wav"' in body and b"Content-Type: audio/wav" in body
    assert b"RIFF-wav-bytes" in body
    for field, value in [(b"model", b"whisper-x"), (b"response_format", b"json")]:
        assert b'name="' + field + b'"\r\n\r\n' + value in body
    assert b'name="language"\r\n\r\nde' in body
    uuid.UUID(request.headers["idempotency-key"])


async def test_transcribe_reads_a_plain_text_body_and_omits_unset_language():
    script = Script(reply(200, "plain words\n", **{"content-type": "text/plain"}))
    async with gateway(script) as gw:
        assert await gw.transcribe(b"RIFF") == "plain words"
    assert b'name="language"' not in script.requests[0].content


async def test_transcribe_retries_with_the_same_idempotency_key():
    script = Script(reply(503, "busy"), httpx.ReadError("reset"), reply(200, {"text": "ok"}))
    async with gateway(script, max_retries=2) as gw:
        assert await gw.transcribe(b"RIFF") == "ok"
    keys = {r.headers["idempotency-key"] for r in script.requests}
    ids = {r.headers["x-request-id"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1 and len(ids) == 3


async def test_retries_stop_at_max_retries():
    script = Script(reply(502, openai_error("upstream down", "server_error")))
    async with gateway(script, max_retries=2) as gw:
        with pytest.raises(GatewayUnavailable) as caught:
            await gw.transcribe(b"RIFF")
    assert len(script.requests) == 3
    assert caught.value.status == 502 and caught.value.error_type == "server_error"
    assert caught.value.route == "/v1/audio/transcriptions"
    assert str(caught.value).startswith(
        "gateway failed the transcription request: HTTP 502 server_error: upstream down"
    )


async def test_backoff_grows_between_retries():
    script = Script(reply(503), reply(503), reply(200, {"text": "ok"}))
    async with gateway(script, max_retries=2, retry_backoff_s=20 * MS) as gw:
        started = time.monotonic()
        await gw.transcribe(b"RIFF")
    # Jitter keeps each wait within [50 %, 100 %] of 20 ms, then 40 ms.
    assert time.monotonic() - started >= 30 * MS


async def test_unparseable_transcription_is_a_protocol_error_and_not_retried():
    script = Script(reply(200, b"{nope", **{"content-type": "application/json"}))
    async with gateway(script) as gw:
        with pytest.raises(GatewayProtocolError, match="unreadable transcription response"):
            await gw.transcribe(b"RIFF")
    assert len(script.requests) == 1


# -- status errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "retried"),
    [
        (400, GatewayBadRequest, False),
        (401, GatewayAuthError, False),
        (403, GatewayAuthError, False),
        (404, GatewayBadRequest, False),
        (408, GatewayTimeout, True),
        (422, GatewayBadRequest, False),
        (500, GatewayUnavailable, True),
        (503, GatewayUnavailable, True),
        (504, GatewayTimeout, True),
    ],
)
async def test_status_maps_to_error_class(status, cls, retried):
    script = Script(reply(status, openai_error("nope", "some_error")))
    async with gateway(script, max_retries=1) as gw:
        with pytest.raises(cls) as caught:
            await gw.models()
    assert type(caught.value) is cls and caught.value.status == status
    assert len(script.requests) == (2 if retried else 1)


async def test_error_names_the_gateways_request_id_or_ours():
    script = Script(reply(401, openai_error("Incorrect API key", "invalid_request_error"), **{
        "x-request-id": "req_theirs"}))  # fmt: skip
    async with gateway(script) as gw:
        with pytest.raises(GatewayAuthError) as caught:
            await gw.models()
    assert caught.value.request_id == "req_theirs"
    assert str(caught.value) == (
        "gateway refused our API key for the models request: HTTP 401 invalid_request_error: "
        "Incorrect API key (request id req_theirs)"
    )
    script = Script(reply(404, "<html>\n  Not   Found\n</html>"))
    async with gateway(script) as gw:
        with pytest.raises(GatewayBadRequest) as caught_404:
            await gw.models()
    ours = script.requests[0].headers["x-request-id"]
    assert caught_404.value.request_id == ours
    assert str(caught_404.value) == (
        f"gateway rejected the models request: HTTP 404: <html> Not Found </html> "
        f"(request id {ours})"
    )


async def test_429_honours_a_short_retry_after():
    script = Script(reply(429, "slow down", **{"retry-after-ms": str(20 * MS * 1000)}),
                    reply(200, {"data": []}))  # fmt: skip
    async with gateway(script) as gw:
        started = time.monotonic()
        assert await gw.models() == []
    assert time.monotonic() - started >= 20 * MS
    assert len(script.requests) == 2


@pytest.mark.parametrize("retry_after", ["30", "Wed, 21 Oct 2099 07:28:00 GMT"])
async def test_429_with_a_long_retry_after_is_raised_not_waited(retry_after):
    script = Script(reply(429, openai_error("Too many requests", "rate_limit_exceeded"), **{
        "retry-after": retry_after, "request-id": "r-429"}))  # fmt: skip
    async with gateway(script, max_retries=5) as gw:
        with pytest.raises(RateLimited) as caught:
            await collect(gw.speak("Hello."))
    assert len(script.requests) == 1
    assert caught.value.retry_after is not None and caught.value.retry_after > 5
    if retry_after == "30":
        assert str(caught.value) == (
            "gateway rate limited the speech request: HTTP 429 rate_limit_exceeded: "
            "Too many requests; retry after 30 s (request id r-429)"
        )


async def test_402_keeps_the_challenge_verbatim_and_is_never_retried():
    challenge = '{"x402Version": 1, "accepts": [{"scheme": "exact", "maxAmountRequired": "10"}]}'
    script = Script(reply(402, challenge, **{"content-type": "application/json"}))
    async with gateway(script, max_retries=5) as gw:
        with pytest.raises(PaymentRequired) as caught:
            await gw.transcribe(b"RIFF")
    assert caught.value.challenge == challenge
    assert caught.value.status == 402 and not caught.value.retryable
    assert len(script.requests) == 1
    assert str(caught.value).startswith("gateway asked for payment for the transcription request")


# -- transport errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "cls", "words"),
    [
        (httpx.ConnectError("Connection refused"), GatewayUnavailable, "could not connect"),
        (httpx.ConnectTimeout(""), GatewayTimeout, "within 2 s"),
        (httpx.PoolTimeout(""), GatewayTimeout, "no gateway connection came free"),
        (httpx.WriteTimeout(""), GatewayTimeout, "could not send the request"),
        (httpx.ReadTimeout(""), GatewayTimeout, "sent nothing for 3 s"),
        (httpx.ReadError(""), GatewayUnavailable, "connection failed (ReadError)"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            GatewayUnavailable,
            "Server disconnected",
        ),
    ],
)
async def test_transport_errors_are_translated_with_their_cause(exc, cls, words):
    script = Script(exc)
    async with gateway(script, max_retries=1) as gw:
        with pytest.raises(cls) as caught:
            await gw.models()
    assert type(caught.value) is cls and caught.value.__cause__ is exc
    assert words in str(caught.value) and "during the models request" in str(caught.value)
    assert caught.value.request_id == script.requests[-1].headers["x-request-id"]
    assert caught.value.route == "/v1/models" and caught.value.status is None
    assert len(script.requests) == 2  # every transport error is retryable


# -- chat -----------------------------------------------------------------------------------


async def test_chat_posts_a_streaming_request():
    script = Script(streamed(Body(sse(delta("Hi")))))
    async with gateway(script, llm_model="m", llm_max_tokens=None, llm_temperature=0.3) as gw:
        assert await collect(gw.chat(MESSAGES)) == ["Hi"]
    request = script.requests[0]
    assert request.url.path == "/v1/chat/completions"
    assert request.headers["accept"] == "text/event-stream"
    assert "idempotency-key" not in request.headers
    assert json.loads(request.content) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": True,
        "temperature": 0.3,
    }


async def test_chat_parses_sse_split_anywhere():
    data = b": connected\r\n\r\n" + sse(
        delta(role="assistant"), delta(""), delta("Grüß "), delta("dich 👋"), delta(None)
    ).replace(b"\n", b"\r\n").replace(b"data: [DONE]", b": keep-alive\r\n\r\ndata: [DONE]")
    script = Script(lambda _: streamed(Body(*pieces(data))))
    async with gateway(script, llm_max_tokens=50) as gw:
        deltas = await collect(gw.chat(MESSAGES))
    assert "".join(deltas) == "Grüß dich 👋" and "" not in deltas
    assert json.loads(script.requests[0].content)["max_tokens"] == 50


async def test_chat_error_mid_stream_raises_after_the_deltas_before_it():
    error = openai_error("Rate limit reached", "rate_limit_exceeded", "rate_limit_exceeded")
    script = Script(streamed(Body(sse(delta("Partial"), error, done=False)),
                             **{"x-request-id": "req_s"}))  # fmt: skip
    got: list[str] = []
    async with gateway(script, max_retries=3) as gw:
        with pytest.raises(RateLimited) as caught:
            async for text in gw.chat(MESSAGES):
                got.append(text)
    assert got == ["Partial"] and len(script.requests) == 1
    assert caught.value.error_type == "rate_limit_exceeded" and caught.value.request_id == "req_s"
    assert str(caught.value) == (
        "gateway sent an error in the middle of the chat reply: rate_limit_exceeded: "
        "Rate limit reached "
        "(request id req_s)"
    )


async def test_chat_error_with_a_status_code_uses_it():
    script = Script(streamed(Body(sse({"error": {"message": "down", "code": 503}}))))
    async with gateway(script) as gw:
        with pytest.raises(GatewayUnavailable) as caught:
            await collect(gw.chat(MESSAGES))
    assert caught.value.status == 503


async def test_chat_malformed_event_is_a_protocol_error():
    script = Script(streamed(Body(b"data: {oops\n\n")))
    async with gateway(script) as gw:
        with pytest.raises(GatewayProtocolError, match="unreadable chat response"):
            await collect(gw.chat(MESSAGES))


async def test_chat_accepts_a_non_streamed_completion():
    completion = {"choices": [{"message": {"role": "assistant", "content": "Whole."}}]}
    script = Script(reply(200, completion))
    async with gateway(script) as gw:
        assert await collect(gw.chat(MESSAGES)) == ["Whole."]


async def test_chat_stream_ending_without_done_is_complete():
    script = Script(streamed(Body(sse(delta("a"), delta("b"), done=False))))
    async with gateway(script) as gw:
        assert await collect(gw.chat(MESSAGES)) == ["a", "b"]


async def test_chat_is_retried_only_when_the_request_was_never_sent():
    script = Script(httpx.ConnectError("refused"), streamed(Body(sse(delta("ok")))))
    async with gateway(script) as gw:
        assert await collect(gw.chat(MESSAGES)) == ["ok"]
    assert len(script.requests) == 2

    for answer in (reply(503, "busy"), httpx.ReadTimeout(""), httpx.RemoteProtocolError("")):
        script = Script(answer)
        async with gateway(script, max_retries=3) as gw:
            with pytest.raises(GatewayError) as caught:
                await collect(gw.chat(MESSAGES))
        assert caught.value.retryable and len(script.requests) == 1


async def test_chat_connection_lost_mid_stream():
    body = Body(sse(delta("Hel"), done=False), fail=httpx.RemoteProtocolError("peer closed"))
    script = Script(streamed(body))
    got: list[str] = []
    async with gateway(script) as gw:
        with pytest.raises(GatewayUnavailable, match="peer closed") as caught:
            async for text in gw.chat(MESSAGES):
                got.append(text)
    assert got == ["Hel"] and len(script.requests) == 1 and body.closed
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_chat_ends_promptly_after_done_even_if_the_body_stays_open():
    # The pipeline sends a reply's last sentence to speech only when the chat stream ends.
    body = Body(sse(delta("x")), stall=True)
    async with gateway(Script(streamed(body))) as gw:
        stream = gw.chat(MESSAGES)
        assert await anext(stream) == "x"
        started = time.monotonic()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert time.monotonic() - started < 60 * MS
    assert body.closed


async def test_chat_reads_a_body_that_ends_after_done_to_its_end():
    body = Body(sse(delta("x")))  # the end of the body follows [DONE] at once
    async with gateway(Script(streamed(body))) as gw:
        assert await collect(gw.chat(MESSAGES)) == ["x"]
    assert body.drained.is_set()  # read to its end, so its connection can be reused


# -- speak ----------------------------------------------------------------------------------


async def test_speak_posts_json_and_streams_pcm_in_whole_samples():
    pcm = bytes(range(256)) * 8 + b"\x01"  # odd total: the last byte is half a sample
    script = Script(streamed(Body(*pieces(pcm, (1, 3, 7, 64))), "audio/pcm"))
    async with gateway(script, tts_model="tts-x", tts_voice="nova") as gw:
        frames = await collect(gw.speak("Hello there."))
    assert all(len(f.pcm) % 2 == 0 and f.sample_rate == 24_000 for f in frames)
    assert b"".join(f.pcm for f in frames) == pcm[:-1]
    request = script.requests[0]
    assert request.url.path == "/v1/audio/speech"
    assert json.loads(request.content) == {
        "model": "tts-x",
        "input": "Hello there.",
        "voice": "nova",
        "response_format": "pcm",
    }
    uuid.UUID(request.headers["idempotency-key"])


async def test_speak_yields_audio_as_it_arrives():
    body = Body(b"\x00\x01" * 100, stall=True)
    script = Script(streamed(body, "audio/pcm"))
    async with gateway(script) as gw:
        stream = gw.speak("Hi", voice="echo")
        first = await anext(stream)  # the body has not ended: it stalls after this chunk
        assert first.pcm == b"\x00\x01" * 100
        await stream.aclose()
    assert body.closed
    assert json.loads(script.requests[0].content)["voice"] == "echo"


async def test_speak_reads_streamed_wav():
    from tests.test_gateway_sse import streamed_wav

    pcm = bytes(range(100)) * 4
    wav = streamed_wav(pcm, 22_050)
    script = Script(streamed(Body(*pieces(wav)), "audio/wav"))
    async with gateway(script, tts_format="wav") as gw:
        frames = await collect(gw.speak("Hi"))
    assert {f.sample_rate for f in frames} == {22_050}
    assert b"".join(f.pcm for f in frames) == pcm
    assert json.loads(script.requests[0].content)["response_format"] == "wav"


async def test_speak_refuses_a_non_audio_body():
    script = Script(reply(200, openai_error("no voice", "x"), **{"content-type": "text/html"}))
    async with gateway(script) as gw:
        with pytest.raises(GatewayProtocolError, match="unreadable speech response: text/html"):
            await collect(gw.speak("Hi"))
    script = Script(streamed(Body(b"not a wav at all"), "audio/wav"))
    async with gateway(script, tts_format="wav") as gw:
        with pytest.raises(GatewayProtocolError, match="not a WAV"):
            await collect(gw.speak("Hi"))


async def test_speak_is_retried_before_its_first_byte_with_the_same_key():
    script = Script(
        reply(503, "busy"),
        lambda _: streamed(Body(fail=httpx.ReadTimeout("")), "audio/pcm"),
        lambda _: streamed(Body(b"\x00\x00"), "audio/pcm"),
    )
    async with gateway(script, max_retries=2) as gw:
        frames = await collect(gw.speak("Hi"))
    assert [f.pcm for f in frames] == [b"\x00\x00"]
    assert len({r.headers["idempotency-key"] for r in script.requests}) == 1
    assert len(script.requests) == 3


async def test_speak_is_not_retried_after_audio_was_yielded():
    script = Script(lambda _: streamed(Body(b"\x00\x00", fail=httpx.ReadError("")), "audio/pcm"))
    got = []
    async with gateway(script, max_retries=2) as gw:
        with pytest.raises(GatewayUnavailable):
            async for frame in gw.speak("Hi"):
                got.append(frame)
    assert len(got) == 1 and len(script.requests) == 1


async def test_speak_of_blank_text_sends_nothing():
    script = Script(httpx.ConnectError("must not be called"))
    async with gateway(script) as gw:
        assert await collect(gw.speak("  \n")) == []
    assert script.requests == []


# -- cancellation ---------------------------------------------------------------------------


async def test_closing_the_chat_stream_closes_the_response():
    body = Body(sse(delta("one"), done=False), stall=True)
    async with gateway(Script(streamed(body))) as gw:
        async with contextlib.aclosing(gw.chat(MESSAGES)) as stream:
            async for text in stream:
                assert text == "one"
                break
    assert body.closed


@pytest.mark.parametrize("route", ["chat", "speak"])
async def test_cancelling_the_consumer_closes_the_response(route):
    body = Body(sse(delta("one"), done=False) if route == "chat" else b"\x00\x00", stall=True)
    async with gateway(Script(streamed(body))) as gw:
        stream = gw.chat(MESSAGES) if route == "chat" else gw.speak("Hi")
        task = asyncio.create_task(collect(stream))
        await body.drained.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert body.closed


# -- models and warm ------------------------------------------------------------------------


async def test_models_lists_ids_and_retries():
    script = Script(reply(500), reply(200, {"object": "list", "data": [{"id": "a"}, {"id": "b"}]}))
    async with gateway(script) as gw:
        assert await gw.models() == ["a", "b"]
    assert [r.method for r in script.requests] == ["GET", "GET"]


async def test_warm_is_cheap_to_call_often(monkeypatch):
    script = Script(reply(200, {"data": []}))
    async with gateway(script) as gw:
        await gw.warm()
        await gw.warm()
        assert len(script.requests) == 1
        assert script.requests[0].url.path == "/v1/models"
        monkeypatch.setattr(http_module, "WARM_INTERVAL_S", 0.0)
        await gw.warm()
        assert len(script.requests) == 2


async def test_warm_swallows_errors_and_logs_them_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="voice")
    async with gateway(Script(httpx.ConnectError("refused"))) as gw:
        await gw.warm()
    assert any("warming" in r.message and r.levelno == logging.DEBUG for r in caplog.records)


# -- secrets --------------------------------------------------------------------------------


async def test_the_api_key_never_leaks(caplog):
    for name in ("", "httpx", "httpcore", "voice"):
        caplog.set_level(logging.DEBUG, logger=name)
    echo = openai_error(f"Incorrect API key provided: {SECRET}", f"bad_key_{SECRET}")
    script = Script(
        reply(200, {"text": "ok"}),
        reply(401, echo),
        httpx.ConnectError(f"could not reach proxy with {SECRET}"),
        lambda _: streamed(Body(sse(delta("hi"), {"error": {"message": SECRET}}))),
        reply(402, "pay"),
    )
    errors: list[GatewayError] = []
    gw = gateway(script, max_retries=0)
    assert await gw.transcribe(b"RIFF") == "ok"
    for call in (gw.models, gw.models, lambda: collect(gw.chat(MESSAGES)), gw.models):
        with pytest.raises(GatewayError) as caught:
            await call()
        errors.append(caught.value)
    await gw.warm()
    await gw.aclose()

    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in script.requests)
    assert len(errors) == 4
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert SECRET not in (error.error_type or "")
    assert "***" in str(errors[0])
    assert SECRET not in repr(gw) and SECRET not in caplog.text
    assert caplog.records  # the paths above did log


async def test_extra_header_values_never_leak(caplog):
    for name in ("", "httpx", "httpcore", "voice"):
        caplog.set_level(logging.DEBUG, logger=name)
    proof, key = "x402-proof-NEVER-LOG-ME-77c1", "hk-NEVER-LOG-ME-0b3e"
    headers = {"X-Payment": proof, "x-api-key": key, "X-Flag": "1"}
    script = Script(
        reply(401, openai_error(f"bad x-api-key {key}", f"bad_{key}")),
        reply(402, json.dumps({"error": f"proof {proof} was rejected", "accepts": []})),
        lambda _: streamed(Body(sse(delta("hi"), {"error": {"message": f"{proof} {key}"}}))),
        httpx.ConnectError(f"proxy saw {proof}"),
    )
    errors: list[GatewayError] = []
    gw = gateway(script, max_retries=0, extra_headers=headers)
    for call in (gw.models, gw.models, lambda: collect(gw.chat(MESSAGES)), gw.models):
        with pytest.raises(GatewayError) as caught:
            await call()
        errors.append(caught.value)
    await gw.warm()
    await gw.aclose()

    assert all(r.headers["x-payment"] == proof for r in script.requests)
    payment = errors[1]
    assert isinstance(payment, PaymentRequired)
    seen = [str(e) + repr(e) + (e.error_type or "") for e in errors]
    for text in [*seen, payment.challenge, caplog.text]:
        assert proof not in text and key not in text
    assert "*** was rejected" in payment.challenge and '"accepts"' in payment.challenge
    assert "HTTP 401" in str(errors[0])  # "1" is no secret: masking it would garble this
    assert any("warming" in r.message for r in caplog.records)


# -- a real socket --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(respond: Callable[[bytes, bytes], bytes]):
    """An HTTP/1.1 server on 127.0.0.1:0 that answers ``respond(request line, body)``."""
    connections: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                writer.write(respond(head.split(b"\r\n")[0], body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1", connections


def http_response(status: str, headers: dict[str, str], chunks: list[bytes]) -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if len(chunks) == 1:
        return (head + f"content-length: {len(chunks[0])}\r\n\r\n").encode() + chunks[0]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return (head + "transfer-encoding: chunked\r\n\r\n").encode() + body


async def test_over_a_real_socket_connections_are_reused_and_the_key_stays_secret(caplog):
    for name in ("", "httpx", "httpcore", "voice"):
        caplog.set_level(logging.DEBUG, logger=name)

    def respond(request_line: bytes, body: bytes) -> bytes:
        if b"/v1/chat/completions" in request_line:
            events = pieces(sse(delta("Hello"), delta(" again")), (40, 9))
            return http_response("200 OK", {"content-type": "text/event-stream"}, events)
        if b"/v1/models" in request_line:
            return http_response("200 OK", {"content-type": "application/json"},
                                 [b'{"data": [{"id": "m"}]}'])  # fmt: skip
        echo = json.dumps(openai_error(f"bad key {SECRET}", "invalid_request_error")).encode()
        return http_response("401 Unauthorized", {"x-request-id": "req_real"}, [echo])

    async with raw_server(respond) as (url, connections):
        settings = GatewaySettings(url=url, api_key=SECRET, retry_backoff_s=0)
        async with HttpGateway(settings) as gw:
            await gw.warm()
            for _ in range(3):
                assert "".join(await collect(gw.chat(MESSAGES))) == "Hello again"
            with pytest.raises(GatewayAuthError) as caught:
                await gw.transcribe(b"RIFF")
            assert await gw.models() == ["m"]
        assert len(connections) == 1  # warmed once; every later request reused it
    assert caught.value.request_id == "req_real" and SECRET not in repr(caught.value)
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert SECRET not in caplog.text


async def test_a_finished_request_leaves_nothing_for_the_cycle_collector():
    # At 100 calls, the cycles httpx leaves per request were most of what the collector
    # freed, in pauses of 20-35 ms: ended, a request must be freed by reference counting.
    def respond(request_line: bytes, body: bytes) -> bytes:
        if b"/v1/chat/completions" in request_line:
            return http_response("200 OK", {"content-type": "text/event-stream"},
                                 [sse(delta("Hello"))])  # fmt: skip
        if b"/v1/audio/speech" in request_line:
            return http_response("200 OK", {"content-type": "audio/pcm"}, [b"\0\0" * 480] * 3)
        return http_response("200 OK", {"content-type": "application/json"},
                             [b'{"text": "hi"}'])  # fmt: skip

    async with raw_server(respond) as (url, _):
        async with HttpGateway(GatewaySettings(url=url)) as gw:
            assert await gw.transcribe(b"RIFF") == "hi"  # the connection is open and pooled
            gc.collect()
            gc.disable()
            try:
                assert await gw.transcribe(b"RIFF") == "hi"
                assert await collect(gw.chat(MESSAGES)) == ["Hello"]
                assert len(await collect(gw.speak("Hello."))) > 0
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                left = {type(o).__module__ for o in gc.garbage}
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    assert not {m for m in left if m.startswith(("httpx", "httpcore"))}


async def test_the_connection_pool_holds_max_connections():
    def respond(request_line: bytes, body: bytes) -> bytes:
        if b"/v1/chat/completions" in request_line:
            events = [sse(delta("Hello"), done=False), b"data: [DONE]\n\n"]
            return http_response("200 OK", {"content-type": "text/event-stream"}, events)
        return http_response("200 OK", {"content-type": "application/json"},
                             [b'{"data": [{"id": "m"}]}'])  # fmt: skip

    async with raw_server(respond) as (url, _):
        settings = GatewaySettings(
            url=url, max_connections=1, max_retries=0, connect_timeout_s=50 * MS
        )
        async with HttpGateway(settings) as gw:
            async with contextlib.aclosing(gw.chat(MESSAGES)) as stream:
                assert await anext(stream) == "Hello"  # the chat holds the one connection
                with pytest.raises(GatewayTimeout, match="no gateway connection came free"):
                    await gw.models()
            assert await gw.models() == ["m"]


async def test_a_large_pool_is_split_over_clients_yet_holds_exactly_max_connections():
    def respond(request_line: bytes, body: bytes) -> bytes:
        if b"/v1/chat/completions" in request_line:
            events = [sse(delta("Hello"), done=False), b"data: [DONE]\n\n"]
            return http_response("200 OK", {"content-type": "text/event-stream"}, events)
        return http_response("200 OK", {"content-type": "application/json"},
                             [b'{"data": [{"id": "m"}]}'])  # fmt: skip

    size = 2 * http_module.SHARD_CONNECTIONS + 3  # three clients: 12 + 12 + 11
    async with raw_server(respond) as (url, connections):
        settings = GatewaySettings(
            url=url, max_connections=size, max_retries=0, connect_timeout_s=50 * MS
        )
        async with HttpGateway(settings) as gw, contextlib.AsyncExitStack() as streams:
            chats = [await streams.enter_async_context(contextlib.aclosing(gw.chat(MESSAGES)))
                     for _ in range(size)]  # fmt: skip
            # Every stream got a connection at once: no client's share ran out before another's.
            assert await asyncio.gather(*(anext(chat) for chat in chats)) == ["Hello"] * size
            assert len(connections) == size
            with pytest.raises(GatewayTimeout, match="no gateway connection came free"):
                await gw.models()
            await chats[size // 2].aclose()  # frees a place in one of the clients
            assert await gw.models() == ["m"]
