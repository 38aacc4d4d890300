"""Connection hygiene over real sockets (voice/app/http_guard.py): a request must arrive whole
and in time, and a head of sane size, or the connection is answered and closed before the app,
the `websockets` package or the gateway sees it. The probe's findings, each a test."""

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

from tests.servers import serve_app
from tests.stack import app_stack
from voice.app.auth import MAX_TOKEN_BYTES, Pins, mint
from voice.app.http_guard import MAX_HEAD_BYTES, MAX_HEADERS, MAX_LINE_BYTES
from voice.bench.caller import with_token
from voice.config import ServerSettings

TIMEOUT_S = 1.0
WAIT_S = TIMEOUT_S + 5  # generous: the assertion is that it ends, not how fast
HANDSHAKE = (
    "GET /v1/session HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def billed(gateway):
    requests = gateway.requests
    return requests["transcribe"] + requests["chat"] + requests["speak"]


async def open_raw(url):
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def answer(reader):
    """The whole response the server wrote before closing: (status, error code)."""
    data = await asyncio.wait_for(reader.read(), WAIT_S)  # read() returns at EOF
    if not data:
        return None, None
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"]


@pytest.fixture
async def guarded():
    async with app_stack(server={"request_timeout_s": TIMEOUT_S}) as (url, simulated):
        yield url, simulated


async def test_a_connection_that_never_sends_a_byte_is_closed(guarded):
    url, _ = guarded
    reader, writer = await open_raw(url)
    assert await answer(reader) == (None, None)  # closed, nothing to answer
    writer.close()


async def test_headers_trickled_byte_by_byte_get_408_and_are_closed(guarded):
    url, simulated = guarded
    reader, writer = await open_raw(url)
    closed = asyncio.create_task(answer(reader))
    for byte in HANDSHAKE.encode():
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.05)
    assert await closed == (408, "request_timeout")
    assert billed(simulated) == 0
    writer.close()


async def test_a_body_that_never_completes_gets_408(guarded):
    url, _ = guarded
    reader, writer = await open_raw(url)
    writer.write(
        b"POST /v1/webrtc/offer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"sdp":'
    )
    assert await answer(reader) == (408, "request_timeout")
    writer.close()


async def test_a_hundred_slow_connections_are_all_closed_and_the_server_still_answers(guarded):
    url, _ = guarded
    connections = [await open_raw(url) for _ in range(100)]
    for _, writer in connections:
        writer.write(b"GET /health HTTP/1.1\r\n")  # and never the rest
    answers = await asyncio.gather(*(answer(reader) for reader, _ in connections))
    assert answers == [(408, "request_timeout")] * 100
    for _, writer in connections:
        writer.close()
    reader, writer = await open_raw(url)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), WAIT_S)).startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("".join(f"X-Padding-{n}: x\r\n" for n in range(MAX_HEADERS + 29)), 431),  # 129+
        (f"X-Long: {'a' * MAX_LINE_BYTES}\r\n", 431),  # an 8 KiB header line
        ("".join(f"X-Big-{n}: {'b' * 7000}\r\n" for n in range(5)), 431),  # 35 KB in all
    ],
    ids=["too-many-headers", "long-header-line", "head-too-large"],
)
async def test_an_oversize_handshake_is_answered_431_not_dropped(guarded, extra, status):
    url, simulated = guarded
    reader, writer = await open_raw(url)
    writer.write((HANDSHAKE + extra + "\r\n").encode())
    assert await answer(reader) == (status, "headers_too_large")
    assert billed(simulated) == 0
    writer.close()


async def test_an_oversize_request_target_is_answered_414(guarded):
    url, _ = guarded
    reader, writer = await open_raw(url)
    long_target = "/v1/session?token=" + "t" * MAX_LINE_BYTES
    writer.write(HANDSHAKE.replace("/v1/session", long_target, 1).encode() + b"\r\n")
    assert await answer(reader) == (414, "uri_too_long")
    writer.close()


