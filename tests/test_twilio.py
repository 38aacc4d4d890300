"""Twilio Media Streams at /v1/twilio over real sockets, against a protocol-faithful far end
(voice/bench/carrier.py) and the simulated gateway over real HTTP.
"""

import json

import numpy as np
import pytest

from tests.samples import manifest, text, transcript_of
from tests.stack import REPLY, SIMULATION
from tests.telephony_stack import onset_s, speech, telephony_stack
from voice.bench.carrier import TWILIO, CarrierCaller
from voice.core.events import DtmfReceived

MS_PER_CHAR = SIMULATION.speech_ms_per_char


def pitch_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency between 80 and 300 Hz: the simulated voice's fundamental."""
    samples = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > 80) & (freqs < 300)
    return float(freqs[band][np.argmax(spectrum[band])])


async def test_the_reply_arrives_as_8khz_mulaw_with_a_mark_after_every_chunk():
    sample = "q03_weather_paris.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with telephony_stack(simulation) as stack:
        async with CarrierCaller(stack.ws + "/v1/twilio", TWILIO, keep_audio=True) as caller:
            await caller.say(speech(sample))
            await stack.until(lambda: stack.metrics.responses["completed"] == 1)
            far = caller.far_end
        await stack.idle()
    assert caller.violations == []
    assert far.clears == [] and far.media_messages == far.mark_messages
    assert len(caller.echoed) == far.mark_messages  # every mark came back before the end
    lead_s, chunk_ms = stack.settings.telephony.lead_ms / 1000, stack.settings.telephony.chunk_ms
    assert lead_s - 0.1 < far.max_buffered_s <= lead_s + chunk_ms / 1000  # bounded, and used
    sizes = [len(chunk.audio) // 2 for chunk in far.chunks]
    # 8 kHz mu-law: a byte a sample. The first chunk leaves as soon as the first speech is
    # resampled, short of a chunk by the resampler's delay; the last is what is left.
    assert sizes[0] < 8 * chunk_ms and set(sizes[1:-1]) == {8 * chunk_ms}
    audio = far.played_audio()
    seconds = len(audio) / 2 / 8000
    assert abs(seconds - len(REPLY) * MS_PER_CHAR / 1000) < 0.3
    assert 100 < pitch_hz(audio, 8000) < 170  # the voice's 110-150 Hz, so truly 8 kHz
    assert stack.gateway.chats[0][-1] == {"role": "user", "content": text(sample)}
    # The turn was classified at 8 kHz and doubled once for ASR: a 16 kHz WAV holding the
    # speech, the pre-roll before it and the pause after it that started the transcription.
    (asr,) = stack.gateway.transcribed
    entry = manifest()[sample]
    spoken_s = entry["speech_end_s"] - entry["speech_start_s"]
    pause_s = stack.settings.turn.pause_ms / 1000
    assert asr.sample_rate == 16_000
    assert spoken_s + pause_s < asr.duration_ms / 1000 < spoken_s + pause_s + 0.3 + 0.2


async def test_barge_in_clears_within_200ms_and_the_dialog_keeps_only_what_played():
    question, interruption = "q01_what_time.wav", "i01_wait_stop.wav"
    simulation = SIMULATION.model_copy(
        update={"transcripts": [text(question), transcript_of(interruption)]}
    )
    async with telephony_stack(simulation) as stack:
        async with CarrierCaller(stack.ws + "/v1/twilio", TWILIO, keep_audio=True) as caller:
            far = caller.far_end
            await caller.say(speech(question))
            # Interrupt once a second of the reply has played at the far end.
            chunks = 1000 // stack.settings.telephony.chunk_ms
            assert await caller.wait_until(lambda: len(caller.echoed) >= chunks, 15)
            spoken = await caller.say(speech(interruption))
            onset = spoken + onset_s(interruption)
            assert await caller.wait_until(lambda: far.clears, 5)
            # The chat answering the whole interruption (one speculated at its pause, after
            # "Wait,", was cancelled when the caller went on).
            whole = {"role": "user", "content": text(interruption)}
            await stack.until(lambda: any(chat[-1] == whole for chat in stack.gateway.chats))
        await stack.idle()
    assert caller.violations == []
    assert far.clears[0] - onset <= 0.200, far.clears[0] - onset
    # What the model is told it said is what played before the clear, to a word.
    played_ms = len(far.played_audio(until=far.clears[0])) / 2 / 8000 * 1000
    (answer,) = [chat for chat in stack.gateway.chats if chat[-1] == whole]
    system, user, assistant, again = answer
    assert user == {"role": "user", "content": text(question)}
    assert again == {"role": "user", "content": text(interruption)}
    kept = assistant["content"]
    assert assistant["role"] == "assistant" and kept and REPLY.startswith(kept)
    assert len(kept) < len(REPLY)
    assert len(kept) * MS_PER_CHAR <= played_ms + MS_PER_CHAR
    assert played_ms - len(kept) * MS_PER_CHAR < 600  # at most the word being spoken
    assert stack.metrics.responses["interrupted"] == 1


async def test_bad_input_is_dropped_counted_logged_once_and_the_call_goes_on(caplog):
    sample = "q01_what_time.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with telephony_stack(simulation) as stack:
        caller = CarrierCaller(stack.ws + "/v1/twilio", TWILIO)
        await caller.connect()
        try:
            await caller.send(caller.media(bytes(160)))  # before start
            await caller.begin()
            bad = [
                "{not json",
                "{not json either",
                json.dumps({"event": "dance", "streamSid": caller.sid}),
                b"\x00\x01binary",
                caller.media("!!not base64!!"),
                caller.media(bytes(161)),
                caller.media(b""),
                caller.media(bytes(4000)),
                json.dumps({"event": "media", "streamSid": caller.sid, "media": {"chunk": "9"}}),
                json.dumps({"event": "mark", "streamSid": caller.sid, "mark": {"name": "x"}}),
                json.dumps({"event": "dtmf", "streamSid": caller.sid, "dtmf": {"digit": "xy"}}),
                caller.media(bytes(160), chunk=1),  # long past: too late to reorder
            ]
            for message in bad:
                await caller.send(message)
            await caller.say(speech(sample))
            await stack.until(lambda: stack.metrics.responses["completed"] == 1)
            await caller.stop()
            await caller.send(caller.media(bytes(160)))  # after stop
            await stack.until(lambda: stack.metrics.telephony_dropped["after_stop"] == 1, 5)
        finally:
            await caller.__aexit__()
        await stack.idle()
    dropped = stack.metrics.telephony_dropped
    assert dropped == {
        "before_start": 1,
        "bad_json": 2,
        "unknown_event": 1,
        "binary_frame": 1,
        "bad_base64": 1,
        "bad_payload_size": 3,
        "bad_message": 2,
        "unknown_mark": 1,
        "late_media": 1,
        "after_stop": 1,
    }
    assert caller.violations == []
    logged = [r.getMessage() for r in caplog.records if "dropped bad_json" in r.getMessage()]
    assert len(logged) == 1  # once per kind; the rest are only counted


@pytest.mark.parametrize("how", ["stop", "socket_drop"])
async def test_hanging_up_mid_reply_cancels_every_gateway_request(how):
    slow = SIMULATION.model_copy(update={"ms_per_token": 300})
    async with telephony_stack(slow) as stack:
        async with CarrierCaller(stack.ws + "/v1/twilio", TWILIO) as caller:
            await caller.say(speech("q01_what_time.wav"))
            await stack.until(lambda: stack.gateway.in_flight["chat"] == 1)
            if how == "stop":
                await caller.stop()
            else:
                caller._ws.transport.abort()
            await stack.idle()
        await stack.until(lambda: stack.metrics.sessions_active == 0, 5)


async def test_dtmf_reaches_the_session_and_the_interrupt_digit_stops_the_reply():
    async with telephony_stack(telephony={"interrupt_digit": "#"}) as stack:
        params = {"instructions": "Answer like a pirate."}
        async with CarrierCaller(stack.ws + "/v1/twilio", TWILIO, parameters=params) as caller:
            await caller.say(speech("q01_what_time.wav"))
            chunks = 500 // stack.settings.telephony.chunk_ms
            assert await caller.wait_until(lambda: len(caller.echoed) >= chunks, 15)
            await caller.dtmf("5")
            await stack.until(lambda: DtmfReceived("5") in stack.metrics.events, 5)
            assert caller.far_end.clears == []
            await caller.dtmf("#")
            assert await caller.wait_until(lambda: caller.far_end.clears, 5)
            await stack.until(lambda: stack.metrics.responses["interrupted"] == 1, 5)
        await stack.idle()
    assert DtmfReceived("#") in stack.metrics.events
    assert stack.gateway.chats[0][0] == {"role": "system", "content": "Answer like a pirate."}
    assert caller.violations == []
