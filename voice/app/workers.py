"""`voice serve --workers N`: N server processes on one listening socket, as one server.

One event loop runs on one core. At 100 phone calls its busiest seconds hold that core at
95-99 %, and then every step of every reply waits behind the others (docs/telephony.md).
With workers, each process runs its own loop over its own sessions; a session lives and
ends in the process that accepted it, and nothing it does needs another process (a WebRTC
call is one offer request, then media on its own UDP ports).

uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``) runs them: it starts each
worker as a fresh interpreter with the listening socket, asks every half second whether
each still answers, starts a dead one again, stops the server when one exits because it
could not start (status 3, uvicorn's ``STARTUP_FAILURE``: the next would fail alike), and
stops them on SIGTERM or SIGINT. :func:`serve_workers` adds what a voice server needs around
it:

- a stop signal drains the calls first (voice/app/drain.py): the supervisor sends every
  worker :data:`DRAIN_SIGNAL`, each refuses new calls while its own go on, and once the
  whole server's live sessions reach 0 the supervisor stops the workers; a second stop
  signal stops them at once (workers ignore the terminal's Ctrl-C, which the supervisor
  gets too);
- it binds the socket itself, so a port in use is a clear error, at once;
- workers share their metrics through prometheus_client's multiprocess mode (in a directory
  made here, removed at the end; see :mod:`voice.app.metrics`), and a dead worker is marked
  dead there, so its live sessions stop counting against ``max_sessions``;
- workers that do not stop within :data:`STOP_S` of the stop signal are killed;
- the exit status is 1 when a worker could not start.

In each worker, :func:`worker_app` builds the app from the factory named in
:data:`ENV_APP` (from the environment: flags reach workers as ``VOICE_*`` variables), turns
any error there into status 3 rather than a traceback uvicorn would answer by starting it
again forever, tunes the garbage collector as :func:`tune_gc` says, drains on
:data:`DRAIN_SIGNAL`, and stops the worker when its supervisor is gone.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import STARTUP_FAILURE
from uvicorn.importer import import_from_string
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from voice.app.drain import CLOSE_S, LAST_REPLY_S, Drain
from voice.app.metrics import MULTIPROC_DIR, SharedMetrics
from voice.app.serving import server_config, tune_gc
from voice.config import ServerSettings
from voice.errors import ConfigError, VoiceError

log = logging.getLogger(__name__)

ENV_APP = "VOICE_WORKER_APP"
"""Set in a worker: the app factory it serves, as ``module:function``."""
STOP_S = 15.0
"""How long the supervisor waits for workers to stop once their calls have ended (uvicorn's
graceful shutdown, ``GRACEFUL_S``, plus time to close) before it kills them."""
DRAIN_TICK_S = 0.4
"""The supervisor looks at the workers' live sessions this long after the stop signal at
the earliest (then each half second)."""
DRAIN_SIGNAL = signal.SIGUSR1
"""The supervisor's word to its workers: drain (stop taking calls, let the calls go on)."""


