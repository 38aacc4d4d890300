"""Runs a workload: N callers ramped up, each playing turns, measured at the ear.

Per turn: ``voice_to_voice_ms`` (reply onset heard − end of the caller's speech), the
server's stage timings from ``response.done`` where the transport carries them, and for
barge-in turns ``barge_in_stop_ms`` (reply audio stopping at the ear − onset of the
caller's interruption). A progress callback gets a snapshot every second.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from websockets.exceptions import InvalidHandshake

from voice.bench.caller import Caller, CallRefused
from voice.bench.carrier import TWILIO, CarrierCaller
from voice.bench.native import NativeCaller
from voice.bench.stats import percentile, summarize, word_errors, words
from voice.bench.webrtc import WebRtcCaller
from voice.bench.workload import Recording, Workload

POLL_S = 0.02
LAG_TICK_S = 0.05
"""How often the load generator checks how late its own event loop runs."""
OVERLOADED_MS = 100.0
"""Generator lag past this makes the run's figures the generator's as much as the server's."""


def caller_for(url: str, index: int) -> Caller:
    """The transport is chosen by the URL: ``http(s)://`` calls over WebRTC (the server's
    base URL or its ``/v1/webrtc/offer``), a ``ws(s)://`` path ending in ``/twilio`` speaks
    Twilio Media Streams, any other the native protocol."""
    if url.startswith(("http://", "https://")):
        return WebRtcCaller(url)
    if url.rstrip("/").endswith("/twilio"):
        sid = f"MZbench{index:025d}"
        return CarrierCaller(url, TWILIO, sid=sid, parameters={"bench": "1"})
    return NativeCaller(url)


@dataclass
class TurnResult:
    session: int
    turn: int
    recording: str
    at_s: float
    """When the turn's question started, seconds since the run began."""
    concurrency: int
    """Sessions connected when the question started."""
    voice_to_voice_ms: float | None = None
    server: dict[str, float | None] | None = None
    barge_in_stop_ms: float | None = None
    error: str | None = None
    expected: str | None = None
    """What the recording says, when its manifest gives it."""
    transcript: str | None = None
    """What the server transcribed (native and WebRTC; not barge-in turns, which say two
    things)."""


@dataclass
class Snapshot:
    elapsed_s: float
    sessions_up: int
    turns_done: int
    v2v_p50: float | None
    v2v_p95: float | None
    errors: int


@dataclass
class BenchResult:
    url: str
    workload: dict[str, Any]
    turns: list[TurnResult] = field(default_factory=list)
    session_errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    peak_sessions: int = 0
    generator_lag_ms: float = 0.0
    """The longest this process's event loop ran late: its callers' microphones and ears
    were that far behind real time."""

    def voice_to_voice(self) -> list[float]:
        return [t.voice_to_voice_ms for t in self.turns if t.voice_to_voice_ms is not None]

    def errors(self) -> Counter[str]:
        counts = Counter(t.error for t in self.turns if t.error)
        counts.update(self.session_errors)
        return counts

    def error_rate(self) -> float:
        return sum(1 for t in self.turns if t.error) / max(1, len(self.turns))

    def word_error_rate(self) -> dict[str, float | int | None]:
        """Word errors over the words said, in turns whose text is known and transcript
        heard: how well the server's ASR heard these recordings (None without any)."""
        pairs = [(t.expected, t.transcript) for t in self.turns if t.expected is not None]
        scored = [(expected, heard) for expected, heard in pairs if heard is not None]
        said = sum(len(words(expected)) for expected, _ in scored)
        errors = sum(word_errors(expected, heard) for expected, heard in scored)
        return {"turns": len(scored), "words": said, "rate": errors / said if said else None}

    def summary(self) -> dict[str, Any]:
        stages: dict[str, list[float]] = {}
        for turn in self.turns:
            for name, value in (turn.server or {}).items():
                if value is not None:
                    stages.setdefault(name, []).append(value)
        stops = [t.barge_in_stop_ms for t in self.turns if t.barge_in_stop_ms is not None]
        return {
            "voice_to_voice_ms": summarize(self.voice_to_voice()),
            "barge_in_stop_ms": summarize(stops),
            "server": {name: summarize(values) for name, values in stages.items()},
            "turns": len(self.turns),
            "errors": dict(self.errors()),
            "error_rate": self.error_rate(),
            "word_error_rate": self.word_error_rate(),
            "sessions": self.workload["sessions"],
            "peak_sessions": self.peak_sessions,
            "sessions_per_s": self.workload["sessions"] / self.wall_s if self.wall_s else None,
            "wall_s": self.wall_s,
            "generator_lag_ms": round(self.generator_lag_ms, 1),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "workload": self.workload,
            "summary": self.summary(),
            "turns": [asdict(t) for t in self.turns],
        }


