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

import hmac
import logging

from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.frames import CloseCode

from voice.app.admission import Transport, refuse_websocket, upgrade_required
from voice.app.auth import carrier_routes_served
from voice.app.state import app_state
from voice.config import Settings
from voice.errors import CallRefused
from voice.transports.telephony import Dialect, TelephonyCall
from voice.transports.telnyx import TelnyxDialect
from voice.transports.twilio import TwilioDialect, signature_matches, twiml_connect_stream

logger = logging.getLogger(__name__)

TWILIO_PATH = "/v1/twilio"
TWIML_PATH = "/v1/twilio/twiml"
TELNYX_PATH = "/v1/telnyx"
MAX_PARAMETERS = 16
"""``<Parameter>``s forwarded from the TwiML request's query string, at most."""


def telephony_routes(settings: Settings) -> list[BaseRoute]:
    """The carriers' routes. On a network address, a carrier whose credential is not set is
    not served at all (docs/security.md)."""
    served = carrier_routes_served(settings)
    routes: list[BaseRoute] = []
    if served["twilio"]:
        routes += [
            WebSocketRoute(TWILIO_PATH, _twilio_stream),
            upgrade_required(TWILIO_PATH),
            Route(TWIML_PATH, _twiml, methods=["GET", "POST"]),
        ]
    if served["telnyx"]:
        routes += [WebSocketRoute(TELNYX_PATH, _telnyx_stream), upgrade_required(TELNYX_PATH)]
    for carrier, variable in (
        ("twilio", "VOICE_TWILIO_AUTH_TOKEN"),
        ("telnyx", "VOICE_TELNYX_STREAM_TOKEN"),
    ):
        if not served[carrier]:
            logger.warning(
                "%s calls are not served on %s without %s",
                carrier.capitalize(),
                settings.server.host,
                variable,
            )
    return routes


async def _twiml(request: Request) -> Response:
    state = app_state(request)
    token = state.settings.telephony.twilio_auth_token
    if token is not None:
        form = await request.form() if request.method == "POST" else None
        params = {k: [str(v) for v in form.getlist(k)] for k in form} if form else None
        signature = request.headers.get("x-twilio-signature")
        urls = _signed_urls(request, TWIML_PATH, websocket=False)
        if not signature_matches(token.get_secret_value(), signature, urls, params):
            logger.warning("TwiML request refused: X-Twilio-Signature does not match")
            return PlainTextResponse("signature does not match", status_code=403)
    stream_url = _public_base(request, websocket=True) + _mounted(request, TWILIO_PATH)
    parameters = list(request.query_params.multi_items())[:MAX_PARAMETERS]
    return Response(twiml_connect_stream(stream_url, parameters), media_type="text/xml")


async def _twilio_stream(websocket: WebSocket) -> None:
    state = app_state(websocket)
    token = state.settings.telephony.twilio_auth_token
    if token is not None:
        signature = websocket.headers.get("x-twilio-signature")
        urls = _signed_urls(websocket, TWILIO_PATH, websocket=True)
        if not signature_matches(token.get_secret_value(), signature, urls):
            logger.warning("Twilio stream refused: X-Twilio-Signature does not match")
            await websocket.close(code=CloseCode.POLICY_VIOLATION)  # before accept: HTTP 403
            return
    await _run_call(websocket, TwilioDialect(), Transport.TWILIO)


async def _telnyx_stream(websocket: WebSocket) -> None:
    state = app_state(websocket)
    token = state.settings.telephony.telnyx_stream_token
    if token is not None:
        given = websocket.headers.get("x-telnyx-streaming-auth-token", "")
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            logger.warning("Telnyx stream refused: streaming auth token does not match")
            await websocket.close(code=CloseCode.POLICY_VIOLATION)
            return
    await _run_call(websocket, TelnyxDialect(), Transport.TELNYX)


async def _run_call(websocket: WebSocket, dialect: Dialect, transport: Transport) -> None:
    state = app_state(websocket)
    try:
        call = state.admission.admit(transport, websocket)
    except CallRefused as refused:
        # Carriers have no error message to show; the close code and reason say it.
        await refuse_websocket(websocket, refused, event=False)
        return
    dropped = state.metrics.telephony_dropped
    async with call as session:
        await websocket.accept()
        await TelephonyCall(
            websocket,
            session,
            dialect=dialect,
            settings=state.settings,
            on_dropped=lambda kind: dropped.update((kind,)),
        ).run()


def _public_base(conn: HTTPConnection, *, websocket: bool) -> str:
    """This app's base URL as carriers reach it: ``VOICE_PUBLIC_URL``, else the Host header.

    Carriers connect streams over TLS only, so without a public URL a stream URL is wss.
    """
    state = app_state(conn)
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
    urls = [_public_base(conn, websocket=websocket) + _mounted(conn, path) + query]
    state = app_state(conn)
    if state.settings.telephony.public_url is None and not websocket:
        # A TLS-terminating proxy that does not forward the scheme: Twilio asked for https.
        urls.append("https://" + urls[0].split("://", 1)[1])
    return urls


def _mounted(conn: HTTPConnection, path: str) -> str:
    """``path`` under the prefix the app is mounted at (``root_path``), if any."""
    root: str = conn.scope.get("root_path", "")
    return root.rstrip("/") + path
