"""The ASGI app `voice serve` runs: session WebSocket, WebRTC offers, health, readiness,
metrics, the page.

It can also be mounted inside an existing Starlette/FastAPI service: build it with
``create_app(settings, gateway=...)`` and a gateway the host app opens and closes itself.
Starlette does not run a mounted app's lifespan, so a gateway the app built on its own would
never be warmed or closed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from voice.config import Settings
from voice.gateway.base import Gateway
from voice.metrics import Metrics
from voice.page_routes import page_routes
from voice.telephony_routes import telephony_routes
from voice.transports.native_ws import CLOSE_TRY_AGAIN, NativeSession
from voice.transports.webrtc import WebRtcPeers
from voice.webrtc_routes import webrtc_routes
from voice.workers import WorkerPeers

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    gateway: Gateway
    metrics: Metrics = field(default_factory=Metrics)
    webrtc: WebRtcPeers = field(default_factory=WebRtcPeers)
    """Live WebRTC sessions; their peer connections outlive the offer request."""
    peers: WorkerPeers | None = None
    """The other worker processes of this server (``voice serve --workers``), if any."""

    def server_metrics(self) -> Metrics:
        """This process's metrics, with the other workers' added: the whole server's."""
        return self.metrics if self.peers is None else self.metrics.combined(self.peers.others())

    def sessions_active(self) -> int:
        """Sessions connected now, in this process and the other workers."""
        active = self.metrics.sessions_active
        if self.peers is not None:
            active += sum(other["sessions_active"] for other in self.peers.others())
        return active

    @property
    def full(self) -> bool:
        return self.sessions_active() >= self.settings.server.max_sessions


def build_gateway(settings: Settings) -> Gateway:
    """The gateway the settings name. Only here and in the CLI is the choice made.

    With no URL, the embedded local engines (the ``local`` extra): the offline default.
    Without that extra this raises a :class:`~voice.errors.ConfigError` naming it.
    """
    if settings.gateway.url is None:
        from voice.gateway.local import LocalGateway

        return LocalGateway.from_settings(settings.gateway)
    from voice.gateway.http import HttpGateway

    return HttpGateway(settings.gateway)


def create_app(
    settings: Settings, *, gateway: Gateway | None = None, peers: WorkerPeers | None = None
) -> Starlette:
    """The app. With no ``gateway``, one is built from settings and closed at shutdown.

    ``peers``: this process is one of the workers of ``voice serve --workers``.
    """
    owned = gateway is None
    state = AppState(settings=settings, gateway=gateway or build_gateway(settings), peers=peers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.gateway.warm()
        publisher = None
        if peers is not None:
            # Published before the first request: the supervisor takes a worker that exits
            # before it ever published for one that could not start.
            peers.publish(state.metrics.snapshot())
            publisher = asyncio.create_task(peers.run(lambda: state.metrics.snapshot()))
        try:
            yield
        finally:
            if publisher is not None:
                publisher.cancel()
            await state.webrtc.aclose()
            if owned:
                await state.gateway.aclose()

    app = Starlette(
        routes=[
            WebSocketRoute("/v1/session", _session),
            *telephony_routes(),
            *webrtc_routes(),
            Route("/health", _health),
            Route("/ready", _ready),
            Route("/metrics", _metrics),
            *page_routes(),
        ],
        lifespan=lifespan,
    )
    app.state.voice = state
    return app


async def _session(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.voice
    await websocket.accept()
    if state.full:
        state.metrics.sessions_rejected += 1
        await websocket.send_json(
            {"type": "error", "code": "server_busy", "message": "server at capacity; retry"}
        )
        await websocket.close(code=CLOSE_TRY_AGAIN, reason="server at capacity")
        return
    session_id = "sess_" + secrets.token_hex(6)
    state.metrics.sessions_active += 1
    state.metrics.sessions_total += 1
    warm = asyncio.create_task(state.gateway.warm())
    try:
        transport = NativeSession(
            websocket,
            session_id=session_id,
            settings=state.settings,
            gateway=state.gateway,
            observe=state.metrics.observe,
        )
        logger.info("[%s] session started (%s)", session_id, _peer(websocket))
        await transport.run()
    finally:
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        state.metrics.sessions_active -= 1
        logger.info("[%s] session ended", session_id)


def _peer(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "unknown peer"


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _ready(request: Request) -> Response:
    state: AppState = request.app.state.voice
    active, limit = state.sessions_active(), state.settings.server.max_sessions
    body = {"sessions": active, "max_sessions": limit}
    return JSONResponse(body, status_code=503 if active >= limit else 200)


async def _metrics(request: Request) -> Response:
    state: AppState = request.app.state.voice
    text = state.server_metrics().render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