class _Run:
    def __init__(self, url: str, workload: Workload, recordings: list[Recording]) -> None:
        self.url = url
        self.workload = workload
        self.questions = [r for r in recordings if r.role == "question"]
        self.interrupts = [r for r in recordings if r.role == "interrupt"] or self.questions
        self.result = BenchResult(url=url, workload=workload.model_dump())
        self.began = time.monotonic()
        self.up = 0

    async def session(self, index: int) -> None:
        await asyncio.sleep(index / self.workload.ramp_per_s)
        try:
            async with caller_for(self.url, index) as caller:
                self.up += 1
                self.result.peak_sessions = max(self.result.peak_sessions, self.up)
                try:
                    for turn in range(self.workload.turns):
                        await self.turn(caller, index, turn)
                        if caller.closed.is_set():
                            break
                finally:
                    self.up -= 1
                    # A line that broke outside a turn, or after the turn's first error;
                    # one that a turn reports as its error is counted there, not twice.
                    lost = Counter(
                        e for e in caller.errors if e.startswith(("connection", "microphone"))
                    )
                    lost -= Counter(
                        t.error for t in self.result.turns if t.session == index and t.error
                    )
                    self.result.session_errors.update(lost)
        except CallRefused as exc:
            self.result.session_errors[f"connect_failed: {exc}"] += 1
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self.result.session_errors[f"connect_failed: {type(exc).__name__}"] += 1

    async def turn(self, caller: Caller, index: int, turn: int) -> None:
        w = self.workload
        question = self.questions[(index + turn) % len(self.questions)]
        since = len(caller.events)
        errors_before = len(caller.errors)
        started = await caller.say(question.audio)
        result = TurnResult(
            session=index,
            turn=turn,
            recording=question.name,
            at_s=started - self.began,
            concurrency=self.up,
            expected=question.text,
        )
        self.result.turns.append(result)
        speech_end = started + question.speech_end_s
        barge = w.barge_in_every > 0 and (turn + 1) % w.barge_in_every == 0
        if barge:
            await self._barge_in(caller, result, index + turn, speech_end, since)
        else:
            result.server = await caller.reply_finished(
                since=since, after=speech_end, timeout_s=w.reply_timeout_s
            )
            heard = [
                e["text"] for e in caller.events[since:] if e.get("type") == "input.transcript"
            ]
            result.transcript = " ".join(heard) if heard else None
        onset = caller.ear.onset_after(speech_end)
        if onset is not None:
            result.voice_to_voice_ms = round((onset - speech_end) * 1000.0, 1)
        new_errors = caller.errors[errors_before:]
        if new_errors:
            result.error = new_errors[0]
        elif result.voice_to_voice_ms is None:
            result.error = "no_reply_heard"
        await caller.until_spoken()
        await asyncio.sleep(w.think_s)

    async def _barge_in(
        self, caller: Caller, result: TurnResult, pick: int, speech_end: float, since: int
    ) -> None:
        w = self.workload
        deadline = time.monotonic() + w.reply_timeout_s
        while (onset := caller.ear.onset_after(speech_end)) is None:
            if time.monotonic() > deadline or caller.closed.is_set():
                return
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(max(0.0, onset + w.barge_in_delay_s - time.monotonic()))
        caller.hush()  # what is left of the question is trailing silence
        interrupt = self.interrupts[pick % len(self.interrupts)]
        talk_onset = await caller.say(interrupt.audio) + interrupt.speech_start_s
        kind = caller.interrupt_event
        stopped = await caller.wait_for(
            lambda e: e.get("type") == kind, since=since, timeout_s=10.0
        )
        if stopped is None:
            result.error = "not_interrupted"
            return
        end = caller.ear.sound_end_after(talk_onset)
        if end is not None:
            result.barge_in_stop_ms = round(max(0.0, end - talk_onset) * 1000.0, 1)
        # The interruption is a turn too: let its answer play out before going on.
        talk_end = talk_onset - interrupt.speech_start_s + interrupt.speech_end_s
        result.server = await caller.reply_finished(
            since=since, after=talk_end, timeout_s=w.reply_timeout_s, completed=True
        )

    def snapshot(self) -> Snapshot:
        v2v = self.result.voice_to_voice()
        return Snapshot(
            elapsed_s=time.monotonic() - self.began,
            sessions_up=self.up,
            turns_done=len(self.result.turns),
            v2v_p50=percentile(v2v, 50),
            v2v_p95=percentile(v2v, 95),
            errors=sum(self.result.errors().values()),
        )


async def run_bench(
    url: str,
    workload: Workload,
    recordings: list[Recording],
    *,
    progress: Callable[[Snapshot], None] | None = None,
) -> BenchResult:
    """Run ``workload`` against ``url`` and return every turn's measurements."""
    run = _Run(url, workload, recordings)

    async def report() -> None:
        next_report = time.monotonic() + 1.0
        while True:
            due = time.monotonic() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            now = time.monotonic()
            lag_ms = (now - due) * 1000.0
            run.result.generator_lag_ms = max(run.result.generator_lag_ms, lag_ms)
            if now >= next_report:
                next_report = now + 1.0
                if progress is not None:
                    progress(run.snapshot())

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(run.session(i) for i in range(workload.sessions)))
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
    run.result.wall_s = time.monotonic() - run.began
    if progress is not None:
        progress(run.snapshot())
    return run.result