def serve_workers(
    factory: str,
    *,
    host: str,
    port: int,
    count: int,
    log_level: str = "info",
    log_config: dict[str, Any] | None = None,
    server: ServerSettings | None = None,
) -> int:
    """Bind ``host:port`` and serve the app ``factory`` (``module:function``, called in each
    worker) in ``count`` workers until SIGINT/SIGTERM.

    ``log_config`` (``logging.config.dictConfig``) is applied in every process, workers
    included; by default, uvicorn's. Returns the exit status: 0 after a stop signal, 1
    when a worker failed to start.
    """
    try:
        sock = socket.create_server((host, port), backlog=4096)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    directory = Path(tempfile.mkdtemp(prefix="voice-workers-"))
    # Workers start with this process's environment; prometheus_client reads its variable
    # when it is first imported, so each worker's metrics live in the directory from the start.
    saved = {name: os.environ.get(name) for name in (ENV_APP, MULTIPROC_DIR)}
    os.environ |= {ENV_APP: factory, MULTIPROC_DIR: str(directory)}
    config = server_config(
        f"{__name__}:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=count,
        log_level=log_level,
        server=server,
        **({} if log_config is None else {"log_config": log_config}),
    )
    drain_s = (server or ServerSettings()).drain_timeout_s
    supervisor = _Supervisor(config, [sock], metrics_dir=directory, drain_s=drain_s)
    # Ignored until a worker is ready to drain (a disposition workers inherit): the default
    # would kill a worker still starting.
    previous = signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)
    try:
        supervisor.run()
    finally:
        signal.signal(DRAIN_SIGNAL, previous)
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return 1 if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes) else 0


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, which drains the workers' calls on the first stop signal, marks
    every worker it let go (dead, replaced on SIGHUP, dropped on SIGTTOU) dead for the
    shared metrics, and does not wait for ever on a worker that does not stop."""

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        *,
        metrics_dir: Path,
        drain_s: float,
    ) -> None:
        super().__init__(config, sockets)
        self._metrics_dir = metrics_dir
        self._known: list[Process] = []
        # Each worker ends its calls by drain_s after the signal, then lets their last
        # replies finish; past that, the supervisor stops waiting for them.
        self._drain_s = drain_s + LAST_REPLY_S + CLOSE_S
        self._drain_since: float | None = None

    def handle_int(self) -> None:
        self._stop_asked("SIGINT")

    def handle_term(self) -> None:
        self._stop_asked("SIGTERM")

    def _stop_asked(self, name: str) -> None:
        if self._drain_since is not None:
            log.info("%s again: stopping the workers now", name)
            self.should_exit.set()
            return
        log.info("%s: draining the workers' calls (send it again to stop now)", name)
        self._drain_since = time.monotonic()
        self._tell_workers(DRAIN_SIGNAL)

    def _tell_workers(self, sig: int) -> None:
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    def keep_subprocess_alive(self) -> None:
        if self._drain_since is None:
            super().keep_subprocess_alive()
            self._forget_gone()
            return
        if time.monotonic() - self._drain_since < DRAIN_TICK_S:
            return
        # Draining: no worker is started again (one that died is marked dead, so its live
        # sessions stop counting); one still starting when the signal came is told again;
        # stop once every call has ended (read a tick after the signal, when each refuses).
        self.processes = [p for p in self.processes if p.process.exitcode is None]
        self._forget_gone()
        self._tell_workers(DRAIN_SIGNAL)
        active = SharedMetrics(self._metrics_dir).sessions_active()
        if active == 0 or time.monotonic() - self._drain_since > self._drain_s:
            log.info("drained (%d sessions left): stopping the workers", active)
            self.should_exit.set()

    def handle_signals(self) -> None:
        super().handle_signals()
        self._forget_gone()

    def _forget_gone(self) -> None:
        for process in self._known:
            if process in self.processes or process.pid is None:
                continue
            # Its live sessions ended with it; its counters and histograms stay counted.
            mark_process_dead(process.pid, str(self._metrics_dir))
            log.warning("worker %d ended (status %s)", process.pid, process.exitcode)
        self._known = list(self.processes)

    def join_all(self) -> None:
        deadline = time.monotonic() + STOP_S
        for process in self.processes:
            process.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("worker %s did not stop in %.0f s; killed", process.pid, STOP_S)
                process.kill()
                process.join()


def worker_app() -> Any:
    """The app a worker serves, built by the factory :data:`ENV_APP` names; uvicorn calls
    this in each worker."""
    _stop_with_the_supervisor()
    try:
        app = import_from_string(os.environ[ENV_APP])()
    except VoiceError as exc:
        log.error("worker %d cannot start: %s", os.getpid(), exc.message)
        sys.exit(STARTUP_FAILURE)
    except Exception:  # whatever it is, the next worker would meet it too
        log.exception("worker %d cannot start", os.getpid())
        sys.exit(STARTUP_FAILURE)
    tune_gc()
    if (state := getattr(getattr(app, "state", None), "voice", None)) is not None:
        _drain_on_signals(state.drain)
    return app


def _drain_on_signals(drain: Drain) -> None:
    """In a worker (uvicorn's server is serving it, its stop is the SIGTERM handler now):

    - :data:`DRAIN_SIGNAL`, the supervisor's: drain, and wait to be stopped;
    - SIGTERM while not draining (sent to every process of the service, as ``systemctl
      stop`` does, or by the supervisor's SIGHUP to replace this worker): drain, then stop;
    - SIGTERM while draining (the supervisor's stop, once the calls have ended or on a
      second signal): stop now;
    - SIGINT is ignored: the terminal's Ctrl-C reaches the supervisor too, which drains.
    """
    stop = signal.getsignal(signal.SIGTERM)
    if not callable(stop):  # not under uvicorn's signal handling: leave it as it is
        return

    def stop_now(*_: object) -> None:
        stop(signal.SIGTERM, None)

    def on_term() -> None:
        if drain.draining:
            stop_now()
        else:
            drain.begin().add_done_callback(stop_now)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(DRAIN_SIGNAL, drain.begin)
    loop.add_signal_handler(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_with_the_supervisor() -> None:
    """Stop this worker, gracefully, when the supervisor that started it is gone (killed:
    nobody else would stop it, nor remove the shared metrics)."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None:
        return

    def watch() -> None:
        supervisor.join()  # returns when that process has exited
        log.error("worker %d: the supervisor is gone; stopping", os.getpid())
        # It can no longer remove the shared metrics' directory; the server is gone with it.
        if directory := os.environ.get(MULTIPROC_DIR):
            shutil.rmtree(directory, ignore_errors=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
