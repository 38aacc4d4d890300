"""What the app's routes share: settings, the gateway and its health, metrics, live WebRTC
peers, and the admission path. One per app, at ``app.state.voice``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from voice.app.admission import Admission
from voice.app.drain import Drain
from voice.app.gateway_health import GatewayHealth, Probed
from voice.app.metrics import Metrics, SharedMetrics
from voice.config import Settings
from voice.core.limits import PerKeyRate
from voice.gateway.base import Gateway
from voice.pipeline.notices import load_notices
from voice.transports.webrtc import WebRtcPeers


@dataclass
class AppState:
    settings: Settings
    gateway: Gateway
    metrics: Metrics = field(default_factory=Metrics)
    webrtc: WebRtcPeers = field(default_factory=WebRtcPeers)
    """Live WebRTC sessions; their peer connections outlive the offer request."""
    shared: SharedMetrics | None = None
    """Every worker's figures, when this process is one of ``voice serve --workers``."""
    gateway_health: GatewayHealth = field(init=False)
    """Whether this process reaches its gateway (``/ready`` says so)."""
    admission: Admission = field(init=False)
    drain: Drain = field(init=False)
    """Stops the server without dropping a call (SIGTERM)."""
    offers: PerKeyRate = field(init=False)
    """WebRTC offers per client address per minute."""

    def __post_init__(self) -> None:
        self.offers = PerKeyRate(self.settings.limits.offers_per_min)
        probed = self.gateway if isinstance(self.gateway, Probed) else None
        self.gateway_health = GatewayHealth(probe=probed, settings=self.settings.gateway)
        self.admission = Admission(
            settings=self.settings,
            gateway=self.gateway,
            metrics=self.metrics,
            health=self.gateway_health,
            active=self.sessions_active,
            notices=load_notices(self.settings.pipeline),
        )
        self.drain = Drain(self.admission, timeout_s=self.settings.server.drain_timeout_s)

    def metrics_text(self) -> str:
        """The whole server's figures (every worker's), in Prometheus text format."""
        return (self.metrics if self.shared is None else self.shared).render()

    def sessions_active(self) -> int:
        """Sessions connected now, in this process and the other workers."""
        if self.shared is None:
            return self.metrics.sessions_active
        return self.shared.sessions_active()


def app_state(conn: HTTPConnection) -> AppState:
    """The voice app's state, from any request or WebSocket it serves (mounted or not)."""
    state: AppState = conn.app.state.voice
    return state
