"""Real servers for tests: run any ASGI app under uvicorn on 127.0.0.1, port 0, configured as
``voice serve`` configures it (voice/app/workers.py).

The server runs in the test's own event loop, so a test can drive it and inspect the app's
state without threads. HTTP and WebSocket both work (uvicorn's WebSocket protocol runs on the
``websockets`` package, through its sans-I/O implementation)::

    async with serve_app(app) as url:          # "http://127.0.0.1:PORT"
        async with httpx.AsyncClient(base_url=url) as client:
            ...
        async with websockets.connect(url.replace("http", "ws", 1) + "/ws") as ws:
            ...
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp

from tests.timing import MS
from voice.app.serving import server_config
from voice.config import ServerSettings


@asynccontextmanager
async def serve_app(
    app: ASGIApp, *, graceful_s: int = 5, server: ServerSettings | None = None, port: int = 0
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields the base URL ``http://127.0.0.1:PORT``.

    ``port``: a given one (a server that comes back where it was), else a free one.

    On exit the server stops accepting, lets open requests finish for up to ``graceful_s``
    seconds, then cancels what is left, so a test that leaves a stream open still ends.
    """
    # Binding the socket ourselves gives a free port with no race, and the port is known
    # before the server starts.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    if server is None:  # the voice app's own server settings, else the defaults
        state = getattr(getattr(app, "state", None), "voice", None)
        server = state.settings.server if state is not None else None
    # voice serve's own configuration (the request guard, the message cap), but for the port.
    config = server_config(
        app,
        host="127.0.0.1",
        port=port,
        server=server,
        lifespan="auto",
        log_config=None,  # leave logging to pytest: uvicorn's loggers propagate to root
        timeout_graceful_shutdown=graceful_s,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error here
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(MS)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
