"""The app's HTTP error body, one shape for every refusal: ``{"error": {"code", "message"}}``
(an offer's, a WebSocket handshake's, ``/metrics``'s, a plain request on a WebSocket route)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)
