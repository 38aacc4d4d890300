"""``/health`` (the process answers), ``/ready`` (503 at capacity, while draining for a stop,
or while this process cannot reach its gateway: send no more calls here) and ``/metrics``
(Prometheus text, the whole server's)."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from voice.app.auth import bearer
from voice.app.responses import error_response
from voice.app.state import app_state

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format prometheus_client's ``generate_latest`` writes."""


def health_routes() -> list[BaseRoute]:
    return [Route("/health", _health), Route("/ready", _ready), Route("/metrics", _metrics)]


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _ready(request: Request) -> Response:
    state = app_state(request)
    active, limit = state.sessions_active(), state.settings.server.max_sessions
    body: dict[str, object] = {"sessions": active, "max_sessions": limit}
    if state.admission.draining:
        body["status"] = "draining"
    elif not state.gateway_health.reachable:
        body["status"] = "gateway_unreachable"
        body["gateway"] = state.gateway_health.reason
    elif active >= limit:
        body["status"] = "full"
    else:
        body["status"] = "ready"
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


async def _metrics(request: Request) -> Response:
    state = app_state(request)
    token = state.settings.auth.metrics_token
    if token is not None:
        given = (bearer(request) or "").encode()
        if not hmac.compare_digest(given, token.get_secret_value().encode()):
            message = "send the metrics token as Authorization: Bearer (VOICE_METRICS_TOKEN)"
            return error_response(
                401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"}
            )
    return PlainTextResponse(state.metrics_text(), media_type=CONTENT_TYPE)
