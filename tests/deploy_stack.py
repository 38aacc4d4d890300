"""The deployment kit on loopback: `voice serve` instances as real processes, and HAProxy run
from the shipped ``deploy/haproxy/haproxy.cfg`` in front of them (Debian's ``haproxy``;
``scripts/install-deploy-tools`` installs it).

    async with serve_app(create_gateway_app(SimulatedGateway(SIMULATION))) as gateway_url:
        async with voice_instance(gateway_url) as a, voice_instance(gateway_url) as b:
            async with haproxy([a.address, b.address]) as lb:
                await lb.until_up(2)
                ... lb.ws_url + "/v1/session" ...
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
START_TIMEOUT_S = 60.0
"""Longest a process may take to start answering (the machine may be busy)."""
STOP_TIMEOUT_S = 20.0


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    assert found, "haproxy is not installed: run `sudo scripts/install-deploy-tools`"
    return found


async def until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0
) -> None:
    """Poll ``predicate`` every 50 ms until it is true; fail naming ``what`` after the bound."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Process:
    """A child process whose stderr goes to a file (a pipe left unread could stall it)."""

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        self._log = tempfile.TemporaryFile("w+")
        self._final_log = ""
        self.popen = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=None if env is None else {**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        """Everything it wrote so far (after :meth:`stop`, all it wrote)."""
        if self._log.closed:
            return self._final_log
        self._log.seek(0)
        return self._log.read()

    def running(self) -> bool:
        return self.popen.poll() is None

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` (if it still runs) and wait for the exit status, killing it past the
        bound."""
        if self.running():
            self.popen.send_signal(sig)
        try:
            await asyncio.to_thread(self.popen.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait, timeout_s)
        self._final_log = self.log()
        self._log.close()
        return int(self.popen.returncode)


@dataclass
class Instance:
    """One `voice serve` process on 127.0.0.1."""

    process: Process
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def metric(self, name: str) -> float:
        """One unlabelled sample of the instance's own ``/metrics``."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            text = (await client.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} is not in /metrics")


@asynccontextmanager
async def voice_instance(
    gateway_url: str, *flags: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Instance]:
    """``voice serve`` on a free loopback port, using the gateway at ``gateway_url``, until
    the block exits (then SIGTERM, and a kill past the bound). Yields once ``/health``
    answers."""
    port = free_port()
    command = [sys.executable, "-m", "voice.cli", "serve", "--port", str(port)]
    command += ["--gateway-url", gateway_url, *flags]
    process = Process(command, env=env)
    instance = Instance(process, port)
    try:
        async with httpx.AsyncClient(base_url=instance.url, timeout=5) as client:

            async def healthy() -> bool:
                assert process.running(), f"voice serve exited:\n{process.log()}"
                with suppress(httpx.TransportError):
                    return (await client.get("/health")).status_code == 200
                return False

            await until(healthy, "voice serve to answer /health", START_TIMEOUT_S)
        yield instance
    finally:
        await process.stop()


@dataclass
class Balancer:
    """HAProxy run from the shipped config; ``url`` is where callers connect."""

    process: Process
    port: int
    stats_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def servers(self) -> dict[str, dict[str, str]]:
        """The ``voice`` backend's servers as HAProxy's stats CSV reports them, by name
        (``voice1``, ...): ``status`` (UP, DOWN, ...), ``check_status`` (L7OK, L7STS, ...),
        ``stot`` (sessions sent there), ``wredis`` (requests redispatched from it), ..."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(url)).text
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "voice" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def until_status(self, statuses: Mapping[str, str], timeout_s: float = 20.0) -> None:
        """Wait until each named server's status is the one given (``UP`` after a passed
        check, ``DOWN``)."""

        async def reached() -> bool:
            assert self.process.running(), f"haproxy exited:\n{self.process.log()}"
            servers = await self.servers()
            for name, status in statuses.items():
                row = servers[name]
                if row["status"] != status:
                    return False
                if status == "UP" and row["check_status"] != "L7OK":
                    return False  # up only by default, before its first check
            return True

        await until(reached, f"haproxy to see {dict(statuses)}", timeout_s)

    async def until_idle(self, timeout_s: float = 20.0) -> None:
        """Wait until HAProxy holds no connection to any instance (a closed call's may linger
        a moment, and least-connections counts it)."""

        async def idle() -> bool:
            return all(row["scur"] == "0" for row in (await self.servers()).values())

        await until(idle, "haproxy to hold no connection to an instance", timeout_s)


@asynccontextmanager
async def haproxy(
    instances: Sequence[str], *, env: Mapping[str, str] | None = None
) -> AsyncIterator[Balancer]:
    """HAProxy from ``deploy/haproxy/haproxy.cfg`` on free loopback ports, in front of
    ``instances`` (``host:port`` each, in order ``voice1``, ``voice2``, ...); ``env`` adds to
    or overrides its ``LB_*`` variables. Yields once its stats page answers."""
    port, stats_port = free_port(), free_port()
    variables = {
        "LB_BIND": f"127.0.0.1:{port}",
        "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
        **{f"LB_INSTANCE_{n}": address for n, address in enumerate(instances, 1)},
        **(env or {}),
    }
    process = Process([haproxy_binary(), "-f", str(HAPROXY_CFG)], env=variables)
    balancer = Balancer(process, port, stats_port)
    try:

        async def answering() -> bool:
            assert process.running(), f"haproxy exited:\n{process.log()}"
            with suppress(httpx.TransportError):
                await balancer.servers()
                return True
            return False

        await until(answering, "haproxy's stats page", START_TIMEOUT_S)
        yield balancer
    finally:
        await process.stop()
