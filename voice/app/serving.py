"""How ``voice serve`` runs the app on uvicorn, in one process or in each worker: the
configuration (:func:`server_config`), the garbage collector's tuning (:func:`tune_gc`) and
the server whose stop signal drains the calls first (:class:`DrainingServer`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from types import FrameType
from typing import Any

import uvicorn

from voice.app.drain import Drain
from voice.app.http_guard import ServerConfig
from voice.config import ServerSettings

log = logging.getLogger(__name__)

GRACEFUL_S = 10
"""After a stop signal, how long uvicorn lets open connections finish."""

GC_YOUNG_THRESHOLD = 10_000
"""Allocations (less deallocations) between collections of the youngest generation."""


def tune_gc() -> None:
    """Set the collector for many live sessions; call once the app is built."""
    # Everything built so far (modules, the app, settings) lives as long as the process:
    # frozen, the collector no longer rescans it. Unfrozen, every full collection walks it
    # all, a pause of ~25 ms on a small machine that every session's audio waits behind.
    gc.collect()
    gc.freeze()
    # Each call makes thousands of short-lived objects a second (messages, frames, futures);
    # with the default 700 the youngest generation is collected ~10 times a second at 100
    # calls, and objects a few milliseconds old survive into the older generations, whose
    # collections are the long pauses. Collected every GC_YOUNG_THRESHOLD allocations,
    # most have died first.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


WS_MESSAGE_HEADROOM = 4
"""uvicorn's WebSocket message limit, as a multiple of ``max_frame_bytes``. A frame a little
over the setting still reaches the transport, which answers with an ``error`` event and
1009; one far over it, or a compressed one that inflates far past it, is refused by
websockets itself (1009) before it is held in memory whole (uvicorn's own default: 16 MiB)."""


def server_config(
    app: Any, *, host: str, port: int, server: ServerSettings | None = None, **options: Any
) -> uvicorn.Config:
    """uvicorn's configuration for a voice server, one process or each worker, with the
    limits of ``server`` (defaults: the settings' own)."""
    server = server or ServerSettings()
    return ServerConfig(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=WS_MESSAGE_HEADROOM * server.max_frame_bytes,
        request_timeout_s=server.request_timeout_s,
        **{"timeout_graceful_shutdown": GRACEFUL_S} | options,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn's server, on which the first SIGTERM or SIGINT drains the app's calls
    (voice/app/drain.py) before the server stops, and a second stops it at once.

    It exits 0 when it stopped as asked: uvicorn's own handler records the signal and
    raises it again once stopped, so that the process would end by it (status -15)."""

    def __init__(self, config: uvicorn.Config, *, drain: Drain | None) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.should_exit:
            log.info("%s again: stopping now", signal.Signals(sig).name)
            self.should_exit = self.force_exit = True
        elif self._drain is None or self._loop is None:  # nothing to drain, or not started
            self.should_exit = True
        else:
            self._draining = True
            log.info("%s: draining (send it again to stop now)", signal.Signals(sig).name)
            self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        assert self._drain is not None
        self._drain.begin().add_done_callback(self._drained)

    def _drained(self, _task: asyncio.Task[None]) -> None:
        self.should_exit = True
