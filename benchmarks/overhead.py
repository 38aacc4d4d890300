"""The pipeline's own latency and CPU cost, against the simulated gateway with fixed latencies.

Starts `voice gateway --simulate` and `voice serve` as separate processes on 127.0.0.1,
then plays sample recordings through N concurrent native WebSocket sessions in real time
(several turns each) and reports, per concurrency level:

- ``overhead_ms`` p50/p95/max: first reply audio sent − (vad + asr + first sentence + TTS
  first byte), from each turn's ``response.done`` timings (ARCHITECTURE.md);
- voice-to-voice p50/p95 as the caller hears it (first non-silent reply audio received −
  end of the caller's speech);
- the server process's CPU seconds per session-minute (from /proc, user + system).

    .venv/bin/python -m benchmarks.overhead                 # 1 and 20 sessions
    .venv/bin/python -m benchmarks.overhead --sessions 1,5,20,50 --turns 3

Traffic goes only to 127.0.0.1 and every run ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav
from voice.bench.native import call

ROOT = Path(__file__).resolve().parent.parent
SIMULATED = {  # fixed gateway latencies, ms (and TTS real-time factor)
    "asr-ms": 100,
    "ttft-ms": 200,
    "ms-per-token": 15,
    "tts-ttfb-ms": 100,
    "tts-rtf": 0.2,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def wait_healthy(url: str, timeout_s: float = 20.0) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not come up")
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def simulated_stack(env: dict[str, str] | None = None) -> Iterator[tuple[int, int, int]]:
    """`voice gateway --simulate` at :data:`SIMULATED` and `voice serve` using it, each its
    own process on 127.0.0.1 (``env`` adds to the server's environment); yields the
    gateway's port, the server's port and the server's pid, and stops both on exit."""
    gw_port, port = free_port(), free_port()
    python = sys.executable
    flags = [f"--{k}={v}" for k, v in SIMULATED.items()]
    gateway = subprocess.Popen(
        [python, "-m", "voice.cli", "gateway", "--simulate", "--port", str(gw_port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = subprocess.Popen(
        [python, "-m", "voice.cli", "serve", "--port", str(port), "--max-sessions", "1000"],
        env={**os.environ, "VOICE_GATEWAY_URL": f"http://127.0.0.1:{gw_port}/v1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield gw_port, port, server.pid
    finally:
        for proc in (server, gateway):
            proc.terminate()
        for proc in (server, gateway):
            proc.wait(timeout=15)


def conversation(recordings: list[PcmFrame], start: int, turns: int) -> PcmFrame:
    """``turns`` recordings back to back; each has ~2 s of trailing silence for the reply."""
    pcm = b"".join(recordings[(start + i) % len(recordings)].pcm for i in range(turns))
    return PcmFrame(pcm, recordings[0].sample_rate)


async def run_level(url: str, recordings: list[PcmFrame], sessions: int, turns: int, pid: int):
    cpu_before = cpu_seconds(pid)
    began = time.monotonic()

    async def one(i: int):
        # Stagger starts over 1 s so turns do not all end on the same frame.
        await asyncio.sleep(i / max(sessions, 1))
        talk = conversation(recordings, i, turns)
        return await call(url, talk, responses=turns, timeout_s=talk.duration_ms / 1000 + 30)

    results = await asyncio.gather(*(one(i) for i in range(sessions)))
    wall = time.monotonic() - began
    cpu = cpu_seconds(pid) - cpu_before
    overhead, v2v, first_audio, errors = [], [], [], 0
    session_seconds = 0.0
    for result in results:
        errors += len(result.of_type("error"))
        for done in result.of_type("response.done"):
            t = done["timings"]
            if t["overhead_ms"] is not None:
                overhead.append(t["overhead_ms"])
                first_audio.append(t["first_audio_ms"])
        if result.voice_to_voice_ms is not None:
            v2v.append(result.voice_to_voice_ms)
        session_seconds += wall
    return {
        "sessions": sessions,
        "turns": len(overhead),
        "errors": errors,
        "overhead_p50": statistics.median(overhead) if overhead else float("nan"),
        "overhead_p95": percentile(overhead, 95),
        "overhead_max": max(overhead, default=float("nan")),
        "first_audio_p50": statistics.median(first_audio) if first_audio else float("nan"),
        "v2v_p50": statistics.median(v2v) if v2v else float("nan"),
        "v2v_p95": percentile(v2v, 95),
        "cpu_s_per_session_min": cpu / (sessions * wall / 60),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,20", help="comma-separated levels")
    parser.add_argument("--turns", type=int, default=3, help="turns per session")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    manifest = json.loads((ROOT / "samples/manifest.json").read_text())
    questions = [s for s in manifest["samples"] if s.get("role", "question") == "question"]
    recordings = [load_wav(ROOT / "samples" / s["file"]) for s in questions]

    with simulated_stack() as (gw_port, port, server_pid):
        asyncio.run(measure(args, recordings, gw_port, port, server_pid))


async def measure(
    args: argparse.Namespace, recordings: list[PcmFrame], gw_port: int, port: int, pid: int
) -> None:
    await wait_healthy(f"http://127.0.0.1:{gw_port}/health")
    await wait_healthy(f"http://127.0.0.1:{port}/health")
    url = f"ws://127.0.0.1:{port}/v1/session"
    print(f"simulated gateway: {SIMULATED}")
    print(
        f"{'sessions':>8} {'turns':>5} {'errors':>6} {'overhead p50':>12} {'p95':>6} "
        f"{'max':>6} {'first_audio p50':>15} {'v2v p50':>8} {'v2v p95':>8} "
        f"{'CPU s/session-min':>17}"
    )
    rows = []
    for level in (int(n) for n in args.sessions.split(",")):
        row = await run_level(url, recordings, level, args.turns, pid)
        rows.append(row)
        print(
            f"{row['sessions']:>8} {row['turns']:>5} {row['errors']:>6} "
            f"{row['overhead_p50']:>12.1f} {row['overhead_p95']:>6.1f} "
            f"{row['overhead_max']:>6.1f} {row['first_audio_p50']:>15.1f} "
            f"{row['v2v_p50']:>8.1f} {row['v2v_p95']:>8.1f} "
            f"{row['cpu_s_per_session_min']:>17.2f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"simulated": SIMULATED, "levels": rows}, indent=2))


if __name__ == "__main__":
    main()
