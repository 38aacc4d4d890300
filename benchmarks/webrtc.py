"""WebRTC sessions: voice-to-voice as the caller hears it, and the server's CPU per session.

Starts `voice gateway --simulate` (fixed latencies) and `voice serve` as separate processes
on 127.0.0.1 (the server offers only 127.0.0.1 as its ICE candidate), then measures:

- ``chromium``: the call page in a real headless Chromium (Debian's, driven by Playwright,
  as in the browser tests), its fake microphone a WAV of ``--turns`` sample questions with
  room for each reply. Voice-to-voice is the page's own figure (``voiceApp.turns``): the
  onset of the reply it plays minus the end of speech in its microphone levels.
- ``aiortc`` at each of ``--sessions``: `voice bench`'s WebRTC caller
  (voice/bench/webrtc.py) standing in for browsers, ``--turns`` questions each; voice-to-
  voice is found in the audio it receives, as `voice bench` reports it.

Per row: voice-to-voice p50/p95, the server's own ``first_audio_ms`` and ``overhead_ms``
from each turn's ``response.done``, and the server process's CPU over the row (% of one
core, and per session). A WebRTC session costs CPU even while nobody speaks: the reply
track sends (encoded, encrypted) silence every 20 ms.

    .venv/bin/python -m benchmarks.webrtc                        # chromium, aiortc at 1 and 10
    .venv/bin/python -m benchmarks.webrtc --sessions 1,10,25 --no-browser

Traffic goes only to 127.0.0.1 and every run ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.overhead import SIMULATED, cpu_seconds, percentile, simulated_stack, wait_healthy
from voice.bench.runner import run_bench
from voice.bench.workload import Workload, load_recordings

ROOT = Path(__file__).resolve().parent.parent
REPLY_ROOM_S = 14.0
"""Silence after each question in the browser's microphone: the simulated reply (~10 s of
speech) plays out before the next question, so no turn is a barge-in."""


def row(
    clients: str,
    sessions: int,
    v2v: list[float],
    timings: list[dict[str, Any]],
    errors: int,
    cpu_s: float,
    wall_s: float,
) -> dict[str, Any]:
    def stat(values: list[float | None], q: float) -> float:
        present = [v for v in values if v is not None]
        return (
            (statistics.median(present) if q == 50 else percentile(present, q))
            if present
            else float("nan")
        )

    first_audio = [t.get("first_audio_ms") for t in timings]
    overhead = [t.get("overhead_ms") for t in timings]
    cpu_percent = 100 * cpu_s / wall_s
    return {
        "clients": clients,
        "sessions": sessions,
        "turns": len(v2v),
        "errors": errors,
        "v2v_p50": stat(list(v2v), 50),
        "v2v_p95": stat(list(v2v), 95),
        "first_audio_p50": stat(first_audio, 50),
        "overhead_p50": stat(overhead, 50),
        "overhead_p95": stat(overhead, 95),
        "cpu_percent": cpu_percent,
        "cpu_percent_per_session": cpu_percent / sessions,
        "wall_s": wall_s,
    }


async def browser_row(base_url: str, turns: int, server_pid: int) -> dict[str, Any]:
    # The browser tests' helpers: Debian's Chromium, the fake microphone, the page's state.
    from tests.browser import caller_wav, chromium, page_of, wait_state
    from tests.samples import manifest

    questions = [s for s, e in manifest().items() if e["role"] == "question"][:turns]
    with tempfile.TemporaryDirectory() as tmp:
        wav = caller_wav(Path(tmp) / "caller.wav", *questions, gap_s=REPLY_ROOM_S)
        async with chromium(wav) as browser, page_of(browser, base_url) as page:
            before, began = cpu_seconds(server_pid), time.monotonic()
            await page.click("#call")
            await wait_state(page, "listening")
            await page.wait_for_function(
                f"voiceApp.turns.length >= {len(questions)}",
                timeout=(len(questions) * (REPLY_ROOM_S + 10) + 30) * 1000,
            )
            wall, cpu = time.monotonic() - began, cpu_seconds(server_pid) - before
            done = await page.evaluate("voiceApp.turns")
            errors = await page.evaluate("voiceApp.events.filter(e => e.type === 'error').length")
            await page.click("#call")  # hang up
            await wait_state(page, "idle")
    v2v = [t["voice_to_voice_ms"] for t in done if t["voice_to_voice_ms"] is not None]
    return row("chromium", 1, v2v, [t["timings"] for t in done], errors, cpu, wall)


async def aiortc_row(base_url: str, sessions: int, turns: int, server_pid: int) -> dict[str, Any]:
    workload = Workload(sessions=sessions, turns=turns, think_s=1.0, ramp_per_s=5.0)
    before, began = cpu_seconds(server_pid), time.monotonic()
    result = await run_bench(base_url, workload, load_recordings(ROOT / "samples"))
    wall, cpu = time.monotonic() - began, cpu_seconds(server_pid) - before
    timings = [t.server for t in result.turns if t.server]
    errors = sum(result.errors().values())
    return row("aiortc", sessions, result.voice_to_voice(), timings, errors, cpu, wall)


async def measure(args: argparse.Namespace, gw_port: int, port: int, server_pid: int) -> None:
    await wait_healthy(f"http://127.0.0.1:{gw_port}/health")
    await wait_healthy(f"http://127.0.0.1:{port}/health")
    base_url = f"http://127.0.0.1:{port}"
    print(f"simulated gateway: {SIMULATED}; {args.turns} turns per session; {os.cpu_count()} cores")
    print("CPU: the server process, % of one core over the row (and divided by sessions)")
    print(
        f"{'clients':>8} {'sessions':>8} {'turns':>5} {'errors':>6} {'v2v p50':>8} "
        f"{'v2v p95':>8} {'first_audio p50':>15} {'overhead p50':>12} {'p95':>6} "
        f"{'server CPU %':>12} {'per session':>11}"
    )
    rows = []
    levels: list[tuple[str, int]] = [] if args.no_browser else [("chromium", 1)]
    levels += [("aiortc", int(n)) for n in args.sessions.split(",")]
    for clients, sessions in levels:
        if clients == "chromium":
            r = await browser_row(base_url, args.turns, server_pid)
        else:
            r = await aiortc_row(base_url, sessions, args.turns, server_pid)
        rows.append(r)
        print(
            f"{r['clients']:>8} {r['sessions']:>8} {r['turns']:>5} {r['errors']:>6} "
            f"{r['v2v_p50']:>8.0f} {r['v2v_p95']:>8.0f} {r['first_audio_p50']:>15.0f} "
            f"{r['overhead_p50']:>12.1f} {r['overhead_p95']:>6.1f} "
            f"{r['cpu_percent']:>12.1f} {r['cpu_percent_per_session']:>11.1f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"simulated": SIMULATED, "rows": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sessions", default="1,10", help="aiortc levels, comma-separated")
    parser.add_argument("--turns", type=int, default=3, help="questions per session")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium row")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with simulated_stack({"VOICE_WEBRTC_HOST_ADDRESSES": "127.0.0.1"}) as (gw, port, pid):
        asyncio.run(measure(args, gw, port, pid))


if __name__ == "__main__":
    main()
