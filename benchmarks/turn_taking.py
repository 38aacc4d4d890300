"""Turn taking over Twilio calls: how soon the reply comes, how often it comes too soon, and
what each turn setting costs in gateway requests.

Starts, as processes on 127.0.0.1, one voice server per turn setting (``VOICE_*`` variables:
``VOICE_SPECULATION``, ``VOICE_TURN_HANGOVER_MS``, ...; variables the server does not know
are ignored, and the shell's own ``VOICE_*`` are left out) and ``voice gateway --simulate``
at fixed latencies (ASR 150 ms, first token 200 ms, 30 ms a token, a 7-token first
sentence, speech first byte 120 ms), and calls them as a Twilio caller
(voice/bench/carrier.py: 8 kHz μ-law in real time, marks echoed as played).

1. Turns, calls running at once (one per server, each server with its own call, every call
   saying the same recording; latency is not what is measured here): each sentence of the
   pause set (samples/pauses/) and the questions of samples/ (``--questions``: by default
   the seven whose speech is over within 4 s; ``all`` adds the two ~7 s ones). Each server
   logs when it ended a turn (``SpeechStopped``), on the machine's monotonic clock, the
   caller's too.
   - **premature**: reply audio reached the caller before the recording's last word
     (``speech_end_s``), per recording: the caller was answered while still talking;
   - **cut-offs**: the server ended the turn before the last word (the end-of-turn
     benchmarks' "false cut-off"), even if the reply was then withdrawn unheard;
   - **wait**: on the questions, end of speech → the server ending the turn (p50);
   - **requests per turn** by route, from the simulated gateway's ``/v1/simulate/stats``
     (each reported setting has a gateway of its own), for the questions and for the
     pause set: what speculation costs.
   Each recording's transcript is set on the gateways before it plays; the pause set's is
   segmented at its pauses, so a server that transcribes at a pause gets the words so far.
2. Latency, one call at a time, per reported setting: voice-to-voice p50/p95 on the
   questions (first reply sound heard − the recording's ``speech_end_s``, the end of its last
   voiced frame; and, as ``sound``, the p50 from where its sound ends by energy, which is
   what `voice bench` measures from, ~0.1 s earlier), and on every
   ``--barge-in-every``-th question the caller interrupts the reply 0.5 s in ("Wait,
   stop."): the time from the interruption's onset to silence at the caller (barge-in
   must stay unaffected).
3. The sweeps (``--sweep``): settings run in step 1 only, and for each sweep the smallest
   value whose premature rate on the pause set (role ``pause``; the ``clause`` recordings
   are reported apart) is within a 5 % budget, with the wait it costs on the questions;
   and likewise for cut-offs, as LiveKit's end-of-turn benchmark reports the wait needed
   at a 5 % false-cut-off budget.

    .venv/bin/python -m benchmarks.turn_taking                       # defaults, ~5 min
    .venv/bin/python -m benchmarks.turn_taking --setting off:SPECULATION=off,TURN_HANGOVER_MS=500 \\
        --sweep fixed:TURN_HANGOVER_MS=300,500,700,900:SPECULATION=off --pauses 8
    .venv/bin/python -m benchmarks.turn_taking --engines local --pauses 6 --questions 4

``--latencies asr_ms=0,...`` changes the simulated gateway's. ``--engines local`` answers
with the embedded engines (one ``voice gateway`` process, no simulation: Whisper hears the
pauses itself); it runs every call one at a time, has no request counts, and no sweep
unless one is given. The figures are the machine's: run it alone. Traffic goes only to
127.0.0.1; every call has a deadline and the whole run a time limit (``--max-minutes``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import percentile, wait_healthy
from benchmarks.turn_setup import (
    LATENCIES,
    REPLY,
    SAMPLES,
    SHORT_S,
    Recording,
    Server,
    Setting,
    Sweep,
    parse_latencies,
    parse_setting,
    parse_sweep,
    processes,
    recordings,
    served_by,
)

ADAPTIVE = "TURN_PAUSE_MS=150,TURN_HANGOVER_MIN_MS=250,TURN_HANGOVER_MAX_MS=900"
SETTINGS = (
    "off:SPECULATION=off,TURN_HANGOVER_MS=500",
    f"asr:SPECULATION=asr,{ADAPTIVE}",
    f"llm:SPECULATION=llm,{ADAPTIVE}",
    f"full:SPECULATION=full,{ADAPTIVE}",
)
SWEEPS = (
    "fixed:TURN_HANGOVER_MS=300,400,500,600,700,800,900:SPECULATION=off",
    "floor:TURN_HANGOVER_MIN_MS=200,250,300,400,500:"
    "SPECULATION=llm,TURN_PAUSE_MS=150,TURN_HANGOVER_MAX_MS=900",
    "ceiling:TURN_HANGOVER_MAX_MS=300,400,500,600,700,900:"
    "SPECULATION=llm,TURN_PAUSE_MS=150,TURN_HANGOVER_MIN_MS=250",
)
BUDGET = 0.05
REPLY_WAIT_S = 8.0
"""After the last word, the longest a call waits for the reply."""
LISTEN_S = 0.3
"""In step 1, how long a call listens once the reply is heard: by then the reply's chat
stream has ended and its every sentence's speech was asked for, so requests are counted
alike in every setting."""
BARGE_IN_AFTER_S = 0.5
CLEAR_WAIT_S = 5.0
SETTLE_S = 3.0
"""After a step-1 batch, how long the gateways may take to see every request end."""


# ---------------------------------------------------------------------------------------
# a call


@dataclass
class Call:
    """One recording said into one server, and what the caller heard."""

    server: Server
    recording: Recording
    began: float = 0.0
    ended: float = 0.0
    spoken: float = 0.0
    """When the recording's first sample was said (the machine's monotonic clock)."""
    onsets: list[float] = field(default_factory=list)
    """Where reply sound began, as the caller heard it."""
    barge_in_stop_ms: float | None = None
    error: str | None = None
    commits: list[float] = field(default_factory=list)
    """When the server ended a turn (from its log)."""
    requests: dict[str, int] | None = None

    @property
    def speech_end(self) -> float:
        return self.spoken + self.recording.speech_end_s

    @property
    def premature(self) -> bool:
        return any(t < self.speech_end for t in self.onsets)

    @property
    def cut_off(self) -> bool:
        return any(t < self.speech_end for t in self.commits)

    @property
    def voice_to_voice_ms(self) -> float | None:
        after = [t for t in self.onsets if t >= self.speech_end]
        return (after[0] - self.speech_end) * 1000 if after else None

    @property
    def from_sound_end_ms(self) -> float | None:
        """Voice-to-voice from the end of the sound, as `voice bench` measures it."""
        v2v = self.voice_to_voice_ms
        rec = self.recording
        return None if v2v is None else v2v + (rec.speech_end_s - rec.sound_end_s) * 1000

    @property
    def wait_ms(self) -> float | None:
        after = [t for t in self.commits if t >= self.speech_end]
        return (after[0] - self.speech_end) * 1000 if after else None


async def talk(call: Call, *, listen_s: float, interrupt: Recording | None = None) -> Call:
    """Say the recording, wait for the reply (and interrupt it, given ``interrupt``)."""
    from voice.bench.carrier import TWILIO, CarrierCaller

    rec = call.recording
    call.began = time.monotonic()
    try:
        async with CarrierCaller(call.server.url, TWILIO) as caller:
            call.spoken = await caller.say(rec.audio)
            ear = caller.ear
            end = call.speech_end
            heard = await caller.wait_until(
                lambda: ear.onset_after(end) is not None, rec.speech_end_s + REPLY_WAIT_S
            )
            if not heard:
                call.error = "no reply"
            elif interrupt is not None:
                await interrupt_reply(caller, call, interrupt)
            else:
                await asyncio.sleep(listen_s)
            call.onsets = [span.start for span in ear.spans() if span.start >= call.spoken]
            if caller.errors and call.error is None:
                call.error = caller.errors[0]
    except (OSError, TimeoutError) as exc:
        call.error = f"{type(exc).__name__}: {exc}"
    call.ended = time.monotonic()
    return call


async def interrupt_reply(caller: Any, call: Call, interrupt: Recording) -> None:
    onset = caller.ear.onset_after(call.speech_end)
    await asyncio.sleep(max(0.0, onset + BARGE_IN_AFTER_S - time.monotonic()))
    since = len(caller.events)
    caller.hush()
    talk_onset = await caller.say(interrupt.audio) + interrupt.speech_start_s
    cleared = await caller.wait_for(
        lambda e: e.get("type") == "clear", since=since, timeout_s=CLEAR_WAIT_S
    )
    end = caller.ear.sound_end_after(talk_onset)
    if cleared is None or end is None:
        call.error = "not interrupted"
        return
    call.barge_in_stop_ms = max(0.0, end - talk_onset) * 1000


# ---------------------------------------------------------------------------------------
# the gateways


class Gateways:
    """The simulated gateways' scripts and request counts (nothing with local engines)."""

    def __init__(self, servers: list[Server], latencies: dict[str, float] | None) -> None:
        self.urls = sorted({s.gateway for s in servers}) if latencies is not None else []
        self.latencies = latencies or {}
        self.client = httpx.AsyncClient(timeout=10)

    async def script(self, recording: Recording) -> None:
        from voice.gateway.simulated import SimulationSettings

        settings = SimulationSettings(
            **self.latencies, replies=[REPLY], transcripts=[recording.transcript]
        ).model_dump(mode="json")
        for url in self.urls:
            (await self.client.post(f"{url}/simulate", json=settings)).raise_for_status()

    async def stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for url in self.urls:
            out[url] = (await self.client.get(f"{url}/simulate/stats")).json()
        return out

    async def settle(self) -> dict[str, dict[str, Any]]:
        """The counts once no request is open (or :data:`SETTLE_S` passed)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            stats = await self.stats()
            idle = all(sum(s["in_flight"].values()) == 0 for s in stats.values())
            if idle or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------
# the steps


async def turns(
    servers: list[Server], gateways: Gateways, plays: list[Recording], concurrent: bool
) -> list[Call]:
    """Step 1: each recording into every server, at once when ``concurrent``."""
    calls: list[Call] = []
    for i, rec in enumerate(plays, 1):
        print(f"  turns {i}/{len(plays)}: {rec.name}", file=sys.stderr, flush=True)
        await gateways.script(rec)
        before = await gateways.stats()
        batch = [Call(server, rec) for server in servers]
        if concurrent:
            await asyncio.gather(*(talk(c, listen_s=LISTEN_S) for c in batch))
        else:
            for c in batch:
                await talk(c, listen_s=LISTEN_S)
        after = await gateways.settle() if gateways.urls else {}
        for c in batch:
            events = c.server.events_between(c.began, c.ended + 0.5)
            c.commits = [e["t"] for e in events if e["type"] == "SpeechStopped" and not e["cut"]]
            if c.server.own_gateway:
                was, now = before[c.server.gateway], after[c.server.gateway]
                c.requests = {r: now["requests"][r] - was["requests"][r] for r in ROUTES}
        calls += batch
    return calls


async def latency(
    servers: list[Server],
    gateways: Gateways,
    reported: list[Setting],
    questions: list[Recording],
    interrupts: list[Recording],
    barge_every: int,
) -> list[Call]:
    """Step 2: the questions into each reported setting's server, one call at a time."""
    calls = []
    for setting in reported:
        server = served_by(servers, setting)
        print(f"  latency: {setting.name}", file=sys.stderr, flush=True)
        for i, rec in enumerate(questions):
            await gateways.script(rec)
            barge = barge_every > 0 and i % barge_every == barge_every - 1
            interrupt = interrupts[i % len(interrupts)] if barge else None
            calls.append(await talk(Call(server, rec), listen_s=0.0, interrupt=interrupt))
    return calls


