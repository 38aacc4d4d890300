"""The one admission path: capacity, ids, counts in and out exactly once, warm-up, the
Session it builds (observed by the metrics), and the refusal each transport renders."""

import asyncio

import pytest
from starlette.requests import HTTPConnection
from websockets.frames import CloseCode

from tests.timing import MS
from voice.app.admission import Admission, Transport, close_code
from voice.app.metrics import Metrics
from voice.config import Settings
from voice.core.events import ErrorEvent
from voice.errors import CallRefused, ServerBusy
from voice.gateway.simulated import SimulatedGateway, SimulationSettings


class CountingGateway(SimulatedGateway):
    def __init__(self):
        super().__init__(SimulationSettings())
        self.warmed = 0

    async def warm(self):
        self.warmed += 1


def conn(headers=(), query=b""):
    """A request as the routes see it (the admission path reads headers and the query)."""
    scope = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "query_string": query,
        "client": ("127.0.0.1", 50000),
    }
    return HTTPConnection(scope)


def admission(max_sessions=2):
    metrics = Metrics()
    settings = Settings.model_validate({"server": {"max_sessions": max_sessions}})
    gateway = CountingGateway()
    gate = Admission(
        settings=settings,
        gateway=gateway,
        metrics=metrics,
        active=lambda: metrics.sessions_active,
    )
    return gate, metrics, gateway


async def test_calls_are_counted_in_and_out_once_and_refused_at_capacity():
    gate, metrics, gateway = admission(max_sessions=2)
    first = gate.admit(Transport.NATIVE, conn())
    second = gate.admit(Transport.TWILIO, conn())
    assert first.id.startswith("sess_") and second.id.startswith("call_")
    assert first.id != second.id
    assert (metrics.sessions_active, metrics.sessions_total) == (2, 2)
    await asyncio.sleep(10 * MS)
    assert gateway.warmed == 2  # each admitted call warms the gateway's connections
    with pytest.raises(ServerBusy) as refused:
        gate.admit(Transport.WEBRTC, conn())
    assert refused.value.status == 503 and refused.value.code == "server_busy"
    assert close_code(refused.value) == CloseCode.TRY_AGAIN_LATER
    assert metrics.sessions_rejected == 1
    with pytest.raises(CallRefused):
        gate.check(conn())
    assert metrics.sessions_rejected == 2

    first.end("done")
    first.end("again")  # idempotent: a second end frees nothing more
    assert metrics.sessions_active == 1
    async with second as session:
        assert session is second.session
    assert metrics.sessions_active == 0 and metrics.sessions_total == 2
    gate.check(conn())  # room again


async def test_a_call_ends_when_its_block_raises_and_its_session_reports_to_metrics():
    gate, metrics, _ = admission()
    call = gate.admit(Transport.TELNYX, conn())
    with pytest.raises(RuntimeError):
        async with call as session:
            session.emit(ErrorEvent("invalid_message", "a bad frame"))
            raise RuntimeError("the transport failed")
    assert metrics.sessions_active == 0
    assert metrics.errors["invalid_message"] == 1
