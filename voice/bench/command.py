"""`voice bench`: arguments, the run (or the capacity search), and the outputs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from voice.bench.caller import with_token
from voice.bench.report import progress_line, table, write_html, write_json
from voice.bench.runner import BenchResult, Snapshot, run_bench
from voice.bench.workload import DEFAULT_SAMPLES, Workload, load_recordings


def add_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="replay recordings at N concurrent calls and measure latency at the caller",
        description="Load-test a voice deployment: N concurrent callers play recordings in "
        "real time and measure, from the audio they get back, how long each reply took "
        "to be heard.",
    )
    bench.add_argument(
        "url",
        nargs="?",
        default="ws://127.0.0.1:8080/v1/session",
        help="the transport, by URL: ws://HOST/v1/session (native), ws://HOST/v1/twilio "
        "(Twilio Media Streams), http://HOST (WebRTC, offer posted to /v1/webrtc/offer)",
    )
    bench.add_argument("-n", "--sessions", type=int, default=1, help="concurrent callers")
    bench.add_argument(
        "--token",
        help="caller token, for a server with VOICE_AUTH_SECRET (`voice token`); default "
        "$VOICE_TOKEN",
    )
    bench.add_argument("--turns", type=int, default=3, help="questions per caller")
    bench.add_argument("--ramp", type=float, default=10.0, help="callers started per second")
    bench.add_argument("--think", type=float, default=1.0, help="seconds between turns")
    bench.add_argument(
        "--barge-in-every", type=int, default=0, help="every Nth turn talks over the reply"
    )
    bench.add_argument(
        "--barge-in-delay", type=float, default=0.8, help="seconds into the reply to interrupt"
    )
    bench.add_argument(
        "--samples",
        type=Path,
        nargs="+",
        default=[],
        metavar="PATH",
        help="the recordings: folders (every audio file in one, or what its manifest.json "
        "lists), manifests, or files (WAV, MP3, Ogg, FLAC, M4A); a manifest's text gives a "
        f"word error rate (default: {DEFAULT_SAMPLES.name}/, the recordings shipped with voice)",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write every turn's figures here")
    bench.add_argument(
        "--html", type=Path, metavar="FILE", help="write a self-contained report here"
    )
    bench.add_argument(
        "--find-capacity",
        action="store_true",
        help="raise concurrency step by step until a bound breaks; report the largest that held",
    )
    bench.add_argument("--max-p95-ms", type=float, default=2000.0, help="capacity bound")
    bench.add_argument("--max-error-rate", type=float, default=0.01, help="capacity bound")
    bench.add_argument("--step", type=int, default=10, help="capacity search step (sessions)")
    bench.add_argument("--limit", type=int, default=500, help="capacity search ceiling")
    bench.set_defaults(run=run)


def _token(args: argparse.Namespace) -> str | None:
    # Read here, not as the option's default: --help shows defaults, and this is a secret.
    return args.token or os.environ.get("VOICE_TOKEN")


def run(args: argparse.Namespace) -> int:
    recordings = load_recordings(*args.samples)
    workload = Workload(
        sessions=args.sessions,
        ramp_per_s=args.ramp,
        turns=args.turns,
        think_s=args.think,
        barge_in_every=args.barge_in_every,
        barge_in_delay_s=args.barge_in_delay,
    )
    if args.find_capacity:
        return asyncio.run(_capacity(args, workload, recordings))
    progress = Progress(sys.stderr)
    result = asyncio.run(
        run_bench(with_token(args.url, _token(args)), workload, recordings, progress=progress)
    )
    progress.end()
    _finish(args, result)
    return 0 if result.voice_to_voice() else 1


PLAIN_EVERY_S = 5.0
"""Off a terminal, the progress line is written this often (seconds of the run)."""


class Progress:
    """The live progress line on ``stream``: on a terminal, one line repainted in place
    every second; anywhere else (a log, a pipe), a plain line every :data:`PLAIN_EVERY_S`,
    so a log reads line by line instead of as one line of carriage returns."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._painted = False
        self._written_at: float | None = None

    def __call__(self, snapshot: Snapshot) -> None:
        if self._tty:
            print("\r" + progress_line(snapshot), end="", file=self._stream, flush=True)
            self._painted = True
            return
        if self._written_at is None or snapshot.elapsed_s - self._written_at >= PLAIN_EVERY_S:
            self._written_at = snapshot.elapsed_s
            print(progress_line(snapshot), file=self._stream, flush=True)

    def end(self) -> None:
        """A run is over: end the repainted line, so what follows starts on its own."""
        if self._painted:
            print(file=self._stream, flush=True)
            self._painted = False
        self._written_at = None


def _finish(args: argparse.Namespace, result: BenchResult) -> None:
    print(table(result))
    if args.json:
        write_json(result, args.json)
        print(f"json: {args.json}")
    if args.html:
        write_html(result, args.html)
        print(f"report: {args.html}")


async def _capacity(args: argparse.Namespace, base: Workload, recordings: list[Any]) -> int:
    held: BenchResult | None = None
    level = max(1, args.sessions)
    progress = Progress(sys.stderr)
    while level <= args.limit:
        workload = base.model_copy(update={"sessions": level})
        print(f"== {level} sessions", file=sys.stderr)
        result = await run_bench(
            with_token(args.url, _token(args)), workload, recordings, progress=progress
        )
        progress.end()
        summary = result.summary()
        p95 = summary["voice_to_voice_ms"]["p95"]
        ok = p95 is not None and p95 <= args.max_p95_ms
        ok = ok and summary["error_rate"] <= args.max_error_rate
        print(
            f"{level} sessions: v2v p95 {p95} ms, error rate {summary['error_rate']:.1%} "
            f"-> {'held' if ok else 'broke'}",
            file=sys.stderr,
        )
        if not ok:
            break
        held = result
        level = level + args.step if level > 1 else args.step
    if held is None:
        print("capacity: not even the first level held the bounds")
        return 1
    print(
        f"capacity: {held.workload['sessions']} concurrent sessions held "
        f"(v2v p95 ≤ {args.max_p95_ms:.0f} ms, errors ≤ {args.max_error_rate:.1%})"
    )
    _finish(args, held)
    return 0
