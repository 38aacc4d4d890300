"""`voice serve --workers N` as a user runs it: a supervisor process and N workers on one
port, against the simulated gateway over real HTTP, driven over real sockets."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.processes import ROOT, gone, until, voice_serve, workers_of
from voice.errors import ConfigError


async def sessions_active(client):
    text = (await client.get("/metrics")).text
    line = next(line for line in text.splitlines() if line.startswith("voice_sessions_active "))
    return float(line.split()[1])


async def open_session(url):
    ws = await connect(url.replace("http", "ws", 1) + "/v1/session")
    while json.loads(await ws.recv())["type"] != "session.created":
        pass
    return ws


async def test_workers_count_their_sessions_as_one_server_and_share_the_limit():
    async with voice_serve("--max-sessions", "4") as (process, url):
        sessions = [await open_session(url) for _ in range(4)]
        try:
            # A new connection per request, so that each worker gets to answer.
            fresh = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, limits=fresh) as client:
                # Whichever worker answers, it counts the other's sessions too.
                async def all_counted():
                    counts = [await sessions_active(client) for _ in range(6)]
                    return all(c == 4 for c in counts)

                deadline = time.monotonic() + 5
                while not await all_counted():
                    assert time.monotonic() < deadline, "the workers never agreed"
                    await asyncio.sleep(0.1)
                assert (await client.get("/ready")).status_code == 503
                # The limit is the server's: a fifth session is refused by either worker.
                for _ in range(3):
                    async with connect(url.replace("http", "ws", 1) + "/v1/session") as extra:
                        message = json.loads(await extra.recv())
                        assert message.get("code") == "server_busy", message
                        await extra.wait_closed()
                        assert extra.close_code == 1013
                # Whichever worker refused them, either counts them at once.
                for _ in range(4):
                    metrics = (await client.get("/metrics")).text
                    assert "voice_sessions_rejected_total 3.0" in metrics, metrics
                    assert "voice_sessions_total 4.0" in metrics
        finally:
            for ws in sessions:
                await ws.close()
        async with httpx.AsyncClient(base_url=url) as client:
            deadline = time.monotonic() + 5
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "the sessions never ended"
                await asyncio.sleep(0.1)


async def test_sigterm_stops_every_worker_and_a_dead_worker_is_replaced():
    async with voice_serve() as (process, url):
        first, second = workers_of(process.pid)
        os.kill(first, signal.SIGKILL)
        await until(lambda: first not in workers_of(process.pid)
                    and len(workers_of(process.pid)) == 2)  # fmt: skip
        replaced = workers_of(process.pid)
        assert second in replaced
        await until(lambda: process.log().count("Application startup complete") == 3)
        fresh = httpx.Limits(max_keepalive_connections=0)  # so that either worker answers
        async with httpx.AsyncClient(base_url=url, limits=fresh) as client:
            for _ in range(6):
                assert (await client.get("/health")).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert all(gone(pid) for pid in replaced)
        assert f"worker {first} ended (status -9)" in process.log()


async def test_workers_stop_when_the_supervisor_is_killed():
    async with voice_serve() as (process, url):
        workers = workers_of(process.pid)
        process.kill()
        process.wait()
        await until(lambda: all(gone(pid) for pid in workers), timeout_s=10)


def test_a_port_in_use_is_a_clear_error():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "voice.cli", "serve", "--port", str(port)]
        command += ["--gateway-url", "http://127.0.0.1:9/v1", "--workers", "2"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def broken_app():
    raise ConfigError("this app cannot start")


def test_a_worker_that_cannot_start_ends_the_server():
    # Every worker runs the same app: when one fails before it serves, so would the next.
    script = (
        "import logging, sys\n"
        "from voice.app.workers import serve_workers\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "sys.exit(serve_workers('tests.test_workers:broken_app', host='127.0.0.1', port=0,\n"
        "                       count=2))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "cannot start: this app cannot start" in done.stderr
    assert "ended (status" not in done.stderr  # none was started again


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_compressed_message_that_inflates_far_past_the_cap_is_refused_by_the_protocol(
    workers,
):
    # 2 MiB of text compresses to a few KiB: the server's WebSocket limit (4 x the 64 KiB
    # frame cap) refuses it while inflating, before the app holds or parses it.
    async with voice_serve(workers=workers) as (_, url):
        ws_url = url.replace("http", "ws", 1) + "/v1/session"
        async with connect(ws_url, compression="deflate") as ws:
            await ws.recv()  # session.created
            await ws.send("a" * (2 * 1024 * 1024))
            events = []
            with suppress(ConnectionClosed):
                async with asyncio.timeout(10):
                    async for message in ws:
                        events.append(message)
            assert ws.close_code == 1009
    assert not any("frame_too_large" in e for e in events)
