"""``WS /v1/session``: the native protocol (docs/protocol.md), admitted like every call."""

from __future__ import annotations

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from voice.app.admission import Transport, close_code
from voice.app.state import app_state, peer_name
from voice.errors import CallRefused
from voice.transports.native_ws import NativeSession

SESSION_PATH = "/v1/session"


def session_routes() -> list[BaseRoute]:
    return [WebSocketRoute(SESSION_PATH, _session)]


async def _session(websocket: WebSocket) -> None:
    state = app_state(websocket)
    await websocket.accept()
    try:
        call = state.admission.admit(Transport.NATIVE, peer=peer_name(websocket))
    except CallRefused as refused:
        await websocket.send_json(
            {"type": "error", "code": refused.code, "message": refused.message}
        )
        await websocket.close(code=close_code(refused), reason=refused.message[:120])
        return
    async with call as session:
        await NativeSession(websocket, session, settings=state.settings).run()
