"""``create_app``: the ASGI app `voice serve` runs, and that other services mount.

Mounted inside a Starlette or FastAPI service, the host app runs this app's lifespan (which
probes, warms and closes its gateway, and closes live WebRTC calls) by taking it as its own::

    voice_app = create_app()
    app = Starlette(routes=[Mount("/voice", app=voice_app)],
                    lifespan=voice_app.router.lifespan_context)

Every route works under the prefix, the call page included (its URLs are relative).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Final

from starlette.applications import Starlette

from voice.app.health_routes import health_routes
from voice.app.metrics import SharedMetrics
from voice.app.page_routes import page_routes
from voice.app.session_routes import session_routes
from voice.app.state import AppState
from voice.app.telephony_routes import telephony_routes
from voice.app.webrtc_routes import webrtc_routes
from voice.config import Settings
from voice.errors import ConfigError
from voice.gateway.base import Gateway

LOCAL_HANGOVER_MIN_MS: Final = 600
"""The turn floor (``VOICE_TURN_HANGOVER_MIN_MS``) on the embedded engines."""
LOCAL_SPECULATION: Final = "llm"
LOCAL_PAUSE_MS: Final = 150
"""Speculation on the embedded engines: the chat only, from a pause of 150 ms, as measured
with them (docs/bench.md). Not the gateway default's speech from 60 ms: the transcriptions
and speech it throws away would run on the same two cores as every call's real work, and
the embedded reply is not ready sooner than the floor above anyway."""


def build_gateway(settings: Settings) -> Gateway:
    """The gateway the settings name. Only here and in the CLI is the choice made.

    With no URL, the embedded local engines (the ``local`` extra): the offline default.
    Without that extra this raises a :class:`~voice.errors.ConfigError` naming it; so it
    does for a reference-audio voice, which the embedded engines cannot speak.
    """
    if settings.gateway.url is None:
        from voice.gateway.local import LocalGateway

        if settings.gateway.tts_ref_audio is not None or settings.gateway.tts_ref_from_callers:
            raise ConfigError(
                "reference-audio voices (VOICE_TTS_REF_AUDIO, VOICE_TTS_REF_FROM_CALLERS) need "
                "a gateway that clones voices (VOICE_GATEWAY_URL); the embedded engines do not"
            )
        return LocalGateway.from_settings(settings.gateway)
    from voice.gateway.http import HttpGateway

    return HttpGateway(settings.gateway)


def for_embedded_engines(settings: Settings) -> Settings:
    """``settings`` with the turn taking the embedded engines want, where the operator did
    not choose: :data:`LOCAL_SPECULATION` from :data:`LOCAL_PAUSE_MS`, and a floor of
    :data:`LOCAL_HANGOVER_MIN_MS`.

    Whisper ends every upload with a full stop, so a caller who pauses after "I booked a table
    for Friday evening," reads finished and was cut off at the 250 ms floor. The embedded
    reply's first sentence is ready over a second after the turn ends, so waiting
    :data:`LOCAL_HANGOVER_MIN_MS` before committing costs it nothing (measured: median
    voice-to-voice 1496 ms at 250, 1419 ms at 600, and the cut-off gone).
    """
    turn = settings.turn
    chosen = turn.model_fields_set
    update: dict[str, object] = {}
    if "speculation" not in chosen:
        update["speculation"] = LOCAL_SPECULATION
    floor = turn.hangover_min_ms
    if "hangover_min_ms" not in chosen:
        floor = max(floor, min(LOCAL_HANGOVER_MIN_MS, turn.hangover_max_ms))
        if floor != turn.hangover_min_ms:
            update["hangover_min_ms"] = floor
    if "pause_ms" not in chosen and LOCAL_PAUSE_MS < floor:
        update["pause_ms"] = LOCAL_PAUSE_MS
    if not update:
        return settings
    return settings.model_copy(update={"turn": turn.model_copy(update=update)})


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    shared: SharedMetrics | None = None,
) -> Starlette:
    """The app. ``settings`` default to the ``VOICE_*`` environment, as ``voice serve`` reads
    it. With no ``gateway``, the settings' is built, warmed at startup and closed at shutdown.

    ``shared``: this process is one of the workers of ``voice serve --workers``, and these
    are every worker's metrics (for ``/metrics``, ``/ready`` and admission).
    """
    if settings is None:
        settings = Settings.from_env(os.environ)
    if gateway is None and settings.gateway.url is None:
        settings = for_embedded_engines(settings)
    owned = gateway is None
    state = AppState(settings=settings, gateway=gateway or build_gateway(settings), shared=shared)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        health = state.gateway_health
        try:
            # An HTTP gateway is first asked for its models (voice/app/gateway_health.py); an
            # answer leaves a pooled connection, as warm() would. Unreachable, it is not
            # warmed here: the first call will try.
            await health.start()
            if health.reachable:
                await state.gateway.warm()
            yield
        finally:
            await health.aclose()
            await state.webrtc.aclose()
            if owned:
                await state.gateway.aclose()

    app = Starlette(
        routes=[
            *session_routes(),
            *telephony_routes(settings),
            *webrtc_routes(),
            *health_routes(),
            *page_routes(),
        ],
        lifespan=lifespan,
    )
    app.state.voice = state
    return app
