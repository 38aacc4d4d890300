"""``WS /v1/session``: the native protocol (docs/protocol.md), admitted like every call."""

from __future__ import annotations

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from voice.app.admission import Transport, refuse_websocket, upgrade_required
from voice.app.state import app_state
from voice.errors import CallRefused
from voice.transports.native_ws import NativeSession

SESSION_PATH = "/v1/session"


def session_routes() -> list[BaseRoute]:
    return [WebSocketRoute(SESSION_PATH, _session), upgrade_required(SESSION_PATH)]


async def _session(websocket: WebSocket) -> None:
    state = app_state(websocket)
    try:
        call = state.admission.admit(Transport.NATIVE, websocket)
    except CallRefused as refused:
        await refuse_websocket(websocket, refused, event=True)
        return
    async with call as session:
        await websocket.accept()
        await NativeSession(websocket, session, settings=state.settings).run()
