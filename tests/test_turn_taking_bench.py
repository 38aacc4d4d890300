"""benchmarks/turn_taking.py end to end, on a tiny run: real server and gateway processes,
Twilio callers. It must tell a setting that cuts callers off at a pause from one that
waits, and print every figure; the figures' values are the benchmark's to report."""

import json
import subprocess
import sys

from tests.processes import ROOT

RUN_S = 180
"""Longest the tiny run may take (it plays about 15 s of recordings)."""
INSTANT = "asr_ms=0,ttft_ms=0,ms_per_token=0,tts_ttfb_ms=0"
"""A gateway this fast answers a turn ended at a pause before the caller speaks again."""


def test_a_tiny_run_reports_premature_replies_cut_offs_and_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    command = [
        sys.executable, "-m", "benchmarks.turn_taking",
        "--setting", "eager:SPECULATION=off,TURN_HANGOVER_MS=100",
        "--setting", "patient:SPECULATION=off,TURN_HANGOVER_MS=900",
        "--sweep", "fixed:TURN_HANGOVER_MS=100,900:SPECULATION=off",
        "--pauses", "p01_table_for.wav", "--questions", "q01_what_time.wav",
        "--barge-in-every", "1", "--latencies", INSTANT, "--max-minutes", "2",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_S)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    eager, patient = figures["settings"]
    assert (eager["setting"], patient["setting"]) == ("eager", "patient")
    assert eager["env"] == {"VOICE_SPECULATION": "off", "VOICE_TURN_HANGOVER_MS": "100"}
    # A 100 ms hangover ends the turn in the 450 ms pause, and the instant reply is heard
    # before the caller's last word; a 900 ms one waits the pause out.
    assert eager["premature"] == [1, 1] and eager["cut_offs"] == [1, 1]
    assert patient["premature"] == [0, 1] and patient["cut_offs"] == [0, 1]
    for row in (eager, patient):
        assert not row["errors"], row["errors"]
        assert row["v2v_p50"] > 0 and row["v2v_p95"] >= row["v2v_p50"]
        assert row["v2v_sound_p50"] > 0
        assert row["wait_p50"] > 0
        assert row["barge_ins"] == 1 and row["barge_in_stop_p50"] >= 0
        # One question: one transcription, one chat, the reply's two sentences spoken.
        assert row["requests_questions"] == "1.00/1.00/2.00"
    # The cut turn was transcribed twice: its first words, then the rest.
    assert eager["requests_pauses"].startswith("2.00/")
    assert patient["requests_pauses"].startswith("1.00/")
    (sweep,) = figures["sweeps"]
    assert sweep["variable"] == "VOICE_TURN_HANGOVER_MS"
    assert [p["premature"] for p in sweep["points"]] == [[1, 1], [0, 1]]

    printed = done.stdout
    for heading in (
        "v2v p50",
        "sound",
        "wait p50",
        "premature",
        "cut-offs",
        "req/turn",
        "barge-in",
    ):
        assert heading in printed
    assert "at a 5 % premature-reply budget: VOICE_TURN_HANGOVER_MS=900, waiting" in printed
    assert "at a 5 % cut-off budget: VOICE_TURN_HANGOVER_MS=900, waiting" in printed
    assert "2 servers;" in printed  # the sweep's settings were the reported ones: reused
