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

Each worker publishes its counters to a file in a directory the supervisor made
(:class:`WorkerPeers`), at most every :data:`PUBLISH_S` when they change, and reads the
others' when asked. Admission may so count a session that began in another worker in the
last quarter second late: a burst can overshoot ``max_sessions`` by that much, never
refuse early.

A worker that dies after it started serving is started again; one that dies before (it
never published its counters) ends the server, since the next would fail alike. A worker
whose supervisor is gone stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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

from voice.errors import ConfigError

log = logging.getLogger(__name__)

ENV_FD = "VOICE_WORKER_FD"
"""Set in a worker: the inherited listening socket's file descriptor."""
ENV_INDEX = "VOICE_WORKER_INDEX"
ENV_COUNT = "VOICE_WORKER_COUNT"
ENV_DIR = "VOICE_WORKER_DIR"
"""Set in a worker: where every worker publishes its counters."""
ENV_SUPERVISOR = "VOICE_WORKER_SUPERVISOR"
"""Set in a worker: the supervisor's process id."""

PUBLISH_S = 0.25
"""How often a worker looks whether its counters changed, and publishes them if so."""
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

    def _path(self, index: int) -> Path:
        return published_path(self.directory, index)

    def publish(self, snapshot: dict[str, Any]) -> None:
        """Replace this worker's published counters (atomically: a reader never sees half)."""
        path = self._path(self.index)
        part = path.with_suffix(".part")
        part.write_text(json.dumps(snapshot))
        part.replace(path)

    def others(self) -> list[dict[str, Any]]:
        """The counters the other workers last published (none yet for one just started)."""
        found = []
        for index in range(self.count):
            if index == self.index:
                continue
            try:
                found.append(json.loads(self._path(index).read_text()))
            except (FileNotFoundError, ValueError):
                continue  # not started yet, or the directory went with the supervisor
        return found

    async def run(self, snapshot: Any) -> None:
        """Publish ``snapshot()`` whenever it changes; stop the worker if the supervisor is
        gone (this process's parent is another). Runs until cancelled."""
        published = None
        while True:
            current = snapshot()
            if current != published:
                with contextlib.suppress(OSError):
                    self.publish(current)
                    published = current
            if self.supervisor is not None and os.getppid() != self.supervisor:
                log.error("worker %d: the supervisor is gone; stopping", self.index)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await asyncio.sleep(PUBLISH_S)


def published_path(directory: Path, index: int) -> Path:
    """Where worker ``index`` publishes its counters; there once it serves."""
    return directory / f"worker-{index}.json"


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
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start(index: int) -> _Worker:
        published_path(directory, index).unlink(missing_ok=True)  # a previous one's
        env = dict(os.environ)
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
                if not published_path(directory, worker.index).exists():
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
