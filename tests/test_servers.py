"""The real-server test helper serves HTTP and WebSocket and shuts down cleanly."""

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from tests.servers import serve_app


async def hello(request):
    return PlainTextResponse("hello")


async def echo(websocket: WebSocket):
    await websocket.accept()
    async for message in websocket.iter_bytes():
        await websocket.send_bytes(message[::-1])


APP = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)])


async def test_http_and_websocket_on_a_free_port():
    async with serve_app(APP) as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/")).text == "hello"
        async with connect(url.replace("http", "ws", 1) + "/ws") as ws:
            await ws.send(b"\x01\x02")
            assert await ws.recv() == b"\x02\x01"
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url + "/")


async def test_two_servers_at_once_get_different_ports():
    async with serve_app(APP) as first, serve_app(APP) as second:
        assert first != second
