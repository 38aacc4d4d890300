"""Process-wide counters and per-turn latency histograms, exposed in Prometheus text format.

Fed with the same events the callers get, so what `/metrics` reports is what callers saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from voice.core.events import ErrorEvent, ResponseDone, SessionEvent, SpeechStopped

BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
TIMINGS = (
    "vad_ms",
    "asr_ms",
    "llm_ttft_ms",
    "first_sentence_ms",
    "tts_ttfb_ms",
    "first_audio_ms",
    "overhead_ms",
)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(BUCKETS_MS):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.n += other.n


class Metrics:
    def __init__(self) -> None:
        self.sessions_active = 0
        self.sessions_total = 0
        self.sessions_rejected = 0
        self.turns = 0
        self.responses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.telephony_dropped: Counter[str] = Counter()
        """Carrier messages dropped as unusable, by kind (see docs/telephony.md)."""
        self.timings = {name: Histogram() for name in TIMINGS}

    def observe(self, event: SessionEvent) -> None:
        match event:
            case SpeechStopped():
                self.turns += 1
            case ResponseDone(status=status, timings=timings):
                self.responses[status] += 1
                for name, value in timings.as_dict().items():
                    if value is not None:
                        self.timings[name].observe(value)
            case ErrorEvent(code=code):
                self.errors[code] += 1
            case _:
                pass

    def snapshot(self) -> dict[str, Any]:
        """Every figure, as plain JSON-able data (what a worker publishes to its peers), copied:
        later observations do not change a snapshot taken before them."""
        return {
            "sessions_active": self.sessions_active,
            "sessions_total": self.sessions_total,
            "sessions_rejected": self.sessions_rejected,
            "turns": self.turns,
            "responses": dict(self.responses),
            "errors": dict(self.errors),
            "telephony_dropped": dict(self.telephony_dropped),
            "timings": {name: [list(h.counts), h.total, h.n] for name, h in self.timings.items()},
        }

    def combined(self, snapshots: Iterable[dict[str, Any]]) -> Metrics:
        """These figures plus the snapshots' (other workers'), as one server's."""
        total = Metrics()
        for part in (self.snapshot(), *snapshots):
            total.sessions_active += part["sessions_active"]
            total.sessions_total += part["sessions_total"]
            total.sessions_rejected += part["sessions_rejected"]
            total.turns += part["turns"]
            total.responses.update(part["responses"])
            total.errors.update(part["errors"])
            total.telephony_dropped.update(part["telephony_dropped"])
            for name, (counts, sum_ms, n) in part["timings"].items():
                if name in total.timings:
                    total.timings[name].add(Histogram(list(counts), sum_ms, n))
        return total

    def render(self) -> str:
        out = [
            "# HELP voice_sessions_active Sessions connected now.",
            "# TYPE voice_sessions_active gauge",
            f"voice_sessions_active {self.sessions_active}",
            "# HELP voice_sessions_total Sessions accepted since start.",
            "# TYPE voice_sessions_total counter",
            f"voice_sessions_total {self.sessions_total}",
            "# HELP voice_sessions_rejected_total Sessions refused at the admission limit.",
            "# TYPE voice_sessions_rejected_total counter",
            f"voice_sessions_rejected_total {self.sessions_rejected}",
            "# HELP voice_turns_total Caller turns sent to transcription.",
            "# TYPE voice_turns_total counter",
            f"voice_turns_total {self.turns}",
            "# HELP voice_responses_total Replies by how they ended.",
            "# TYPE voice_responses_total counter",
        ]
        out += [f'voice_responses_total{{status="{s}"}} {n}' for s, n in self.responses.items()]
        out += [
            "# HELP voice_errors_total Errors sent to callers, by code.",
            "# TYPE voice_errors_total counter",
        ]
        out += [f'voice_errors_total{{code="{c}"}} {n}' for c, n in self.errors.items()]
        out += [
            "# HELP voice_telephony_dropped_total Carrier messages dropped as unusable, by kind.",
            "# TYPE voice_telephony_dropped_total counter",
        ]
        out += [
            f'voice_telephony_dropped_total{{kind="{k}"}} {n}'
            for k, n in self.telephony_dropped.items()
        ]
        for name, hist in self.timings.items():
            metric = f"voice_turn_{name.removesuffix('_ms')}_milliseconds"
            out += [
                f"# HELP {metric} Per-turn {name} (see docs/protocol.md).",
                f"# TYPE {metric} histogram",
            ]
            cumulative = 0
            for bound, count in zip(BUCKETS_MS, hist.counts, strict=False):
                cumulative += count
                out.append(f'{metric}_bucket{{le="{bound}"}} {cumulative}')
            out.append(f'{metric}_bucket{{le="+Inf"}} {hist.n}')
            out.append(f"{metric}_sum {hist.total:.3f}")
            out.append(f"{metric}_count {hist.n}")
        return "\n".join(out) + "\n"
