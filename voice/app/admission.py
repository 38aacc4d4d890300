"""The one way into a call, for every transport: origin, caller token, capacity, ids,
metrics, warm-up, the Session.

A route calls :meth:`Admission.admit` with the request or handshake before it accepts
anything, so a refusal can be an HTTP status before a WebSocket upgrade; a WebRTC offer
calls :meth:`Admission.check` before it reads the body. ``admit`` returns a :class:`Call`:
the :class:`~voice.pipeline.session.Session` it built (with what the caller's token pins),
counted as active until the call ends, exactly once. WebSocket transports hold the call in
``async with``; a WebRTC call outlives its offer request and is ended from the peer
connection's close callback with :meth:`Call.end`.

Every check a call must pass lives in :meth:`Admission.check` alone, in this order: the
page's ``Origin`` (403), the caller token when ``VOICE_AUTH_SECRET`` is set (401), a server
draining for a stop (503, voice/app/drain.py), capacity (503). A refusal is a
:class:`~voice.errors.CallRefused` that each transport turns into its own wire
(:func:`refuse_websocket`, an offer's JSON error).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Callable
from types import TracebackType

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from websockets.frames import CloseCode

from voice.app.auth import Caller, Origins, TokenVerifier, token_from
from voice.app.gateway_health import GatewayHealth
from voice.app.metrics import Metrics
from voice.app.responses import error_response
from voice.config import Settings
from voice.core.events import ErrorEvent, SessionEvent
from voice.errors import CallRefused, ServerBusy, ServerDraining
from voice.gateway.base import Gateway
from voice.pipeline.notices import Notices
from voice.pipeline.session import Session
from voice.pipeline.sink import Emit
from voice.transports.wire import event_to_wire

logger = logging.getLogger(__name__)


class Transport(enum.Enum):
    """How a caller reached us; names the call in logs and picks its id's prefix."""

    NATIVE = "native"
    WEBRTC = "webrtc"
    TWILIO = "twilio"
    TELNYX = "telnyx"

    @property
    def id_prefix(self) -> str:
        return "call_" if self.is_carrier else "sess_"

    @property
    def is_carrier(self) -> bool:
        return self in (Transport.TWILIO, Transport.TELNYX)

    @property
    def needs_token(self) -> bool:
        """Carriers cannot send our caller tokens: their own signature or token stands in."""
        return not self.is_carrier


def close_code(refused: CallRefused) -> CloseCode:
    """The WebSocket close code that refuses a call after the upgrade (RFC 6455 §7.4.1)."""
    if refused.status == 503:
        return CloseCode.TRY_AGAIN_LATER
    return CloseCode.POLICY_VIOLATION


