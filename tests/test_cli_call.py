"""`voice call` as a user runs it, a process against a real server on the simulated gateway:
a recording in any common format gets its reply; a turn that fails, or a recording with
nothing to answer, ends the call as soon as that is known, saying why, with no reply file;
a file it cannot play is one line and status 2."""

import asyncio
import sys
import time

import numpy as np
import pytest

from tests.samples import SAMPLES, encode, recording
from tests.stack import REPLY, SIMULATION, app_stack
from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav, save_wav
from voice.bench.native import why_no_reply
from voice.gateway.simulated import Fault

TIMEOUT_S = 40
"""--timeout given to every call: far longer than any case here takes, so a call that ended
on its own did not wait for it (each says why; a wait for the timeout would say that)."""


async def voice_call(*args):
    """Run ``voice call ARGS``; returns (status, stdout, stderr, seconds it took)."""
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice.cli", "call", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S + 30)
    return process.returncode, out.decode(), err.decode(), time.monotonic() - began


async def test_an_mp3_recording_gets_its_reply_and_the_reply_is_saved(tmp_path):
    mp3 = encode(recording("q01_what_time.wav"), tmp_path / "question.mp3")
    saved = tmp_path / "reply.wav"
    async with app_stack() as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        status, out, err, _ = await voice_call(mp3, "--url", ws, "--save", saved)
    assert status == 0, err
    assert f"assistant: {REPLY}" in out and "voice-to-voice (heard here)" in out
    assert load_wav(saved).duration_ms > 1000


def silent_wav(path, seconds=2.0):
    save_wav(path, PcmFrame(bytes(int(16_000 * seconds) * 2), 16_000))
    return path


def noise_wav(path, seconds=0.12):
    """A cough: loud, long enough to open a turn (100 ms), too short to be one (200 ms), so
    discarded. (60 ms opened none once the VAD's tail gate stopped webrtcvad's own hangover
    from stretching it past 100 ms.)"""
    rng = np.random.default_rng(7)
    click = (rng.standard_normal(int(16_000 * seconds)) * 8000).astype("<i2").tobytes()
    save_wav(path, PcmFrame(bytes(16_000) + click + bytes(32_000), 16_000))
    return path


ASR_DOWN = SIMULATION.model_copy(
    update={"faults": [Fault(route="transcribe", kind="status", status=500, count=-1)]}
)
CHAT_REFUSED = SIMULATION.model_copy(
    update={"faults": [Fault(route="chat", kind="status", status=400, count=-1)]}
)
SPEAK_REFUSED = SIMULATION.model_copy(
    update={"faults": [Fault(route="speak", kind="status", status=400, count=-1)]}
)
NO_WORDS = SIMULATION.model_copy(update={"transcripts": [""]})


@pytest.mark.parametrize(
    ("simulation", "make", "words"),
    [
        (ASR_DOWN, None, "the turn failed (gateway_unavailable)"),
        (CHAT_REFUSED, None, "the reply failed (gateway_bad_request)"),
        (SPEAK_REFUSED, None, "the reply failed (gateway_bad_request)"),
        (NO_WORDS, None, "recognised no words"),
        (SIMULATION, silent_wav, "heard no speech in the recording"),
        (SIMULATION, noise_wav, "sounds too short to be speech"),
    ],
    ids=["asr-down", "chat-refused", "speech-refused", "no-words", "silence", "a-cough"],
)
async def test_a_call_that_can_get_no_reply_ends_when_that_is_known(
    tmp_path, simulation, make, words
):
    played = SAMPLES / "q01_what_time.wav" if make is None else make(tmp_path / "in.wav")
    saved = tmp_path / "reply.wav"
    async with app_stack(simulation) as (url, _):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        status, out, err, took = await voice_call(
            played, "--url", ws, "--save", saved, "--timeout", TIMEOUT_S
        )
    assert status == 1, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("voice: no reply: ") and words in last, err
    if simulation.faults:  # the gateway's own words, once, as the error came
        assert err.count("simulated 5" if simulation is ASR_DOWN else "simulated 4") == 1
    assert "timeout" not in err and "Traceback" not in err
    assert not saved.exists() and f"{saved} not written" in err
    # Ended on its own: the recording's length and a second or two, not the timeout.
    assert took < load_wav(played).duration_ms / 1000 + 15


async def test_a_file_it_cannot_play_is_one_line_and_status_2(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    cases = {
        tmp_path / "missing.wav": "no such file",
        SAMPLES: "is a folder, not an audio file",
        tmp_path / "notes.txt": "not an audio file voice can decode",
    }
    # No server: a file that cannot be played is refused before any call is made.
    runs = await asyncio.gather(
        *(voice_call(path, "--url", "ws://127.0.0.1:9/v1/session") for path in cases)
    )
    for (path, words), (status, out, err, _) in zip(cases.items(), runs, strict=True):
        assert status == 2, (path, err)
        assert err.startswith(f"voice: {path}") and words in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert out == ""


def event(kind, **fields):
    return {"type": kind, **fields}


def test_why_no_reply_waits_while_a_turn_is_open_and_names_the_end():
    started, stopped = event("input.speech_started"), event("input.speech_stopped")
    cough = event("input.speech_stopped", discarded=True)
    heard = event("input.transcript", text="what time is it")
    nothing = event("input.transcript", text=" ")
    replying, done = event("response.started"), event("response.done", status="failed")
    failed = event("error", code="gateway_unavailable", message="the gateway is down")

    def why(events, said_all=True, settled=True):
        return why_no_reply(events, said_all=said_all, settled=settled)

    # Still open: speech not ended, a turn not transcribed, words not yet answered.
    for events in ([started], [started, stopped], [started, stopped, heard]):
        assert why(events) is None
    # Nothing is known until the server heard all the audio, but for a failed turn...
    assert why([], settled=False) is None
    assert "heard no speech" in why([])
    assert "too short" in why([started, cough])
    assert "no words" in why([started, stopped, nothing])
    assert "gateway_unavailable" in why([started, stopped, failed], settled=False)
    # ...and that only once the caller has nothing more to say: the next turn may succeed.
    assert why([started, stopped, failed], said_all=False, settled=False) is None
    assert why([started, stopped, failed, started]) is None
    # A reply under way ends with its own response.done, even after an error.
    assert why([started, stopped, heard, replying, failed]) is None
    after = [started, stopped, heard, replying, failed, done]
    assert "gateway_unavailable" in why(after, settled=False)
