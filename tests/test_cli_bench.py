"""`voice bench` as a user runs it, a process against a real server on the simulated gateway:
any folder or list of recordings in the common formats, a manifest only for what it adds
(roles, and the text that gives a word error rate), and progress that reads well in a log
as on a terminal."""

import asyncio
import json
import os
import pty
import shutil
import sys

import pytest

from tests.samples import SAMPLES, encode, recording
from tests.stack import app_stack
from voice.bench.stats import word_errors
from voice.gateway.simulated import DEFAULT_TRANSCRIPT

RUN_S = 120
"""Longest any bench here may run (each plays a few seconds of recordings)."""


async def voice_bench(url, *args, stderr=asyncio.subprocess.PIPE):
    """Run ``voice bench URL ARGS``; returns (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice.cli", "bench", url, "--think", "0", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=stderr,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), RUN_S)
    return process.returncode, out.decode(), (err or b"").decode()


def a_folder_of_recordings(folder):
    """Recordings as a user has them: no manifest, mixed formats, other files alongside."""
    folder.mkdir()
    encode(recording("q01_what_time.wav"), folder / "a_time.mp3")
    encode(recording("q02_going_to_rain.wav"), folder / "b_rain.flac")
    shutil.copy(SAMPLES / "q03_weather_paris.wav", folder / "c_paris.wav")
    (folder / "notes.txt").write_text("what I recorded, and when")
    return folder


async def test_a_plain_folder_and_a_list_of_files_are_played_without_a_manifest(tmp_path):
    folder = a_folder_of_recordings(tmp_path / "mine")
    report = tmp_path / "run.json"
    async with app_stack() as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        (status, out, err), (listed, _, listed_err) = await asyncio.gather(
            voice_bench(ws, "--samples", folder, "--turns", "3", "--json", report),
            voice_bench(ws, "--samples", folder / "b_rain.flac", folder / "a_time.mp3"),
        )
    assert status == 0, err
    turns = json.loads(report.read_text())["turns"]
    assert [t["recording"] for t in turns] == ["a_time.mp3", "b_rain.flac", "c_paris.wav"]
    assert all(t["voice_to_voice_ms"] and t["error"] is None for t in turns), turns
    assert "errors: none" in out
    # No manifest, no text: no word error rate to speak of.
    assert "word error rate" not in out
    assert listed == 0, listed_err
    assert "turns 3" in out


async def test_a_manifests_text_gives_the_word_error_rate(tmp_path):
    encode(recording("q01_what_time.wav"), tmp_path / "q.ogg")
    # The simulated gateway hears every turn as DEFAULT_TRANSCRIPT.
    entries = [{"file": "q.ogg", "text": DEFAULT_TRANSCRIPT.upper()}]
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": entries}))
    async with app_stack() as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        status, out, err = await voice_bench(ws, "--samples", tmp_path, "--turns", "1")
    assert status == 0, err
    words = len(DEFAULT_TRANSCRIPT.split())
    assert f"word error rate 0.0% ({words} words in 1 turns" in out


def test_word_errors_count_substitutions_deletions_and_insertions():
    assert word_errors("What's the weather?", "what's the Weather") == 0
    assert word_errors("what is the weather", "what's the weather") == 2
    assert word_errors("the weather in paris", "the weather in pairs") == 1
    assert word_errors("what time is it", "what time") == 2
    assert word_errors("hold on", "hold on a second") == 2


async def test_folders_and_files_that_hold_no_recording_are_one_line_and_status_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing to play")
    bad = tmp_path / "bad manifest"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"recordings": []}')
    cases = {
        tmp_path / "empty": "no recordings in it",
        tmp_path / "missing.mp3": "no such file",
        bad: "not a recordings manifest",
    }
    # No server: nothing is called before the recordings are read.
    runs = await asyncio.gather(
        *(voice_bench("ws://127.0.0.1:9/v1/session", "--samples", path) for path in cases)
    )
    for (path, words), (status, out, err) in zip(cases.items(), runs, strict=True):
        assert status == 2, (path, err)
        assert err.startswith("voice: ") and words in err and str(path) in err, err
        assert len(err.strip().splitlines()) == 1 and out == ""


def progress_lines(text):
    return [line for line in text.replace("\r", "\n").splitlines() if "sessions" in line]


@pytest.mark.parametrize("terminal", [False, True], ids=["log", "terminal"])
async def test_progress_repaints_only_on_a_terminal_and_writes_lines_to_a_log(terminal):
    args = ("--samples", SAMPLES / "q08_move_booking.wav", "--turns", "1")
    # A long recording; without speculation, as the simulated gateway would answer its
    # inner pause with the whole question (see benchmarks/twilio.py --short).
    async with app_stack(turn={"speculation": "off"}) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        if not terminal:
            status, out, err = await voice_bench(ws, *args)
        else:
            controller, terminal_end = pty.openpty()
            try:
                status, out, _ = await voice_bench(ws, *args, stderr=terminal_end)
                os.close(terminal_end)
                err = read_all(controller)
            finally:
                os.close(controller)
    assert status == 0, err
    # The recording alone is 8.8 s: ten seconds and more of progress.
    seconds = float(out.split("wall ")[1].split(" s")[0])
    assert seconds > 9
    if terminal:
        assert err.count("\r[") >= seconds - 2  # repainted every second
        assert err.endswith("\r\n")  # and the line ended before the table
    else:
        assert "\r" not in err
        lines = progress_lines(err)
        assert 2 <= len(lines) <= seconds / 5 + 1, err  # one every five seconds
        assert all(line.startswith("[") for line in lines)


def read_all(fd):
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed: Linux says EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()