ROUTES = ("transcribe", "chat", "speak")


# ---------------------------------------------------------------------------------------
# the figures


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rate(calls: list[Call], role: str, what: str) -> tuple[int, int]:
    of_role = [c for c in calls if c.recording.role == role and c.error is None]
    return sum(bool(getattr(c, what)) for c in of_role), len(of_role)


def per_turn(calls: list[Call]) -> str:
    counted = [c.requests for c in calls if c.requests is not None]
    if not counted:
        return "n/a"
    return "/".join(f"{sum(r[route] for r in counted) / len(counted):.2f}" for route in ROUTES)


def figures(setting: Setting, step1: list[Call], step2: list[Call]) -> dict[str, Any]:
    mine = [c for c in step1 if c.server.setting.env == setting.env]
    questions = [c for c in mine if c.recording.role == "question"]
    pauses = [c for c in mine if c.recording.role in ("pause", "clause")]
    measured = [c for c in step2 if c.server.setting.env == setting.env]
    v2v = [ms for c in measured if (ms := c.voice_to_voice_ms) is not None]
    stops = [c.barge_in_stop_ms for c in measured if c.barge_in_stop_ms is not None]
    return {
        "setting": setting.name,
        "env": dict(setting.env),
        "v2v_p50": median(v2v),
        "v2v_p95": percentile(v2v, 95),
        "v2v_sound_p50": median([ms for c in measured if (ms := c.from_sound_end_ms) is not None]),
        "wait_p50": median([ms for c in questions if (ms := c.wait_ms) is not None]),
        "premature": rate(mine, "pause", "premature"),
        "cut_offs": rate(mine, "pause", "cut_off"),
        "clause_premature": rate(mine, "clause", "premature"),
        "clause_cut_offs": rate(mine, "clause", "cut_off"),
        "requests_questions": per_turn(questions),
        "requests_pauses": per_turn(pauses),
        "barge_in_stop_p50": median(stops),
        "barge_in_stop_max": max(stops, default=float("nan")),
        "barge_ins": len(stops),
        "errors": sorted({c.error for c in mine + measured if c.error}),
    }


