"""The one way into a call, for every transport: capacity, ids, metrics, warm-up, the Session.

A route calls :meth:`Admission.check` as early as its wire allows a refusal (before a
WebSocket upgrade, before an offer is parsed), then :meth:`Admission.admit`, which checks
again and returns a :class:`Call`: the :class:`~voice.pipeline.session.Session` it built,
counted as active until the call ends, exactly once. WebSocket transports hold the call in
``async with``; a WebRTC call outlives its offer request and is ended from the peer
connection's close callback with :meth:`Call.end`.

Every check a call must pass (capacity today) lives in :meth:`Admission.check` alone; a
refusal is a :class:`~voice.errors.CallRefused` that each transport turns into its own wire
(an HTTP status, an ``error`` event, a close code: :func:`close_code`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Callable
from types import TracebackType

from websockets.frames import CloseCode

from voice.app.metrics import Metrics
from voice.config import Settings
from voice.errors import CallRefused, ServerBusy
from voice.gateway.base import Gateway
from voice.pipeline.session import Session, SessionLogger

logger = logging.getLogger(__name__)


class Transport(enum.Enum):
    """How a caller reached us; names the call in logs and picks its id's prefix."""

    NATIVE = "native"
    WEBRTC = "webrtc"
    TWILIO = "twilio"
    TELNYX = "telnyx"

    @property
    def id_prefix(self) -> str:
        return "call_" if self in (Transport.TWILIO, Transport.TELNYX) else "sess_"


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
    in ``metrics``, which also observes every session event.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: Gateway,
        metrics: Metrics,
        active: Callable[[], int],
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._metrics = metrics
        self._active = active

    @property
    def full(self) -> bool:
        return self._active() >= self._settings.server.max_sessions

    def check(self) -> None:
        """Raise :class:`~voice.errors.CallRefused` if a call would not be let in now."""
        if self.full:
            self._metrics.session_refused()
            raise ServerBusy()

    def admit(self, transport: Transport, *, peer: str) -> Call:
        """Check, then count the call in and build its session; the caller ends the call."""
        self.check()
        metrics = self._metrics
        session = Session(
            session_id=transport.id_prefix + secrets.token_hex(6),
            settings=self._settings,
            gateway=self._gateway,
            observe=metrics.observe,
        )
        metrics.session_started()
        # Open gateway connections while the caller is still speaking its first turn.
        warm = asyncio.create_task(self._gateway.warm())
        warm.add_done_callback(_warm_done)
        SessionLogger(logger, {"session": session.id}).info(
            "%s call started (%s)", transport.value, peer
        )
        return Call(session, transport, on_end=metrics.session_ended, warm=warm)


def _warm_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("warming the gateway's connections failed: %r", error)
