"""Carrier routes of the app: Twilio and Telnyx media streams, and Twilio's TwiML helper.

- ``WS /v1/twilio``: a Twilio Media Streams bidirectional stream;
- ``GET|POST /v1/twilio/twiml``: TwiML that connects a call to it (point a number's voice
  webhook here); the request's query parameters travel to the stream as ``<Parameter>``s;
- ``WS /v1/telnyx``: a Telnyx media stream (bidirectional RTP mode).

With ``VOICE_TWILIO_AUTH_TOKEN`` set, the TwiML request and the Twilio handshake must carry a
valid ``X-Twilio-Signature``, else 403. Twilio signs the URL it requested, which behind a
proxy is not the one this process sees: ``VOICE_PUBLIC_URL`` names it. Docs:
docs/telephony.md.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from voice.transports.telephony import Dialect, TelephonyCall
from voice.transports.telnyx import TelnyxDialect
from voice.transports.twilio import TwilioDialect, signature_matches, twiml_connect_stream

if TYPE_CHECKING:
    from voice.server import AppState

logger = logging.getLogger(__name__)

TWILIO_PATH = "/v1/twilio"
TWIML_PATH = "/v1/twilio/twiml"
TELNYX_PATH = "/v1/telnyx"
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
MAX_PARAMETERS = 16
"""``<Parameter>``s forwarded from the TwiML request's query string, at most."""


def telephony_routes() -> list[BaseRoute]:
    return [
        WebSocketRoute(TWILIO_PATH, _twilio_stream),
        Route(TWIML_PATH, _twiml, methods=["GET", "POST"]),
        WebSocketRoute(TELNYX_PATH, _telnyx_stream),
    ]


async def _twiml(request: Request) -> Response:
    state: AppState = request.app.state.voice
    token = state.settings.telephony.twilio_auth_token
    if token is not None:
        form = await request.form() if request.method == "POST" else None
        params = {k: [str(v) for v in form.getlist(k)] for k in form} if form else None
        signature = request.headers.get("x-twilio-signature")
        urls = _signed_urls(request, TWIML_PATH, websocket=False)
        if not signature_matches(token.get_secret_value(), signature, urls, params):
            logger.warning("TwiML request refused: X-Twilio-Signature does not match")
            return PlainTextResponse("signature does not match", status_code=403)
    stream_url = _public_base(request, websocket=True) + TWILIO_PATH
    parameters = list(request.query_params.multi_items())[:MAX_PARAMETERS]
    return Response(twiml_connect_stream(stream_url, parameters), media_type="text/xml")


async def _twilio_stream(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.voice
    token = state.settings.telephony.twilio_auth_token
    if token is not None:
        signature = websocket.headers.get("x-twilio-signature")
        urls = _signed_urls(websocket, TWILIO_PATH, websocket=True)
        if not signature_matches(token.get_secret_value(), signature, urls):
            logger.warning("Twilio stream refused: X-Twilio-Signature does not match")
            await websocket.close(code=CLOSE_POLICY)  # before accept: HTTP 403
            return
    await _run_call(websocket, state, TwilioDialect())


async def _telnyx_stream(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.voice
    token = state.settings.telephony.telnyx_stream_token
    if token is not None:
        given = websocket.headers.get("x-telnyx-streaming-auth-token", "")
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            logger.warning("Telnyx stream refused: streaming auth token does not match")
            await websocket.close(code=CLOSE_POLICY)
            return
    await _run_call(websocket, state, TelnyxDialect())


async def _run_call(websocket: WebSocket, state: AppState, dialect: Dialect) -> None:
    await websocket.accept()
    if state.full:
        # Carriers have no error message to show; the close code and reason say it.
        state.metrics.sessions_rejected += 1
        await websocket.close(code=CLOSE_TRY_AGAIN, reason="server at capacity")
        return
    session_id = "call_" + secrets.token_hex(6)
    state.metrics.sessions_active += 1
    state.metrics.sessions_total += 1
    warm = asyncio.create_task(state.gateway.warm())
    try:
        call = TelephonyCall(
            websocket,
            dialect=dialect,
            session_id=session_id,
            settings=state.settings,
            gateway=state.gateway,
            observe=state.metrics.observe,
            on_dropped=lambda kind: state.metrics.telephony_dropped.update((kind,)),
        )
        logger.info("[%s] %s call connected", session_id, dialect.name)
        await call.run()
    finally:
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        state.metrics.sessions_active -= 1
        logger.info("[%s] call ended", session_id)


def _public_base(conn: HTTPConnection, *, websocket: bool) -> str:
    """This app's base URL as carriers reach it: ``VOICE_PUBLIC_URL``, else the Host header.

    Carriers connect streams over TLS only, so without a public URL a stream URL is wss.
    """
    state: AppState = conn.app.state.voice
    public = state.settings.telephony.public_url
    if public is None:
        host = conn.headers.get("host") or conn.url.netloc
        return ("wss://" if websocket else f"{conn.url.scheme}://") + host
    if websocket:
        return "ws" + public.removeprefix("http")
    return public


def _signed_urls(conn: HTTPConnection, path: str, *, websocket: bool) -> list[str]:
    """The URLs Twilio may have signed for this request, most likely first."""
    query = f"?{conn.url.query}" if conn.url.query else ""
    urls = [_public_base(conn, websocket=websocket) + path + query]
    state: AppState = conn.app.state.voice
    if state.settings.telephony.public_url is None and not websocket:
        # A TLS-terminating proxy that does not forward the scheme: Twilio asked for https.
        urls.append("https://" + urls[0].split("://", 1)[1])
    return urls