def smallest_within(rows: list[dict[str, Any]], what: str) -> dict[str, Any] | None:
    for row in rows:
        bad, of = row[what]
        if of and bad / of <= BUDGET:
            return row
    return None


def report(rows: list[dict[str, Any]], sweeps: list[tuple[Sweep, list[dict[str, Any]]]]) -> None:
    def frac(pair: tuple[int, int]) -> str:
        return f"{pair[0]}/{pair[1]}"

    print(
        f"\n{'setting':<10} {'v2v p50':>7} {'p95':>6} {'sound':>5} {'wait p50':>8} "
        f"{'premature':>9} {'cut-offs':>8} {'clause p/c':>10} {'req/turn q':>15} "
        f"{'req/turn pauses':>15} {'barge-in p50':>12} {'max':>5}"
    )
    for r in rows:
        clause = f"{frac(r['clause_premature'])} {frac(r['clause_cut_offs'])}"
        print(
            f"{r['setting']:<10} {r['v2v_p50']:>7.0f} {r['v2v_p95']:>6.0f} "
            f"{r['v2v_sound_p50']:>5.0f} {r['wait_p50']:>8.0f} "
            f"{frac(r['premature']):>9} {frac(r['cut_offs']):>8} {clause:>10} "
            f"{r['requests_questions']:>15} {r['requests_pauses']:>15} "
            f"{r['barge_in_stop_p50']:>12.0f} {r['barge_in_stop_max']:>5.0f}"
        )
    for r in rows:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items())
        errors = f"; errors: {', '.join(r['errors'])}" if r["errors"] else ""
        print(f"  {r['setting']}: {env}{errors}")
    for sweep, points in sweeps:
        base = " ".join(f"{k}={v}" for k, v in sweep.base)
        print(f"\nsweep {sweep.name} ({base}), varying {sweep.variable}:")
        print(f"{'value':>8} {'premature':>9} {'cut-offs':>8} {'clause p/c':>10} {'wait p50':>8}")
        for value, r in zip(sweep.values, points, strict=True):
            clause = f"{frac(r['clause_premature'])} {frac(r['clause_cut_offs'])}"
            print(
                f"{value:>8} {frac(r['premature']):>9} {frac(r['cut_offs']):>8} {clause:>10} "
                f"{r['wait_p50']:>8.0f}"
            )
        for what, label in (("premature", "premature-reply"), ("cut_offs", "cut-off")):
            best = smallest_within(points, what)
            if best is None:
                print(f"  at a 5 % {label} budget: no value of {sweep.variable} is within it")
            else:
                value = best["env"][sweep.variable]
                print(
                    f"  at a 5 % {label} budget: {sweep.variable}={value}, "
                    f"waiting {best['wait_p50']:.0f} ms (p50) after the last word"
                )