class Call:
    """One admitted call: its session, counted as active until :meth:`end` (once).

    ``async with call as session:`` ends it however the block is left, after closing the
    session (which cancels every gateway request in flight for it).
    """

    def __init__(
        self,
        session: Session,
        transport: Transport,
        *,
        on_end: Callable[[], None],
        warm: asyncio.Task[None],
    ) -> None:
        self.session = session
        self.transport = transport
        self._on_end = on_end
        self._warm = warm
        self._ended = False

    @property
    def id(self) -> str:
        return self.session.id

    def end(self, reason: str = "ended") -> None:
        """The call is over: it no longer counts against capacity. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._warm.cancel()
        self._on_end()
        self.session.log.info("%s call ended: %s", self.transport.value, reason)

    async def aclose(self, reason: str = "ended") -> None:
        """Close the session, then :meth:`end` the call and wait for its warm-up to stop."""
        try:
            await self.session.aclose()
        finally:
            self.end(reason)
            await asyncio.gather(self._warm, return_exceptions=True)

    async def __aenter__(self) -> Session:
        return self.session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose("the caller left" if exc is None else type(exc).__name__)


class Admission:
    """Lets calls in, up to the server's capacity, and builds each one's session.

    ``active`` counts the whole server's sessions (every worker's); this process's own are
    in ``metrics``, which also observes every session event, as ``health`` does (turns that
    failed for want of the gateway).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        metrics: Metrics,
        active: Callable[[], int],
        notices: Notices | None = None,
        health: GatewayHealth | None = None,
    ) -> None:
        self._settings = settings
        self._notices = notices
        self._gateway = gateway
        self._metrics = metrics
        self._health = health if health is not None and health.watched else None
        self._active = active
        secret = settings.auth.secret
        self._tokens = None if secret is None else TokenVerifier(secret.get_secret_value())
        self._origins = Origins(
            settings.auth.allowed_origins, public_url=settings.telephony.public_url
        )
        self.calls: set[Call] = set()
        """This process's calls in progress."""
        self.draining = False
        """Set when the server begins to stop: every new call is refused."""

    @property
    def full(self) -> bool:
        return self._active() >= self._settings.server.max_sessions

    def check(self, conn: HTTPConnection, *, token: bool = True) -> Caller | None:
        """Raise :class:`~voice.errors.CallRefused` if this call would not be let in now;
        the verified caller, if tokens are required (``token=False``: a carrier's route,
        whose signature stands for a token)."""
        try:
            self._origins.check(conn)
            caller = self._tokens.verify(token_from(conn)) if self._tokens and token else None
            if self.draining:
                raise ServerDraining()
            if self.full:
                raise ServerBusy()
        except CallRefused as refused:
            self._metrics.session_refused()
            logger.info("call refused (%s): %s", refused.code, refused.message)
            raise
        return caller

    def admit(self, transport: Transport, conn: HTTPConnection) -> Call:
        """Check, then count the call in and build its session; the route ends the call."""
        caller = self.check(conn, token=transport.needs_token)
        limits = self._settings.limits
        pins = caller.pins if caller is not None else None
        metrics = self._metrics
        session = Session(
            session_id=transport.id_prefix + secrets.token_hex(6),
            settings=self._settings,
            gateway=self._gateway,
            observe=self._observer(),
            max_session_s=pins.max_session_s if pins is not None else limits.max_session_s,
            notices=self._notices,
        )
        if pins is not None:
            session.pin(
                instructions=pins.instructions, voice=pins.voice, locked=not pins.allow_update
            )
        metrics.session_started()
        # Open gateway connections while the caller is still speaking its first turn.
        warm = asyncio.create_task(self._gateway.warm())
        warm.add_done_callback(_warm_done)
        who = f" for {caller.sub}" if caller is not None and caller.sub else ""
        session.log.info("%s call started (%s)%s", transport.value, _peer(conn), who)

        def ended() -> None:
            self.calls.discard(call)
            metrics.session_ended()

        call = Call(session, transport, on_end=ended, warm=warm)
        self.calls.add(call)
        return call

    def _observer(self) -> Emit:
        """What a new session's events go to: the metrics and, if watched, the gateway health."""
        if self._health is None:
            return self._metrics.observe
        return _both(self._metrics.observe, self._health.observe)


async def refuse_websocket(websocket: WebSocket, refused: CallRefused, *, event: bool) -> None:
    """Refuse a handshake: as an HTTP response before the upgrade (401, 403, 503 while
    draining: a load balancer may retry that on another instance); at capacity, as
    documented since the start, accept and close 1013 (after an ``error`` event if the
    wire has one)."""
    if not isinstance(refused, ServerBusy):
        denial = error_response(refused.status, refused.code, refused.message)
        await websocket.send_denial_response(denial)
        return
    await websocket.accept()
    if event:
        await websocket.send_json(event_to_wire(ErrorEvent(refused.code, refused.message)))
    await websocket.close(code=close_code(refused), reason=refused.message[:120])


def _both(first: Emit, second: Emit) -> Emit:
    def observe(event: SessionEvent) -> None:
        first(event)
        second(event)

    return observe


def _peer(conn: HTTPConnection) -> str:
    client = conn.client
    return f"{client.host}:{client.port}" if client else "unknown peer"


def _warm_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("warming the gateway's connections failed: %r", error)


def upgrade_required(path: str) -> Route:
    """A plain HTTP request on WebSocket route ``path``: 426, saying what to do instead."""

    async def answer(request: Request) -> Response:
        message = f"{path} is a WebSocket endpoint: connect with a WebSocket client (ws://)"
        headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
        return error_response(426, "upgrade_required", message, headers=headers)

    return Route(path, answer, methods=["GET", "POST", "HEAD"])
