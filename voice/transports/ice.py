"""ICE for the WebRTC transport: which servers to ask, and which local addresses to offer.

Two things aiortc does on its own that a server must not:

- With no ``iceServers`` it asks Google's public STUN server. :func:`rtc_configuration`
  always passes the configured list, empty by default, so no request leaves this machine
  unless an operator configured one.
- aioice gathers host candidates on every interface *except loopback*, and has no
  per-connection setting to change that. A browser on the same machine (and Chromium run
  with ``--allow-loopback-in-peer-connection`` in tests) needs a ``127.0.0.1`` candidate.
  :func:`gathering_on` chooses the addresses for the gathering done inside one
  ``setLocalDescription()``: aioice looks them up through ``aioice.ice.get_host_addresses``,
  which :func:`_install` wraps once per process with a lookup of a context variable. Every
  other caller of aioice (one that never uses :func:`gathering_on`) keeps aioice's own
  behaviour. ``tests/test_webrtc_ice.py`` fails if an aioice upgrade moves that hook.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from voice.config import IceServer, WebRtcSettings
from voice.errors import ConfigError


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """Where host candidates are gathered: exactly ``only``, or aioice's list plus ``extra``."""

    only: tuple[str, ...] | None = None
    extra: tuple[str, ...] = ()


AIOICE_DEFAULT = HostAddresses()

_addresses: contextvars.ContextVar[HostAddresses | None] = contextvars.ContextVar(
    "voice_ice_host_addresses", default=None
)
_aioice_host_addresses: Callable[[bool, bool], list[str]] | None = None


def host_addresses(settings: WebRtcSettings, bind_host: str) -> HostAddresses:
    """The candidate addresses for a server bound to ``bind_host`` (see ``WebRtcSettings``)."""
    if settings.host_addresses is not None:
        return HostAddresses(only=settings.host_addresses)
    if bind_host == "localhost":
        return HostAddresses(extra=("127.0.0.1",))
    try:
        bound = ipaddress.ip_address(bind_host)
    except ValueError:
        return AIOICE_DEFAULT  # a host name: resolved by the OS, not necessarily loopback
    return HostAddresses(extra=(str(bound),)) if bound.is_loopback else AIOICE_DEFAULT


@contextlib.contextmanager
def gathering_on(addresses: HostAddresses) -> Iterator[None]:
    """Gather host candidates on ``addresses`` for ICE gathering started inside the block.

    aiortc gathers inside ``setLocalDescription()``, in tasks that inherit this context.
    """
    _install()
    token = _addresses.set(addresses)
    try:
        yield
    finally:
        _addresses.reset(token)


def rtc_configuration(servers: tuple[IceServer, ...]) -> RTCConfiguration:
    """aiortc's configuration for ``servers``; an empty list, never aiortc's default."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=list(server.urls),
                username=server.username,
                credential=server.credential.get_secret_value() if server.credential else None,
            )
            for server in servers
        ]
    )


def _install() -> None:
    global _aioice_host_addresses
    if _aioice_host_addresses is not None:
        return
    original = getattr(aioice.ice, "get_host_addresses", None)
    if original is None:
        raise ConfigError(
            "this aioice version has no get_host_addresses(); the WebRTC transport cannot "
            "choose its ICE host addresses (pin aioice to a version that has it)"
        )
    _aioice_host_addresses = original

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _addresses.get()
        if chosen is None or chosen.only is None:
            found: list[str] = original(use_ipv4, use_ipv6)
            extra = chosen.extra if chosen is not None else ()
            return [a for a in _usable(extra, use_ipv4, use_ipv6) if a not in found] + found
        return _usable(chosen.only, use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses


def _usable(addresses: tuple[str, ...], use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [
        a for a in addresses if (use_ipv6 if ipaddress.ip_address(a).version == 6 else use_ipv4)
    ]
