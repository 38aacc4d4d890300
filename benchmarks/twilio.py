"""Concurrent Twilio calls: the pipeline's own latency and the server's CPU at N calls.

Starts `voice gateway --simulate` (fixed latencies) and a voice server as separate processes
on 127.0.0.1, then runs N concurrent Twilio Media Streams calls against ``/v1/twilio`` with
the protocol-faithful far end the tests use (voice/bench/carrier.py): 8 kHz mu-law media
every 20 ms in real time, marks echoed when their audio has played. Each call asks
``--turns`` questions from samples/, waiting for each reply to finish. Per level it reports:

- ``overhead_ms`` p50/p95/max: first reply audio sent − (vad + asr + first sentence + TTS
  first byte), from the server's own per-turn timings (ARCHITECTURE.md);
- voice-to-voice p50/p95 at the far end: first reply audio received − end of speech;
- the server's event loop: ``lag p99`` (median over the level's seconds of each second's
  99th percentile) and ``max``, how late it ran a timer due every 10 ms, i.e. how long any
  ready callback waited behind the others; and time in garbage collection (ms per second
  and longest pause);
- the server process's CPU: percent of one core over the level and in its busiest seconds
  (``p90 s``: the 90th percentile of each second's figure; near 100 the loop is saturated
  while most calls are active, whatever the average), and seconds per call-minute; with
  ``--workers N`` the CPU is all workers' together, and the per-second figures (lag, GC,
  ``p90 s``) are each worker's;
  the CPU of this load generator (``callers``), of the simulated gateway, and of everything
  else on the machine meanwhile (``others``: figures taken on a busy machine are worse);
- the server's memory: its resident set (all its processes) at its peak during the level
  (sampled every 0.25 s), and that peak less the resident set before the first call, per
  call: the memory each concurrent call costs, for sizing (docs/deploy.md).

    .venv/bin/python -m benchmarks.twilio                       # 1, 50 and 100 calls
    .venv/bin/python -m benchmarks.twilio --calls 1,10 --turns 1
    .venv/bin/python -m benchmarks.twilio --workers 2           # voice serve --workers 2

Traffic goes only to 127.0.0.1 and every run ends by itself (each call has a deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.overhead import SIMULATED, cpu_seconds, free_port, percentile, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
TURN_TIMEOUT_S = 40.0
FRAME_S = 0.02
PHASE = random.Random(20)
"""Each call's offset within the 20 ms frame cycle; seeded, so runs are alike."""
STAGES = ("vad_ms", "asr_ms", "first_sentence_ms", "tts_ttfb_ms", "first_audio_ms")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_wait_seconds(pid: int) -> float:
    """Seconds process ``pid``'s main thread has spent ready to run but waiting for a core."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def server_pids(pid: int) -> list[int]:
    """The server process and its children (the workers of ``--workers``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def rss_mb(pids: list[int]) -> float:
    """Resident memory of ``pids`` together, in MB (VmRSS in /proc/PID/status)."""
    total_kb = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


async def peak_rss(pids: list[int], peak: list[float]) -> None:
    """Keep ``peak[0]`` at the highest resident memory of ``pids`` seen, every 0.25 s."""
    while True:
        peak[0] = max(peak[0], rss_mb(pids))
        await asyncio.sleep(0.25)


def read_lines(path: Path) -> list[str]:
    # A few kilobytes between levels: reading them in the loop holds nothing up.
    return path.read_text().splitlines()


def median(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


LAG_TICK_S = 0.01
"""How often the server process checks how late its event loop runs a due timer."""


async def watch_loop(out: Any) -> None:
    """Once a second, log how late the loop ran a timer due every :data:`LAG_TICK_S` (the
    wait any ready callback has behind the others) and the time spent in garbage collection.
    """
    import gc

    gc_ms = gc_max = 0.0
    gc_started = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_ms, gc_max, gc_started
        if phase == "start":
            gc_started = time.perf_counter()
        else:
            pause = (time.perf_counter() - gc_started) * 1000
            gc_ms += pause
            gc_max = max(gc_max, pause)

    gc.callbacks.append(on_gc)
    lags: list[float] = []
    second = time.monotonic() + 1
    cpu_at = time.process_time()
    while True:
        due = time.monotonic() + LAG_TICK_S
        await asyncio.sleep(LAG_TICK_S)
        now = time.monotonic()
        lags.append((now - due) * 1000)
        if now >= second:
            lags.sort()
            cpu, cpu_at = time.process_time() - cpu_at, time.process_time()
            line = {"t": now, "lag_p99": lags[int(0.99 * (len(lags) - 1))], "lag_max": lags[-1]}
            line |= {"cpu": 100 * cpu / (now - second + 1), "gc_ms": gc_ms, "gc_max": gc_max}
            out.write(json.dumps(line) + "\n")
            lags.clear()
            gc_ms = gc_max = 0.0
            second = now + 1


ENV_TIMINGS = "BENCH_TWILIO_TIMINGS"
"""Where the server's processes log each turn's timings (the loop's lag in ``<path>.loop``)."""


def serve(port: int, gateway_url: str, timings: Path, workers: int) -> None:
    """The server process: `voice serve` as built by the CLI, its app from the ``VOICE_*``
    environment, plus the timings of :func:`timed_app`. With ``workers`` > 1 it is the
    supervisor, and each worker serves :func:`timed_app`."""
    from voice.app.workers import serve_workers
    from voice.cli import run_app

    logging.basicConfig(level=logging.WARNING)
    os.environ |= {
        "VOICE_GATEWAY_URL": gateway_url,
        "VOICE_HOST": "127.0.0.1",
        "VOICE_PORT": str(port),
        "VOICE_MAX_SESSIONS": "1000",
        ENV_TIMINGS: str(timings),
    }
    if workers > 1:
        app = "benchmarks.twilio:timed_app"  # by name: each worker imports it
        status = serve_workers(app, host="127.0.0.1", port=port, count=workers, log_level="warning")
        sys.exit(status)
    run_app(timed_app(), host="127.0.0.1", port=port, log_level="warning")


def timed_app() -> Any:
    """`voice serve`'s app, whose metrics also log each turn's timings, and which logs its
    event loop's lag every second (:func:`watch_loop`)."""
    import contextlib

    from voice.app.factory import create_app
    from voice.app.metrics import SharedMetrics
    from voice.core.events import ResponseDone, SessionEvent

    logging.basicConfig(level=logging.WARNING)
    timings = Path(os.environ[ENV_TIMINGS])
    app = create_app(shared=SharedMetrics.from_env(os.environ))
    out = timings.open("a", buffering=1)
    metrics = app.state.voice.metrics
    observe = metrics.observe

    def record(event: SessionEvent) -> None:
        observe(event)
        if isinstance(event, ResponseDone):
            out.write(json.dumps({"status": event.status, **event.timings.as_dict()}) + "\n")

    metrics.observe = record  # type: ignore[method-assign]  # the server's own metrics, timed
    loop_log = Path(f"{timings}.loop").open("a", buffering=1)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with inner(app):
            watcher = asyncio.create_task(watch_loop(loop_log))
            try:
                yield
            finally:
                watcher.cancel()

    inner = app.router.lifespan_context
    app.router.lifespan_context = lifespan
    return app


async def one_call(
    url: str, index: int, calls: int, turns: int, ramp_s: float, deflate: bool, short: bool
) -> dict[str, Any]:
    from tests.samples import manifest
    from tests.telephony_stack import speech
    from voice.bench.carrier import TWILIO, CarrierCaller

    questions = [
        s
        for s, e in manifest().items()
        if e["role"] == "question" and (not short or e["speech_end_s"] <= 4.0)
    ]
    # Calls that began at unrelated moments send their 20 ms frames at unrelated phases of
    # the 20 ms cycle, not in step: spread them over it, as a carrier's traffic would be.
    await asyncio.sleep(ramp_s * index / max(calls, 1) + PHASE.uniform(0, FRAME_S))
    v2v: list[float] = []
    timeouts = 0
    async with CarrierCaller(url, TWILIO, listen=False, deflate=deflate) as caller:
        far = caller.far_end
        for turn in range(turns):
            name = questions[(index + turn) % len(questions)]
            spoken = await caller.say(speech(name))
            speech_end = spoken + manifest()[name]["speech_end_s"]
            chunks_before = len(far.chunks)
            if not await caller.wait_until(lambda n=chunks_before: len(far.chunks) > n, 20):
                timeouts += 1
                continue
            v2v.append((far.chunks[chunks_before].start - speech_end) * 1000)
            # The reply is over when every mark has come back and no media arrives.
            deadline = time.monotonic() + TURN_TIMEOUT_S
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                quiet = time.monotonic() - (far.last_media_at or 0) > 0.6
                if quiet and len(caller.echoed) == far.mark_messages:
                    break
            else:
                timeouts += 1
    return {"v2v": v2v, "timeouts": timeouts, "violations": len(caller.violations)}


async def run_level(
    url: str,
    calls: int,
    args: argparse.Namespace,
    pids: dict[str, int],
    timings: Path,
    idle_rss: float,
) -> dict[str, Any]:
    seen = len(read_lines(timings))
    groups = {name: [pid] for name, pid in pids.items()} | {"server": server_pids(pids["server"])}

    def cpu_used() -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in group) for name, group in groups.items()}

    before = cpu_used()
    waited_before = sum(cpu_wait_seconds(p) for p in groups["server"])
    busy_before, began = machine_busy_seconds(), time.monotonic()
    peak = [rss_mb(groups["server"])]
    sampler = asyncio.create_task(peak_rss(groups["server"], peak))
    try:
        results = await asyncio.gather(
            *(
                one_call(url, i, calls, args.turns, args.ramp, args.deflate, args.short)
                for i in range(calls)
            )
        )
    finally:
        sampler.cancel()
    wall = time.monotonic() - began
    used = {name: seconds - before[name] for name, seconds in cpu_used().items()}
    others = machine_busy_seconds() - busy_before - sum(used.values())
    cpu = used["server"]
    waited = sum(cpu_wait_seconds(p) for p in groups["server"]) - waited_before
    turns_done = [json.loads(line) for line in read_lines(timings)[seen:]]
    loop = [json.loads(line) for line in read_lines(Path(f"{timings}.loop"))]
    loop = [second for second in loop if began < second["t"] <= began + wall]
    overhead = [t["overhead_ms"] for t in turns_done if t["overhead_ms"] is not None]
    v2v = [ms for r in results for ms in r["v2v"]]
    return {
        "calls": calls,
        "turns": len(overhead),
        "not_completed": sum(t["status"] != "completed" for t in turns_done),
        "timeouts": sum(r["timeouts"] for r in results),
        "violations": sum(r["violations"] for r in results),
        "overhead_p50": statistics.median(overhead) if overhead else float("nan"),
        "overhead_p95": percentile(overhead, 95),
        "overhead_max": max(overhead, default=float("nan")),
        "v2v_p50": statistics.median(v2v) if v2v else float("nan"),
        "v2v_p95": percentile(v2v, 95),
        "stages_p50": {name: median([t[name] for t in turns_done]) for name in STAGES},
        "loop_lag_p99": percentile([second["lag_p99"] for second in loop], 50),
        "loop_lag_max": max((second["lag_max"] for second in loop), default=float("nan")),
        "gc_ms_per_s": sum(second["gc_ms"] for second in loop) / max(len(loop), 1),
        "gc_max_ms": max((second["gc_max"] for second in loop), default=float("nan")),
        "cpu_percent": 100 * cpu / wall,
        "cpu_busiest_s": max((second["cpu"] for second in loop), default=float("nan")),
        "cpu_p90_s": percentile([second["cpu"] for second in loop], 90),
        "cpu_s_per_call_min": cpu / (calls * wall / 60),
        "server_cpu_wait_percent": 100 * waited / wall,
        "callers_cpu_percent": 100 * used["callers"] / wall,
        "gateway_cpu_percent": 100 * used["gateway"] / wall,
        "others_cpu_percent": 100 * others / wall,
        "rss_peak_mb": peak[0],
        "rss_mb_per_call": (peak[0] - idle_rss) / calls,
        "wall_s": wall,
    }


