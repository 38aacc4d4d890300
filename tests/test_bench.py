"""`voice bench` end to end: a small run against a real server and the simulated gateway,
checked against the latencies the gateway was told to simulate."""

import json

from tests.stack import REPLY, SIMULATION, app_stack, stack
from voice.bench.report import table, write_html, write_json
from voice.bench.runner import run_bench
from voice.bench.workload import Workload, load_recordings
from voice.cli import main
from voice.config import TurnSettings

PAUSE_MS = TurnSettings().pause_ms
"""The earliest the turn's requests start: speculation sends them at this pause."""
FIRST_SENTENCE_TOKENS = len("Sure, here is the answer.".split())


async def test_small_bench_is_consistent_with_the_simulated_latencies(tmp_path):
    recordings = load_recordings()
    workload = Workload(sessions=2, turns=2, think_s=0.2, barge_in_every=2, ramp_per_s=4)
    snapshots = []
    async with stack() as (url, simulated):
        result = await run_bench(url, workload, recordings, progress=snapshots.append)
    floor = (
        PAUSE_MS
        + SIMULATION.asr_ms
        + SIMULATION.ttft_ms
        + (FIRST_SENTENCE_TOKENS - 1) * SIMULATION.ms_per_token
        + SIMULATION.tts_ttfb_ms
    )
    assert len(result.turns) == 4
    assert not result.errors()
    for turn in result.turns:
        assert turn.voice_to_voice_ms >= floor, turn
        assert turn.server["first_audio_ms"] is not None
        # The caller hears the reply after the server sent it, never before.
        assert turn.voice_to_voice_ms + 30 >= turn.server["first_audio_ms"] - turn.server["vad_ms"]
    barge_ins = [t for t in result.turns if t.barge_in_stop_ms is not None]
    assert len(barge_ins) == 2
    # The server acts after start_ms (100 ms) of voiced frames; its VAD may flag the onset
    # a frame or two before the energy onset the bench measures from, so allow for that.
    assert all(50 <= t.barge_in_stop_ms < 1000 for t in barge_ins), barge_ins
    assert snapshots and snapshots[-1].turns_done == 4
    assert sum(simulated.in_flight.values()) == 0

    write_json(result, tmp_path / "bench.json")
    write_html(result, tmp_path / "bench.html")
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["summary"]["voice_to_voice_ms"]["count"] == 4
    page = (tmp_path / "bench.html").read_text()
    assert "<svg" in page and "voice-to-voice p50" in page
    assert "voice_to_voice_ms (at the caller)" in table(result)
    assert REPLY  # the stack's scripted reply, heard in every turn


def test_bench_command_reports_a_server_that_is_not_there(tmp_path, capsys):
    code = main(["bench", "ws://127.0.0.1:9/v1/session", "--turns", "1", "--think", "0"])
    assert code == 1
    assert "connect_failed" in capsys.readouterr().out


async def test_small_bench_over_twilio_media_streams():
    workload = Workload(sessions=1, turns=2, think_s=0.2, barge_in_every=2)
    async with stack() as (url, simulated):
        twilio = url.removesuffix("/v1/session") + "/v1/twilio"
        result = await run_bench(twilio, workload, load_recordings())
    assert not result.errors(), result.errors()
    (plain, barged) = result.turns
    floor = PAUSE_MS + SIMULATION.asr_ms + SIMULATION.ttft_ms + SIMULATION.tts_ttfb_ms
    assert plain.voice_to_voice_ms >= floor
    assert plain.server is None  # Twilio's protocol carries no server timings
    assert 50 <= barged.barge_in_stop_ms < 1000
    assert sum(simulated.in_flight.values()) == 0


async def test_small_bench_over_webrtc():
    """An aiortc caller per session: Opus both ways, events on the data channel."""
    workload = Workload(sessions=2, turns=2, think_s=0.2, barge_in_every=2, ramp_per_s=4)
    async with app_stack(webrtc={"host_addresses": ["127.0.0.1"]}) as (url, simulated):
        result = await run_bench(url, workload, load_recordings())
    assert not result.errors(), result.errors()
    assert len(result.turns) == 4
    floor = PAUSE_MS + SIMULATION.asr_ms + SIMULATION.ttft_ms + SIMULATION.tts_ttfb_ms
    for turn in result.turns:
        assert turn.voice_to_voice_ms >= floor, turn
        # The data channel carries the server's timings, as the native protocol does, and
        # the reply is heard after the server sent it (Opus and the jitter buffer add more).
        assert turn.voice_to_voice_ms + 30 >= turn.server["first_audio_ms"] - turn.server["vad_ms"]
    barged = [t for t in result.turns if t.barge_in_stop_ms is not None]
    assert len(barged) == 2
    assert all(50 <= t.barge_in_stop_ms < 1000 for t in barged), barged
    assert sum(simulated.in_flight.values()) == 0


async def test_bench_over_webrtc_reports_a_refused_offer():
    workload = Workload(sessions=2, turns=1, think_s=0, ramp_per_s=50)
    async with app_stack(server={"max_sessions": 1}) as (url, _):
        result = await run_bench(url + "/v1/webrtc/offer", workload, load_recordings())
    assert result.session_errors == {"connect_failed: HTTP 503 server_busy": 1}
    assert len(result.turns) == 1 and result.turns[0].voice_to_voice_ms is not None


def test_the_table_warns_when_the_load_generator_fell_behind():
    from voice.bench.runner import BenchResult

    result = BenchResult(url="ws://x", workload=Workload().model_dump(), wall_s=1.0)
    assert "overloaded" not in table(result)
    result.generator_lag_ms = 480.0
    assert "ran up to 480 ms behind real time: it is overloaded" in table(result)
    assert result.summary()["generator_lag_ms"] == 480.0


async def test_a_line_that_breaks_mid_turn_is_counted_once():
    """The server goes away while a caller waits for its reply: one error, on that turn."""
    import asyncio

    workload = Workload(sessions=1, turns=2, think_s=0.2)
    slow = SIMULATION.model_copy(update={"asr_ms": 3000})
    async with stack(slow) as (url, _):
        bench = asyncio.create_task(run_bench(url, workload, load_recordings()))
        await asyncio.sleep(1.0)  # the first question is being spoken
    result = await bench
    errors = result.errors()
    assert sum(errors.values()) == 1, errors
    assert next(iter(errors)).startswith("connection_closed"), errors
