"""`voice serve --workers N`: N server processes on one listening socket, as one server.

One event loop runs on one core. At 100 phone calls its busiest seconds hold that core at
95-99 %, and then every step of every reply waits behind the others (docs/telephony.md).
With workers, each process runs its own loop over its own sessions; a session lives and
ends in the process that accepted it, and nothing it does needs another process (a WebRTC
call is one offer request, then media on its own UDP ports).

The supervisor binds the socket, so a port in use fails at once and in one place, and
starts each worker as the same command line with the socket inherited. Workers that run
as one server need to share just two things:

- **admission**: ``max_sessions`` is for the whole server;
- **metrics**: ``/metrics`` and ``/ready``, whichever worker answers them, count them all.

Both go through prometheus_client's multiprocess mode: every worker writes its figures to
memory-mapped files in a directory the supervisor made (``PROMETHEUS_MULTIPROC_DIR``), as
it changes them, and reads every worker's back when asked
(:class:`~voice.app.metrics.SharedMetrics`). When a worker dies, the supervisor marks it
dead (``mark_process_dead``): its live sessions no longer count, what it served still does.

A worker that dies after it started serving is started again; one that dies before (it
never marked itself started) ends the server, since the next would fail alike. A worker
whose supervisor is gone stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from voice.app.metrics import MULTIPROC_DIR, SharedMetrics
from voice.errors import ConfigError

log = logging.getLogger(__name__)

ENV_FD = "VOICE_WORKER_FD"
"""Set in a worker: the inherited listening socket's file descriptor."""
ENV_INDEX = "VOICE_WORKER_INDEX"
ENV_COUNT = "VOICE_WORKER_COUNT"
ENV_DIR = "VOICE_WORKER_DIR"
"""Set in a worker: where every worker marks itself started and keeps its metrics."""
ENV_SUPERVISOR = "VOICE_WORKER_SUPERVISOR"
"""Set in a worker: the supervisor's process id."""

WATCH_S = 0.25
"""How often a worker looks whether its supervisor is still there."""
STOP_S = 15.0
"""How long the supervisor waits for workers to finish their sessions after a stop signal
(uvicorn's graceful shutdown, 10 s, plus time to close) before it kills them."""
POLL_S = 0.2


@dataclass(frozen=True)
class WorkerPeers:
    """This worker's place among its peers: its index, their number, the shared directory."""

    directory: Path
    index: int
    count: int
    supervisor: int | None = None
    """The supervisor's process id: when this process's parent is another, it is gone."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerPeers | None:
        """The worker's peers, or None in a process that is not a worker."""
        if ENV_DIR not in env:
            return None
        index, count, supervisor = (int(env[k]) for k in (ENV_INDEX, ENV_COUNT, ENV_SUPERVISOR))
        return cls(Path(env[ENV_DIR]), index, count, supervisor)

    @property
    def metrics(self) -> SharedMetrics:
        """Every worker's figures."""
        return SharedMetrics(self.directory)

    def started(self) -> None:
        """Tell the supervisor this worker serves: if it dies now, start it again."""
        started_path(self.directory, self.index).touch()

    async def watch(self) -> None:
        """Stop the worker if the supervisor is gone (this process's parent is another).
        Runs until cancelled."""
        # No event says a parent is gone: polled.
        while self.supervisor is None or os.getppid() == self.supervisor:  # noqa: ASYNC110
            await asyncio.sleep(WATCH_S)
        log.error("worker %d: the supervisor is gone; stopping", self.index)
        os.kill(os.getpid(), signal.SIGTERM)


def started_path(directory: Path, index: int) -> Path:
    """There once worker ``index`` serves."""
    return directory / f"worker-{index}.started"


def worker_fd(env: Mapping[str, str]) -> int | None:
    """The listening socket a worker inherited; None in a process that is not a worker."""
    return int(env[ENV_FD]) if ENV_FD in env else None


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]


def supervise(command: Sequence[str], *, host: str, port: int, count: int) -> int:
    """Bind ``host:port``, run ``count`` workers as ``command`` on it until SIGINT/SIGTERM.

    Returns the exit status: 0 after a stop signal, 1 when a worker failed to start.
    """
    try:
        sock = socket.create_server((host, port), backlog=4096)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    directory = Path(tempfile.mkdtemp(prefix="voice-workers-"))
    # prometheus_client reads it when it is first imported: the workers' metrics go there.
    metrics_env = {MULTIPROC_DIR: str(directory)}
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start(index: int) -> _Worker:
        started_path(directory, index).unlink(missing_ok=True)  # a previous one's
        env = dict(os.environ) | metrics_env
        env |= {ENV_FD: str(sock.fileno()), ENV_INDEX: str(index), ENV_COUNT: str(count)}
        env |= {ENV_DIR: str(directory), ENV_SUPERVISOR: str(os.getpid())}
        # In a process group of its own, a terminal's Ctrl-C reaches only the supervisor,
        # which stops each worker once, gracefully.
        process = subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),), process_group=0)
        return _Worker(index, process)

    workers = [start(index) for index in range(count)]
    log.info("supervisor %d: %d workers on %s:%d", os.getpid(), count, host, port)
    status = 0
    try:
        while not stopping:
            time.sleep(POLL_S)
            for worker in workers:
                code = worker.process.poll()
                if code is None or stopping:
                    continue
                # Its live sessions end with it; its counters and histograms stay counted.
                mark_process_dead(worker.process.pid, str(directory))
                if not started_path(directory, worker.index).exists():
                    log.error("worker %d exited with status %d while starting", worker.index, code)
                    status, stopping = 1, True
                    break
                log.warning(
                    "worker %d exited with status %d; starting it again", worker.index, code
                )
                workers[worker.index] = start(worker.index)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + STOP_S
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %.0f s; killed", worker.index, STOP_S)
                worker.process.kill()
                worker.process.wait()
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
