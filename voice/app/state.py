"""What the app's routes share: settings, the gateway, metrics, live WebRTC peers, and the
admission path. One per app, at ``app.state.voice``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from voice.app.admission import Admission
from voice.app.metrics import Metrics
from voice.app.workers import WorkerPeers
from voice.config import Settings
from voice.gateway.base import Gateway
from voice.transports.webrtc import WebRtcPeers


@dataclass
class AppState:
    settings: Settings
    gateway: Gateway
    metrics: Metrics = field(default_factory=Metrics)
    webrtc: WebRtcPeers = field(default_factory=WebRtcPeers)
    """Live WebRTC sessions; their peer connections outlive the offer request."""
    peers: WorkerPeers | None = None
    """The other worker processes of this server (``voice serve --workers``), if any."""
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(
            settings=self.settings,
            gateway=self.gateway,
            metrics=self.metrics,
            active=self.sessions_active,
        )

    def server_metrics(self) -> Metrics:
        """This process's metrics, with the other workers' added: the whole server's."""
        return self.metrics if self.peers is None else self.metrics.combined(self.peers.others())

    def sessions_active(self) -> int:
        """Sessions connected now, in this process and the other workers."""
        active = self.metrics.sessions_active
        if self.peers is not None:
            active += sum(other["sessions_active"] for other in self.peers.others())
        return active


def app_state(conn: HTTPConnection) -> AppState:
    """The voice app's state, from any request or WebSocket it serves (mounted or not)."""
    state: AppState = conn.app.state.voice
    return state