LEGEND = """\
  v2v: first reply sound heard - the last word, ms, one call at a time (questions)
  sound: v2v p50 from where the sound ends (energy, as `voice bench` measures), not the VAD
  wait: the last word - the server ending the turn, ms (questions, step 1)
  premature: recordings whose reply was heard before their last word (pause set)
  cut-offs: recordings whose turn the server ended before their last word (pause set)
  clause p/c: premature and cut-offs on the recordings pausing after a finished clause
  req/turn: transcribe/chat/speak requests per turn, on the questions and on the pause set
  barge-in: the interruption's onset - silence at the caller, ms"""


def legend(args: argparse.Namespace, questions: int, pauses: list[Recording]) -> None:
    if args.engines == "simulated":
        where = (
            "simulated gateway: ASR {asr_ms} ms, first token {ttft_ms} ms, {ms_per_token} ms a "
            "token, a 7-token first sentence, speech first byte {tts_ttfb_ms} ms"
        ).format(**{k: f"{v:g}" for k, v in args.latencies.items()})
    else:
        where = "embedded engines (voice gateway: Whisper tiny.en, Qwen2.5-Coder-0.5B, hibari)"
    mains = sum(r.role == "pause" for r in pauses)
    print(f"turn taking over Twilio calls; {where}")
    print(
        f"{questions} questions (samples/, --questions {args.questions}); pause set: "
        f"{mains} pausing mid-phrase, {len(pauses) - mains} after a finished-looking clause "
        "(samples/pauses/)"
    )
    print(LEGEND)


