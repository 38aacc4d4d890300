"""`voice`: a realtime voice pipeline service for OpenAI-compatible inference gateways.

The public API, for running the server inside another service or driving a gateway from code::

    from voice import create_app, Settings, HttpGateway

    app = create_app()                  # the VOICE_* environment, as `voice serve` reads it
    app = create_app(Settings(...))     # explicit settings
    app = create_app(settings, gateway=HttpGateway(settings.gateway))  # a gateway you own

Mounting under a prefix (the page and every route follow it)::

    voice_app = create_app()
    host = Starlette(routes=[Mount("/voice", app=voice_app)],
                     lifespan=voice_app.router.lifespan_context)

Names load on first use, so ``import voice`` costs nothing (the CLI starts with it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voice.app import create_app
    from voice.config import Settings
    from voice.core.record import GatewayCall
    from voice.errors import (
        AudioFormatError,
        CallRefused,
        ConfigError,
        GatewayError,
        ProtocolError,
        ServerBusy,
        VoiceError,
    )
    from voice.gateway.base import Gateway, ReferenceVoice
    from voice.gateway.http import HttpGateway
    from voice.gateway.local import LocalGateway
    from voice.gateway.simulated import SimulatedGateway, SimulationSettings
    from voice.gateway.x402 import PaymentChallenge

_WHERE = {
    "create_app": "voice.app",
    "Settings": "voice.config",
    "Gateway": "voice.gateway.base",
    "ReferenceVoice": "voice.gateway.base",
    "GatewayCall": "voice.core.record",
    "PaymentChallenge": "voice.gateway.x402",
    "HttpGateway": "voice.gateway.http",
    "LocalGateway": "voice.gateway.local",
    "SimulatedGateway": "voice.gateway.simulated",
    "SimulationSettings": "voice.gateway.simulated",
    "VoiceError": "voice.errors",
    "ConfigError": "voice.errors",
    "AudioFormatError": "voice.errors",
    "ProtocolError": "voice.errors",
    "CallRefused": "voice.errors",
    "ServerBusy": "voice.errors",
    "GatewayError": "voice.errors",
}

__all__ = [
    "AudioFormatError",
    "CallRefused",
    "ConfigError",
    "Gateway",
    "GatewayCall",
    "GatewayError",
    "HttpGateway",
    "LocalGateway",
    "PaymentChallenge",
    "ProtocolError",
    "ReferenceVoice",
    "ServerBusy",
    "Settings",
    "SimulatedGateway",
    "SimulationSettings",
    "VoiceError",
    "create_app",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'voice' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
