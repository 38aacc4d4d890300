"""How fast a barge-in stops a reply: queued audio cleared, every gateway request cancelled.

Runs N concurrent sessions in one process, each answering a turn through HttpGateway against
`voice gateway --simulate` in its own process on 127.0.0.1, and interrupts each reply at a random
point of its playback. Reports, from the moment the interruption is detected:

- ``clear_ms``: until queued reply audio is dropped (no further frame leaves);
- ``stop_ms``: until the reply's task group is cancelled and awaited, i.e. every in-flight
  chat and speech request closed;

and checks that no reply audio was sent after the interruption and nothing is left in flight.

    .venv/bin/python -m benchmarks.barge_in --sessions 20 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time

import httpx

from benchmarks.overhead import free_port, wait_healthy
from voice.config import Settings
from voice.core.events import ResponseStarted, SpeechStopped
from voice.gateway.http import HttpGateway
from voice.pipeline.session import Session
from voice.transports.playout import PacedPlayout

SIMULATED = ["--asr-ms=100", "--ttft-ms=200", "--ms-per-token=30", "--tts-ttfb-ms=100"]


async def one(gateway: HttpGateway, settings: Settings, seed: int) -> tuple[float, float, int]:
    sent: list[float] = []
    started: list[object] = []

    async def send(chunk: bytes) -> None:
        sent.append(time.monotonic())

    playout = PacedPlayout(out_rate=24_000, send=send, lead_ms=settings.pipeline.playout_lead_ms)

    def emit(event: object) -> None:
        if isinstance(event, ResponseStarted):
            started.append(event)

    session = Session(session_id=f"b{seed}", settings=settings, gateway=gateway)
    session.attach(playout, emit)
    pacer = asyncio.create_task(playout.run())
    try:
        await session.respond(SpeechStopped(at_ms=1500, speech_end_ms=1000, audio=bytes(32_000)))
        while not playout.played_ms() > 0:  # noqa: ASYNC110  # waits on the pacer's progress
            await asyncio.sleep(0.01)
        await asyncio.sleep(random.Random(seed).uniform(0.2, 2.0))
        detected = time.monotonic()
        interrupt = asyncio.create_task(session.interrupt())
        await asyncio.sleep(0)  # the synchronous part (clear) has run now
        cleared = time.monotonic()
        await interrupt
        stopped = time.monotonic()
        await asyncio.sleep(0.1)
        late = sum(1 for t in sent if t > cleared)
        return (cleared - detected) * 1000, (stopped - detected) * 1000, late
    finally:
        await session.aclose()
        pacer.cancel()
        await asyncio.gather(pacer, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "voice.cli", "gateway", "--simulate", f"--port={port}"]
    simulator = subprocess.Popen(command + SIMULATED)
    try:
        asyncio.run(measure(args, f"http://127.0.0.1:{port}"))
    finally:
        simulator.terminate()
        simulator.wait(timeout=15)


async def measure(args: argparse.Namespace, url: str) -> None:
    await wait_healthy(f"{url}/health")
    settings = Settings.model_validate({"gateway": {"url": url}})
    gateway = HttpGateway(settings.gateway)
    clears: list[float] = []
    stops: list[float] = []
    late = 0
    try:
        for r in range(args.rounds):
            results = await asyncio.gather(
                *(one(gateway, settings, r * 1000 + i) for i in range(args.sessions))
            )
            clears += [c for c, _, _ in results]
            stops += [s for _, s, _ in results]
            late += sum(n for _, _, n in results)
    finally:
        await gateway.aclose()
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{url}/v1/simulate/stats")).json()
    left = sum(stats["in_flight"].values())

    def q(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    print(f"{args.sessions} concurrent sessions × {args.rounds} rounds = {len(stops)} barge-ins")
    print(
        f"clear_ms  p50 {statistics.median(clears):6.2f}  p95 {q(clears, 95):6.2f}  "
        f"max {max(clears):6.2f}"
    )
    print(
        f"stop_ms   p50 {statistics.median(stops):6.2f}  p95 {q(stops, 95):6.2f}  "
        f"max {max(stops):6.2f}"
    )
    print(f"audio frames sent after the interruption: {late}; gateway requests left open: {left}")


if __name__ == "__main__":
    main()
