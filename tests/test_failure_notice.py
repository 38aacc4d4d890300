"""A turn that fails for good is followed by a recorded notice the caller hears, on every
transport; too many in a row end the session (voice/pipeline/notices.py). Real sockets, the
simulated gateway over HTTP failing on cue."""

import asyncio

import pytest

from tests.samples import recording, text
from tests.stack import SIMULATION, stack
from tests.telephony_stack import speech, telephony_stack
from tests.webrtc_stack import events, rtc_call, voiced_ms, webrtc_stack
from voice.app.factory import create_app
from voice.audio.frames import PcmFrame
from voice.audio.wav import save_wav
from voice.bench.carrier import TWILIO, CarrierCaller
from voice.bench.native import NativeCaller
from voice.config import Settings
from voice.errors import ConfigError
from voice.gateway.simulated import Fault
from voice.pipeline.notices import SOUNDS, load_notices

SAMPLE = "q01_what_time.wav"
NOTICES = load_notices(Settings().pipeline)
FAILURE_S = NOTICES.failure.duration_ms / 1000
CLOSING_S = NOTICES.closing.duration_ms / 1000


def failing(route, **update):
    faults = [Fault(route=route, kind="status", status=500, count=-1)]
    return SIMULATION.model_copy(update={"transcripts": [text(SAMPLE)], "faults": faults, **update})


NO_RETRY = {"max_retries": 0}


async def a_failed_turn(caller, *, timeout_s=30):
    since = len(caller.events)
    await caller.say(recording(SAMPLE))
    error = await caller.wait_for(
        lambda e: e.get("type") == "error", since=since, timeout_s=timeout_s
    )
    assert error is not None, caller.events
    return error


@pytest.mark.parametrize("route", ["chat", "transcribe", "speak"])
async def test_a_failed_turn_is_followed_by_the_notice_and_the_call_goes_on(route):
    async with stack(failing(route), gateway=NO_RETRY) as (url, simulated):
        async with NativeCaller(url, keep_audio=True) as caller:
            error = await a_failed_turn(caller)
            assert error["code"] == "gateway_unavailable"
            heard = await caller.wait_until(lambda: caller.ear.received_s >= FAILURE_S, 15)
            assert heard, f"heard {caller.ear.received_s:.2f} s"
            # What was heard is the shipped recording itself, at the native 24 kHz.
            if route != "speak":  # a failed speech request may have sent some audio first
                assert bytes(caller.received[:48_000]) == NOTICES.failure.pcm[:48_000]
            assert not caller.closed.is_set()


async def test_the_call_page_and_a_phone_hear_the_notice_too():
    async with telephony_stack(failing("chat"), gateway=NO_RETRY) as tel:
        async with CarrierCaller(tel.ws + "/v1/twilio", TWILIO, keep_audio=True) as caller:
            await caller.say(speech(SAMPLE))
            await tel.until(lambda: tel.metrics.responses["failed"] == 1)
            await caller.wait_until(lambda: caller.ear.received_s >= FAILURE_S - 0.1, 15)
            seconds = len(caller.far_end.played_audio()) / 2 / TWILIO.rate
        assert abs(seconds - FAILURE_S) < 0.3, seconds
    async with webrtc_stack(failing("chat"), gateway=NO_RETRY) as (url, _app, _gateway):
        async with rtc_call(url, recording(SAMPLE)) as call:
            await events(call, "error")
            # Most of the notice is voiced (its pauses are not); nothing else was said.
            await call.wait_until(lambda: voiced_ms(call) > 1500, 15)
            assert voiced_ms(call) > 1500


async def test_after_too_many_failed_turns_the_session_says_goodbye_and_ends():
    pipeline = {"max_consecutive_failures": 2}
    async with stack(failing("chat"), gateway=NO_RETRY, pipeline=pipeline) as (url, _):
        async with NativeCaller(url, keep_audio=True) as caller:
            await a_failed_turn(caller)
            await caller.wait_until(lambda: caller.ear.received_s >= FAILURE_S, 15)
            await asyncio.sleep(0.3)
            await a_failed_turn(caller)
            ended = await caller.wait_for(
                lambda e: e.get("type") == "session.ended", since=0, timeout_s=20
            )
            assert ended is not None and ended["reason"] == "gateway_failures"
            await asyncio.wait_for(caller.closed.wait(), 10)
            # The goodbye played to its end before the close.
            assert caller.ear.received_s >= FAILURE_S + CLOSING_S - 0.2
            assert caller._ws.close_code == 1000


async def test_the_notice_can_be_replaced_or_turned_off(tmp_path):
    tone = PcmFrame(bytes(range(256)) * 125, 16_000)  # one second, not silence
    path = tmp_path / "sorry.wav"
    save_wav(path, tone)
    async with stack(failing("chat"), gateway=NO_RETRY, pipeline={"failure_audio": str(path)}) as (
        url,
        _,
    ):
        async with NativeCaller(url, keep_audio=True) as caller:
            await a_failed_turn(caller)
            await caller.wait_until(lambda: caller.ear.received_s >= 1.0, 10)
            await asyncio.sleep(0.5)
            assert 0.95 < caller.ear.received_s < 1.1
    async with stack(failing("chat"), gateway=NO_RETRY, pipeline={"failure_audio": "off"}) as (
        url,
        _,
    ):
        async with NativeCaller(url, keep_audio=True) as caller:
            await a_failed_turn(caller)
            await asyncio.sleep(1.0)
            assert caller.ear.received_s == 0


@pytest.mark.parametrize(
    ("value", "says"), [("/no/such.wav", "cannot read"), (str(SOUNDS), "cannot read")]
)
def test_a_notice_that_cannot_be_read_stops_the_start_naming_the_setting(value, says):
    settings = Settings.from_env({"VOICE_FAILURE_AUDIO": value})
    with pytest.raises(ConfigError, match=f"VOICE_FAILURE_AUDIO: {says}"):
        create_app(settings)


@pytest.mark.local
def test_the_shipped_notices_say_what_they_should():
    from voice.audio.wav import wav_bytes
    from voice.gateway.engines import shared_engines
    from voice.pipeline.notices import TEXTS

    engines = shared_engines()
    for name, notice in (("failure", NOTICES.failure), ("closing", NOTICES.closing)):
        heard = engines.transcribe(wav_bytes(notice)).lower()
        words = [w.strip(".,'") for w in TEXTS[name].lower().split()]
        found = sum(w in heard for w in words)
        assert found >= len(words) - 1, (name, heard)


async def test_talking_over_the_goodbye_still_ends_the_session():
    pipeline = {"max_consecutive_failures": 1}
    async with stack(failing("chat"), gateway=NO_RETRY, pipeline=pipeline) as (url, _):
        async with NativeCaller(url, keep_audio=True) as caller:
            await a_failed_turn(caller)
            await caller.wait_until(lambda: caller.ear.received_s > 0.5, 10)
            await caller.say(recording(SAMPLE))  # "hello?" over the closing notice
            ended = await caller.wait_for(
                lambda e: e.get("type") == "session.ended", since=0, timeout_s=20
            )
            assert ended is not None and ended["reason"] == "gateway_failures"
            await asyncio.wait_for(caller.closed.wait(), 10)
            assert caller.ear.received_s < CLOSING_S - 0.5  # it was cut, and the call ended