async def test_heads_at_the_limits_and_sessions_longer_than_the_timeout_are_untouched(guarded):
    url, _ = guarded
    assert MAX_HEAD_BYTES > 4 * 7000
    ws = url.replace("http", "ws", 1) + "/v1/session"
    at_limits = {f"X-Big-{n}": "b" * 7000 for n in range(4)}  # 28 KB, each line under the cap
    async with connect(ws, additional_headers=at_limits) as session:
        await asyncio.sleep(TIMEOUT_S * 2)  # an open session is not a slow request
        await session.send(json.dumps({"type": "session.update", "session": {}}))
        await session.ping()


async def test_a_kept_alive_connection_serves_requests_one_after_another(guarded):
    url, _ = guarded
    reader, writer = await open_raw(url)
    for _ in range(3):
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), WAIT_S)).startswith(b"HTTP/1.1 200")
        while (await reader.readline()) != b"\r\n":
            pass
        await reader.readexactly(len(b'{"status":"ok"}'))
        await asyncio.sleep(TIMEOUT_S / 2)
    writer.close()


async def test_a_header_line_that_never_ends_is_cut_off_at_the_head_limit(guarded):
    url, _ = guarded
    reader, writer = await open_raw(url)
    writer.write((HANDSHAKE + "X-Endless: ").encode())
    for _ in range(MAX_HEAD_BYTES // 4096 + 2):
        writer.write(b"e" * 4096)  # no end of line, ever
        await writer.drain()
    assert await answer(reader) == (431, "headers_too_large")
    writer.close()


async def test_the_longest_token_mint_allows_passes_in_the_url_and_a_longer_one_is_not_minted():
    secret = "a-test-secret-that-is-long-enough-0123456789"
    pins = Pins(instructions="x" * 5850)
    token = mint(secret, pins=pins)
    assert MAX_TOKEN_BYTES - 100 < len(token) <= MAX_TOKEN_BYTES
    async with app_stack(auth={"secret": secret}) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        async with connect(with_token(ws, token)):
            pass
        async with connect(ws, additional_headers={"Authorization": f"Bearer {token}"}):
            pass
    with pytest.raises(ValueError, match="VOICE_INSTRUCTIONS"):
        mint(secret, pins=Pins(instructions="x" * 6000))


async def slow_then_answer(request):
    await asyncio.sleep(2.5 * TIMEOUT_S)
    return PlainTextResponse("slow")


async def echo(request):
    return PlainTextResponse((await request.body()).decode())


SLOW_APP = Starlette(
    routes=[Route("/slow", slow_then_answer), Route("/echo", echo, methods=["POST"])]
)


async def read_response(reader):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    return head.split(b" ", 2)[1], await reader.readexactly(length)


async def test_a_request_queued_behind_a_slow_answer_is_not_timed_out_for_it():
    async with serve_app(SLOW_APP, server=ServerSettings(request_timeout_s=TIMEOUT_S)) as url:
        reader, writer = await open_raw(url)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        # Pipelined behind it, a request whose body comes in two parts: its time starts only
        # when the slow answer is done.
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        await asyncio.sleep(1.5 * TIMEOUT_S)
        writer.write(b"cd")
        assert await read_response(reader) == (b"200", b"slow")
        assert await read_response(reader) == (b"200", b"abcd")
        writer.close()


async def test_blank_lines_on_a_kept_alive_connection_do_not_keep_it_open():
    async with serve_app(SLOW_APP, server=ServerSettings(request_timeout_s=TIMEOUT_S)) as url:
        reader, writer = await open_raw(url)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        assert await read_response(reader) == (b"200", b"ok")
        writer.write(b"\r\n")  # stops uvicorn's keep-alive timer, begins no request
        assert await asyncio.wait_for(reader.read(), WAIT_S) is not None  # closed, in time
        assert reader.at_eof()
        writer.close()