# ---------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    simulated = args.engines == "simulated"
    for url in {s.gateway for s in servers}:
        await wait_healthy(url.removesuffix("/v1") + "/health", timeout_s=120)
    for server in servers:
        await wait_healthy(server.url.replace("ws://", "http://").split("/v1")[0] + "/health")
    questions = recordings(SAMPLES, ("question",), args.questions)
    pauses = recordings(SAMPLES / "pauses", ("pause", "clause"), args.pauses)
    interrupts = recordings(SAMPLES, ("interrupt",), "all")
    legend(args, len(questions), pauses)
    gateways = Gateways(servers, args.latencies if simulated else None)
    try:
        began = time.monotonic()
        step1 = await turns(servers, gateways, [*pauses, *questions], simulated)
        took = [time.monotonic() - began]
        step2 = await latency(
            servers, gateways, args.reported, questions, interrupts, args.barge_in_every
        )
        took.append(time.monotonic() - began - took[0])
    finally:
        await gateways.client.aclose()
    rows = [figures(s, step1, step2) for s in args.reported]
    swept = [(sweep, [figures(s, step1, []) for s in sweep.settings()]) for sweep in args.sweeps]
    report(rows, swept)
    print(f"\nstep 1 (turns, calls at once) {took[0]:.0f} s, step 2 (latency) {took[1]:.0f} s")
    return {
        "engines": args.engines,
        "latencies": args.latencies if simulated else None,
        "settings": rows,
        "sweeps": [
            {"name": sw.name, "variable": sw.variable, "points": points} for sw, points in swept
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--setting",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="a setting to report (repeat; VOICE_ is added to each KEY); default: "
        + "; ".join(SETTINGS),
    )
    parser.add_argument(
        "--sweep",
        action="append",
        metavar="NAME:KEY=V1,V2,...[:KEY=VALUE,...]",
        help="a family of settings for the 5 %% budget (repeat); default: " + "; ".join(SWEEPS),
    )
    parser.add_argument("--no-sweep", action="store_true", help="run no sweep")
    parser.add_argument("--pauses", default="all", help="pause set: all, the first N, or names")
    parser.add_argument(
        "--questions",
        default="short",
        help=f"questions: all, short (speech over in {SHORT_S:g} s: the two long ones left out), "
        "the first N, or names",
    )
    parser.add_argument(
        "--barge-in-every", type=int, default=3, help="interrupt every Nth reply (0: never)"
    )
    parser.add_argument("--engines", choices=("simulated", "local"), default="simulated")
    parser.add_argument(
        "--latencies",
        metavar="KEY=MS,...",
        help="the simulated gateway's, as its settings name them; default: "
        + ",".join(f"{k}={v:g}" for k, v in LATENCIES.items()),
    )
    parser.add_argument(
        "--max-minutes", type=float, help="stop the run after (default: 15, 40 for local engines)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.max_minutes is None:
        args.max_minutes = 40.0 if args.engines == "local" else 15.0
    args.latencies = dict(LATENCIES) | parse_latencies(args.latencies or "")
    args.reported = [parse_setting(s) for s in args.setting or SETTINGS]
    names = [s.name for s in args.reported]
    if len(set(names)) != len(names):
        raise SystemExit("--setting: every setting needs a name of its own")
    default_sweeps = () if args.engines == "local" else SWEEPS
    args.sweeps = [] if args.no_sweep else [parse_sweep(s) for s in args.sweep or default_sweeps]
    swept = [s for sweep in args.sweeps for s in sweep.settings()]
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        processes(args.reported, swept, args, Path(tmp)) as servers,
    ):
        try:
            results = asyncio.run(asyncio.wait_for(measure(args, servers), args.max_minutes * 60))
        except TimeoutError:
            raise SystemExit(f"stopped after --max-minutes {args.max_minutes:g}") from None
    print(f"\n{len(servers)} servers; {time.monotonic() - began:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
