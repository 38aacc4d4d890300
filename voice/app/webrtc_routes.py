"""Browser routes of the app: WebRTC signalling.

- ``POST /v1/webrtc/offer``: body ``{"sdp": ..., "type": "offer", "session": {"instructions",
  "voice"}}`` (``session`` optional) → 200 ``{"sdp", "type": "answer", "session_id"}``.
  Refusals, all as ``{"error": {"code", "message"}}`` and none with a peer connection: the
  admission path's (403 origin, 401 token, 503 capacity), 429 past the offers a client
  address may post a minute, 503 while too many calls are still connecting, 415 for a body
  that is not ``application/json``, 400 for a bad offer.

The answer carries every server candidate (no trickle), so the browser should post its offer
once its own ICE gathering is complete. Protocol: docs/protocol.md.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voice.app.admission import Transport
from voice.app.responses import error_response
from voice.app.state import app_state
from voice.errors import CallRefused, InvalidOffer, VoiceError
from voice.transports.ice import host_addresses
from voice.transports.offer import parse_offer
from voice.transports.webrtc import WebRtcSession

logger = logging.getLogger(__name__)

OFFER_PATH = "/v1/webrtc/offer"


def webrtc_routes() -> list[BaseRoute]:
    return [Route(OFFER_PATH, _offer, methods=["POST"])]


def peer_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _offer(request: Request) -> Response:
    state = app_state(request)
    settings = state.settings
    try:
        state.admission.check(request)  # the page's origin and the token come first
        if refusal := _over_offer_limits(request):
            return refusal
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            # Also what keeps a cross-site form or text/plain "simple request", which a
            # browser sends with no preflight, from ever reaching the offer.
            return error_response(
                415, "unsupported_media_type", "the offer must be sent as application/json"
            )
        body = await _read_body(request, settings.webrtc.max_offer_bytes)
        offer = parse_offer(body)
        call = state.admission.admit(Transport.WEBRTC, request)
    except CallRefused as refused:
        return error_response(refused.status, refused.code, refused.message)
    except InvalidOffer as exc:
        logger.info("WebRTC offer refused (%s): %s", exc.code, exc.message)
        return error_response(400, exc.code, exc.message)
    except ClientDisconnect:
        return Response(status_code=400)

    def forget(peer: WebRtcSession, reason: str) -> None:
        state.webrtc.discard(peer)
        call.end(reason)

    try:
        peer = WebRtcSession(call.session, settings=settings, on_closed=forget)
    except BaseException:
        call.end("the peer connection could not be made")
        raise
    state.webrtc.add(peer)
    answered = False
    try:
        sdp = await peer.answer(offer, host_addresses(settings.webrtc, settings.server.host))
        answered = not peer.closed
    except InvalidOffer as exc:
        logger.info("WebRTC offer refused (%s): %s", exc.code, exc.message)
        return error_response(400, exc.code, exc.message)
    except VoiceError as exc:
        peer.log.error("could not answer a WebRTC offer: %s", exc.message)
        return error_response(500, exc.code, exc.message)
    except Exception:
        peer.log.exception("could not answer a WebRTC offer")
        return error_response(500, "internal_error", "could not answer the offer; see server log")
    finally:
        if not answered:
            await peer.aclose("the offer was not answered")
    if not answered:
        return error_response(503, "server_busy", "the server is shutting down; retry")
    return JSONResponse({"sdp": sdp, "type": "answer", "session_id": call.id})


def _over_offer_limits(request: Request) -> Response | None:
    """Junk offers cannot fill the server: offers per client address per minute, and a share
    of ``max_sessions`` for calls answered but not connected yet."""
    state = app_state(request)
    limits, server = state.settings.limits, state.settings.server
    if not state.offers.allow(peer_address(request), time.monotonic()):
        message = f"over {limits.offers_per_min} offers a minute from this address; retry later"
        return error_response(429, "rate_limited", message, headers={"Retry-After": "60"})
    if state.webrtc.connecting() >= max(1, int(server.max_sessions * limits.connecting_share)):
        message = "too many calls are still connecting; retry in a few seconds"
        return error_response(503, "server_busy", message, headers={"Retry-After": "5"})
    return None


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
