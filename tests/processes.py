"""``voice serve`` as a user runs it, in its own process, for tests of what only a real
process shows (signals, workers, exit statuses)."""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

import httpx

from tests.servers import serve_app
from tests.stack import SIMULATION
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workers_of(pid):
    """The supervisor's live workers (among its children, multiprocessing's resource
    tracker is not one)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(c) for c in children if b"spawn_main" in cmdline(c))


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: it only waits for its parent to collect its status.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


async def until(predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def voice_serve(*flags, workers=2, simulation=SIMULATION, env=None, gateway_url=None):
    """``voice serve --workers N`` in its own process, against the simulated gateway served
    here over HTTP, or ``gateway_url``; yields (process, base URL). ``env``: more environment
    variables."""
    async with AsyncExitStack() as stack:
        if gateway_url is None:
            gateway = create_gateway_app(SimulatedGateway(simulation))
            gateway_url = await stack.enter_async_context(serve_app(gateway))
        port = free_port()
        command = [sys.executable, "-m", "voice.cli", "serve", "--port", str(port)]
        command += ["--gateway-url", gateway_url, "--workers", str(workers), *flags]
        log = tempfile.TemporaryFile("w+")  # a pipe left unread could fill and stall it
        environment = os.environ | (env or {})
        process = subprocess.Popen(command, cwd=ROOT, stderr=log, text=True, env=environment)  # noqa: ASYNC220  # returns at once
        process.log = lambda: (log.seek(0), log.read())[1]
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                deadline = time.monotonic() + 30
                while True:
                    with suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    assert process.poll() is None, process.log()
                    assert time.monotonic() < deadline, "voice serve did not come up"
                    await asyncio.sleep(0.1)
            # Each worker says so once it serves.
            await until(lambda: process.log().count("Application startup complete") == workers)
            yield process, url
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
