"""Browser routes of the app: WebRTC signalling.

- ``POST /v1/webrtc/offer``: body ``{"sdp": ..., "type": "offer", "session": {"instructions",
  "voice"}}`` (``session`` optional) → 200 ``{"sdp", "type": "answer", "session_id"}``.
  A bad offer gets 400 and a server at ``max_sessions`` 503, both as
  ``{"error": {"code", "message"}}``; no peer connection is created for either.

The answer carries every server candidate (no trickle), so the browser should post its offer
once its own ICE gathering is complete. Protocol: docs/protocol.md.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voice.errors import InvalidOffer, VoiceError
from voice.transports.ice import host_addresses
from voice.transports.offer import parse_offer
from voice.transports.webrtc import WebRtcSession

if TYPE_CHECKING:
    from voice.server import AppState

logger = logging.getLogger(__name__)

OFFER_PATH = "/v1/webrtc/offer"


def webrtc_routes() -> list[BaseRoute]:
    return [Route(OFFER_PATH, _offer, methods=["POST"])]


def error_response(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _offer(request: Request) -> Response:
    state: AppState = request.app.state.voice
    settings = state.settings
    try:
        body = await _read_body(request, settings.webrtc.max_offer_bytes)
        offer = parse_offer(body)
    except InvalidOffer as exc:
        logger.info("WebRTC offer refused (%s): %s", exc.code, exc.message)
        return error_response(400, exc.code, exc.message)
    except ClientDisconnect:
        return Response(status_code=400)
    if state.full:
        state.metrics.sessions_rejected += 1
        return error_response(503, "server_busy", "server at capacity; retry")

    session_id = "sess_" + secrets.token_hex(6)
    state.metrics.sessions_active += 1
    state.metrics.sessions_total += 1

    def forget(peer: WebRtcSession, reason: str) -> None:
        state.webrtc.discard(peer)
        state.metrics.sessions_active -= 1
        logger.info("[%s] webrtc session ended: %s", peer.id, reason)

    peer = WebRtcSession(
        session_id=session_id,
        settings=settings,
        gateway=state.gateway,
        observe=state.metrics.observe,
        on_closed=forget,
    )
    state.webrtc.add(peer)
    answered = False
    try:
        sdp = await peer.answer(offer, host_addresses(settings.webrtc, settings.server.host))
        answered = not peer.closed
    except InvalidOffer as exc:
        logger.info("WebRTC offer refused (%s): %s", exc.code, exc.message)
        return error_response(400, exc.code, exc.message)
    except VoiceError as exc:
        logger.error("[%s] could not answer a WebRTC offer: %s", session_id, exc.message)
        return error_response(500, exc.code, exc.message)
    except Exception:
        logger.exception("[%s] could not answer a WebRTC offer", session_id)
        return error_response(500, "internal_error", "could not answer the offer; see server log")
    finally:
        if not answered:
            await peer.aclose("the offer was not answered")
    if not answered:
        return error_response(503, "server_busy", "the server is shutting down; retry")
    logger.info("[%s] webrtc session started (%s)", session_id, _peer(request))
    return JSONResponse({"sdp": sdp, "type": "answer", "session_id": session_id})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (not trusting Content-Length)."""
    too_large = InvalidOffer(
        f"the offer is over {limit} bytes; a browser's audio offer is a few KiB",
        code="offer_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "unknown peer"
