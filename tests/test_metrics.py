"""Metrics: each app's own figures in one process; every worker's, shared through
prometheus_client's multiprocess files, across processes."""

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from voice.app.metrics import MULTIPROC_DIR, TIMINGS, Metrics, SharedMetrics
from voice.core.events import ErrorEvent, ResponseDone, SpeechStopped, TurnTimings

ROOT = Path(__file__).resolve().parent.parent


def samples(text):
    """``{"name{labels}": value}`` of a Prometheus text page."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def overhead(ms):
    """Timings whose overhead is ``ms`` (every stage took no time)."""
    return TurnTimings(vad_ms=0, asr_ms=0, first_sentence_ms=0, tts_ttfb_ms=0, first_audio_ms=ms)


def test_each_app_counts_only_its_own():
    first, second = Metrics(), Metrics()
    first.session_started()
    first.session_started()
    first.session_ended()
    second.session_refused()
    assert (first.sessions_active, first.sessions_total, first.sessions_rejected) == (1, 2, 0)
    assert (second.sessions_active, second.sessions_total, second.sessions_rejected) == (0, 0, 1)


def test_events_are_counted_by_label_and_timed():
    metrics = Metrics()
    assert metrics.responses == {} and metrics.responses["completed"] == 0
    metrics.observe(SpeechStopped(at_ms=900, speech_end_ms=500, audio=b""))
    done = ResponseDone("resp_1", "hi", "completed", overhead(12.0))
    metrics.observe(done)
    metrics.observe(ResponseDone("resp_2", "", "interrupted", TurnTimings()))
    metrics.observe(ErrorEvent("gateway_error", "down"))
    metrics.telephony_dropped.update(("after_stop",))
    assert metrics.turns == 1
    assert metrics.responses == {"completed": 1, "interrupted": 1}
    assert "completed" in metrics.responses and "failed" not in metrics.responses
    assert metrics.errors == {"gateway_error": 1}
    assert metrics.telephony_dropped["after_stop"] == 1
    page = samples(metrics.render())
    assert page['voice_responses_total{status="completed"}'] == 1
    assert page['voice_turn_overhead_milliseconds_bucket{le="10.0"}'] == 0
    assert page['voice_turn_overhead_milliseconds_bucket{le="25.0"}'] == 1
    assert page["voice_turn_overhead_milliseconds_sum"] == 12.0
    assert page["voice_turn_llm_ttft_milliseconds_count"] == 0


def test_the_page_names_what_it_always_named():
    text = Metrics().render()
    for name, kind, help_text in (
        ("voice_sessions_active", "gauge", "Sessions connected now."),
        ("voice_sessions_total", "counter", "Sessions accepted since start."),
        ("voice_sessions_rejected_total", "counter", "Sessions refused at the admission limit."),
        ("voice_turns_total", "counter", "Caller turns sent to transcription."),
        ("voice_responses_total", "counter", "Replies by how they ended."),
        ("voice_errors_total", "counter", "Errors sent to callers, by code."),
        (
            "voice_telephony_dropped_total",
            "counter",
            "Carrier messages dropped as unusable, by kind.",
        ),
    ):
        assert f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n" in text
    for name in TIMINGS:
        metric = f"voice_turn_{name.removesuffix('_ms')}_milliseconds"
        assert f"# HELP {metric} Per-turn {name} (see docs/protocol.md).\n" in text
        assert f'{metric}_bucket{{le="10000.0"}} 0.0\n' in text
    assert "_created" not in text


WORKER = """
import sys
from voice.app.metrics import Metrics
from voice.core.events import ResponseDone, TurnTimings

started, overhead_ms = int(sys.argv[1]), float(sys.argv[2])
metrics = Metrics()
for _ in range(started):
    metrics.session_started()
metrics.session_ended()
metrics.observe(ResponseDone("resp_1", "", "completed", TurnTimings(0, 0, 0, 0, 0, overhead_ms)))
"""


def test_workers_figures_add_up_and_a_dead_workers_sessions_end_with_it(tmp_path):
    env = os.environ | {MULTIPROC_DIR: str(tmp_path)}
    pids = []
    for started, overhead_ms in ((3, 3.0), (4, 12.0)):
        command = [sys.executable, "-c", WORKER, str(started), str(overhead_ms)]
        worker = subprocess.Popen(command, env=env, cwd=ROOT)
        assert worker.wait(timeout=60) == 0
        pids.append(worker.pid)
    shared = SharedMetrics(tmp_path)
    # Both processes have ended, but nobody marked them dead: as if they still served.
    assert shared.sessions_active() == 2 + 3
    page = samples(shared.render())
    assert page["voice_sessions_active"] == 5 and page["voice_sessions_total"] == 7
    assert page['voice_responses_total{status="completed"}'] == 2
    assert page['voice_turn_overhead_milliseconds_bucket{le="5.0"}'] == 1
    assert page['voice_turn_overhead_milliseconds_bucket{le="25.0"}'] == 2
    assert page["voice_turn_overhead_milliseconds_sum"] == 15.0
    # One server's page reads as one process's: the same series, HELP and TYPE; only a
    # labelled counter nobody counted yet has nothing in the files, so no HELP either.
    headers = {line for line in Metrics().render().splitlines() if line.startswith("#")}
    labelled = ("voice_errors", "telephony", "speculative_requests")
    uncounted = {line for line in headers if any(name in line for name in labelled)}
    assert {line for line in shared.render().splitlines() if line.startswith("#")} == (
        headers - uncounted
    )
    mark_process_dead(pids[1], str(tmp_path))
    assert shared.sessions_active() == 2
    page = samples(shared.render())
    # What the dead one served stays counted; its live sessions do not.
    assert page["voice_sessions_active"] == 2 and page["voice_sessions_total"] == 7


def test_shared_metrics_only_in_a_worker(tmp_path):
    assert SharedMetrics.from_env({}) is None
    assert SharedMetrics.from_env({MULTIPROC_DIR: str(tmp_path)}) == SharedMetrics(tmp_path)
