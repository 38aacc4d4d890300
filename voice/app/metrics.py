"""Counters, gauges and per-turn latency histograms, through prometheus_client.

Fed with the same events the callers get, so what ``/metrics`` reports is what callers saw.

Each app's :class:`Metrics` live in a registry of their own, not prometheus_client's global
one: tests build many apps in one process, and each counts only its own calls. The workers
of ``voice serve --workers N`` run prometheus_client's multiprocess mode (the supervisor sets
:data:`MULTIPROC_DIR`): every value a worker changes is written at once to its own
memory-mapped files in that directory, and :class:`SharedMetrics` reads every worker's files
back as one server's figures. Counters and histograms of a worker that died stay counted
(what it served, it served); its live sessions gauge (``livesum``) goes with it, when the
supervisor calls ``mark_process_dead`` for it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from voice.core.events import ErrorEvent, ResponseDone, SessionEvent, SpeechStopped

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own variable: set, every metric of the process lives in files there
(it is read when prometheus_client is first imported, so it is set before a worker starts)."""

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
SESSIONS_ACTIVE = "voice_sessions_active"


class LabelCounts(Mapping[str, int]):
    """A counter by one label, and its figures in this process by label value: a mapping in
    which a value never counted reads 0, as in :class:`collections.Counter`."""

    def __init__(self, name: str, documentation: str, label: str, *, registry: CollectorRegistry):
        self._counter = Counter(name, documentation, [label], registry=registry)
        self._label = label

    def count(self, value: str) -> None:
        self._counter.labels(value).inc()

    def update(self, values: Iterable[str]) -> None:
        """Count each of ``values`` once (``Counter.update``'s meaning)."""
        for value in values:
            self.count(value)

    def _counts(self) -> dict[str, int]:
        return {
            sample.labels[self._label]: int(sample.value)
            for family in self._counter.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    def __getitem__(self, value: str) -> int:
        return self._counts().get(value, 0)

    def __contains__(self, value: object) -> bool:
        return value in self._counts()

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts())

    def __len__(self) -> int:
        return len(self._counts())

    def __repr__(self) -> str:
        return f"LabelCounts({self._counts()})"


class Metrics:
    """One app's figures, in its own registry (:attr:`registry`).

    The attributes read this process's figures; in a worker, :class:`SharedMetrics` reads
    the whole server's.
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        # In a worker, the gauge's files of a dead process are removed (mark_process_dead),
        # and the server's figure is the sum over the live ones.
        self._active = Gauge(
            SESSIONS_ACTIVE,
            "Sessions connected now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._total = Counter(
            "voice_sessions_total", "Sessions accepted since start.", registry=registry
        )
        self._rejected = Counter(
            "voice_sessions_rejected_total",
            "Sessions refused at the admission limit.",
            registry=registry,
        )
        self._turns = Counter(
            "voice_turns_total", "Caller turns sent to transcription.", registry=registry
        )
        self.responses = LabelCounts(
            "voice_responses_total", "Replies by how they ended.", "status", registry=registry
        )
        self.errors = LabelCounts(
            "voice_errors_total", "Errors sent to callers, by code.", "code", registry=registry
        )
        self.telephony_dropped = LabelCounts(
            "voice_telephony_dropped_total",
            "Carrier messages dropped as unusable, by kind.",
            "kind",
            registry=registry,
        )
        """Carrier messages dropped as unusable, by kind (see docs/telephony.md)."""
        self.speculations = Counter(
            "voice_speculations_total",
            "Pauses speculated on (VOICE_SPECULATION), counted with the reply that answered "
            "their turn.",
            registry=registry,
        )
        self.speculative_requests = Counter(
            "voice_speculative_requests_total",
            "Gateway requests made at a pause, by stage and by whether the reply used them "
            "(committed) or they were thrown away when the caller went on (cancelled).",
            ["stage", "outcome"],
            registry=registry,
        )
        self.timings = {
            name: Histogram(
                f"voice_turn_{name.removesuffix('_ms')}_milliseconds",
                f"Per-turn {name} (see docs/protocol.md).",
                buckets=BUCKETS_MS,
                registry=registry,
            )
            for name in TIMINGS
        }

    @property
    def sessions_active(self) -> int:
        return _read(self._active)

    @property
    def sessions_total(self) -> int:
        return _read(self._total)

    @property
    def sessions_rejected(self) -> int:
        return _read(self._rejected)

    @property
    def turns(self) -> int:
        return _read(self._turns)

    def session_started(self) -> None:
        self._active.inc()
        self._total.inc()

    def session_ended(self) -> None:
        self._active.dec()

    def session_refused(self) -> None:
        self._rejected.inc()

    def observe(self, event: SessionEvent) -> None:
        match event:
            case SpeechStopped():
                self._turns.inc()
            case ResponseDone(status=status, timings=timings, speculation=speculation):
                self.responses.count(status)
                if speculation.pauses:
                    self.speculations.inc(speculation.pauses)
                    for outcome, counts in (
                        ("committed", speculation.committed),
                        ("cancelled", speculation.cancelled),
                    ):
                        for stage, count in counts.items():
                            if count:
                                self.speculative_requests.labels(stage, outcome).inc(count)
                for name, value in timings.as_dict().items():
                    if value is not None:
                        self.timings[name].observe(value)
            case ErrorEvent(code=code):
                self.errors.count(code)
            case _:
                pass

    def render(self) -> str:
        """This process's figures, in Prometheus text format."""
        return render(self.registry)


@dataclass(frozen=True)
class SharedMetrics:
    """Every worker's figures, read from prometheus_client's multiprocess directory."""

    directory: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SharedMetrics | None:
        """The server's shared figures in a worker; None in a process that is not one."""
        return cls(Path(env[MULTIPROC_DIR])) if env.get(MULTIPROC_DIR) else None

    def sessions_active(self) -> int:
        """Sessions connected now, in every live worker.

        Admission asks once per call and ``/ready`` is polled: this reads only the live
        gauges' files (one small file per worker), not every metric's.
        """
        files = glob.glob(os.path.join(self.directory, "gauge_livesum_*.db"))
        return int(
            sum(
                sample.value
                for metric in MultiProcessCollector.merge(files)
                if metric.name == SESSIONS_ACTIVE
                for sample in metric.samples
            )
        )

    def render(self) -> str:
        """The whole server's figures, in Prometheus text format."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))
        return render(registry)


def _read(metric: Counter | Gauge) -> int:
    """This process's value of an unlabelled counter or gauge (through its own ``collect()``,
    which reads just that metric; the registry's ``get_sample_value`` collects them all)."""
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                return int(sample.value)
    return 0


class _WithoutCreated:
    """A registry's metrics without the ``*_created`` samples prometheus_client adds to
    counters and histograms: ``/metrics`` names the same series in one process as across
    workers (whose files keep no creation time). Filtered here rather than with
    ``disable_created_metrics()``, which would change every registry of a host app too."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def render(registry: CollectorRegistry) -> str:
    return generate_latest(_WithoutCreated(registry)).decode()