async def measure(
    args: argparse.Namespace, gw_port: int, port: int, pids: dict[str, int], timings: Path
) -> None:
    await wait_healthy(f"http://127.0.0.1:{gw_port}/health")
    await wait_healthy(f"http://127.0.0.1:{port}/health")
    url = f"ws://127.0.0.1:{port}/v1/twilio"
    idle_rss = rss_mb(server_pids(pids["server"]))
    print(
        f"simulated gateway: {SIMULATED}; {args.turns} turns per call, started over "
        f"{args.ramp:g} s; "
        f"permessage-deflate {'on' if args.deflate else 'off'}; {os.cpu_count()} cores; "
        f"{args.workers} server worker{'s' if args.workers > 1 else ''}"
    )
    print(
        "CPU: % of one core over the level; 'callers' is this load generator, 'others' what "
        "the rest of the machine used meanwhile (a busy machine makes every figure worse)"
    )
    print(
        f"memory: the server's resident set (all its processes), {idle_rss:.0f} MB before the "
        "first call; 'RSS MB' its peak during the level, 'MB/call' (peak - that) / calls"
    )
    print(
        f"{'calls':>5} {'turns':>5} {'failed':>6} {'overhead p50':>12} {'p95':>6} {'max':>6} "
        f"{'v2v p50':>8} {'v2v p95':>8} {'lag p99':>7} {'max':>5} {'gc ms/s':>7} {'max':>5} "
        f"{'server CPU %':>12} {'p90 s':>5} {'CPU s/call-min':>14} {'waited %':>8} {'callers':>7} "
        f"{'gateway':>7} {'others':>6} {'RSS MB':>6} {'MB/call':>7}"
    )
    rows = []
    for level in (int(n) for n in args.calls.split(",")):
        row = await run_level(url, level, args, pids, timings, idle_rss)
        rows.append(row)
        failed = row["not_completed"] + row["timeouts"] + row["violations"]
        print(
            f"{row['calls']:>5} {row['turns']:>5} {failed:>6} {row['overhead_p50']:>12.1f} "
            f"{row['overhead_p95']:>6.1f} {row['overhead_max']:>6.1f} {row['v2v_p50']:>8.0f} "
            f"{row['v2v_p95']:>8.0f} {row['loop_lag_p99']:>7.1f} {row['loop_lag_max']:>5.0f} "
            f"{row['gc_ms_per_s']:>7.1f} {row['gc_max_ms']:>5.0f} {row['cpu_percent']:>12.0f} "
            f"{row['cpu_p90_s']:>5.0f} {row['cpu_s_per_call_min']:>14.2f} "
            f"{row['server_cpu_wait_percent']:>8.0f} "
            f"{row['callers_cpu_percent']:>7.0f} "
            f"{row['gateway_cpu_percent']:>7.0f} {row['others_cpu_percent']:>6.0f} "
            f"{row['rss_peak_mb']:>6.0f} {row['rss_mb_per_call']:>7.2f}",
            flush=True,
        )
    if args.json:
        results = {"simulated": SIMULATED, "workers": args.workers, "levels": rows}
        args.json.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", default="1,50,100", help="comma-separated levels")
    parser.add_argument("--turns", type=int, default=3, help="questions per call")
    parser.add_argument(
        "--short",
        action="store_true",
        help="only the questions spoken in under 4 s: the two long ones pause inside for "
        "longer than the shortest turn end, and the simulated gateway, which answers every "
        "upload with a whole question, makes a speculating server end their turn there",
    )
    parser.add_argument(
        "--ramp", type=float, default=10.0, help="seconds over which call starts are spread"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--deflate", action="store_true", help="callers offer permessage-deflate (default: off)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes, as voice serve --workers"
    )
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "GATEWAY_URL", "TIMINGS"))
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], Path(args.serve[2]), args.workers)
        return

    gw_port, port = free_port(), free_port()
    python = sys.executable
    flags = [f"--{k}={v}" for k, v in SIMULATED.items()]
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.jsonl"
        timings.touch()
        gateway = subprocess.Popen(
            [python, "-m", "voice.cli", "gateway", "--simulate", "--port", str(gw_port), *flags],
            stdout=subprocess.DEVNULL,
        )
        server = subprocess.Popen(
            [python, "-m", "benchmarks.twilio", "--serve", str(port),
             f"http://127.0.0.1:{gw_port}/v1", str(timings), "--workers", str(args.workers)],
            cwd=ROOT,
        )  # fmt: skip
        try:
            pids = {"server": server.pid, "gateway": gateway.pid, "callers": os.getpid()}
            asyncio.run(measure(args, gw_port, port, pids, timings))
        finally:
            for proc in (server, gateway):
                proc.terminate()
            for proc in (server, gateway):
                proc.wait(timeout=15)


if __name__ == "__main__":
    main()
