"""Telnyx media streaming at /v1/telnyx: the second dialect over the shared telephony call,
in PCMU 8 kHz and L16 16 kHz, with frames arriving out of order."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.samples import text
from tests.stack import REPLY, SIMULATION
from tests.telephony_stack import speech, telephony_stack
from tests.test_twilio import pitch_hz
from voice.bench.carrier import TELNYX_L16, TELNYX_PCMU, CarrierCaller


async def test_pcmu_and_l16_calls_are_answered_in_their_own_codec():
    sample = "q02_going_to_rain.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with telephony_stack(simulation) as stack:
        url = stack.ws + "/v1/telnyx"

        async def call(carrier):
            # Every fifth frame arrives after the one that follows it.
            async with CarrierCaller(url, carrier, swap_every=5, keep_audio=True) as caller:
                await caller.say(speech(sample))
                # Replies end (status completed) once every mark has come back.
                await stack.until(lambda: stack.metrics.responses["completed"] == 2)
            return caller

        pcmu, l16 = await asyncio.gather(call(TELNYX_PCMU), call(TELNYX_L16))
        await stack.idle()
    assert stack.metrics.telephony_dropped == {}  # reordered, none late
    for caller, rate in ((pcmu, 8_000), (l16, 16_000)):
        assert caller.violations == []
        assert len(caller.echoed) == caller.far_end.mark_messages
        chunks = caller.far_end.chunks
        chunk_ms = stack.settings.telephony.chunk_ms
        sizes = [len(c.audio) // 2 for c in chunks]  # the first is short: sent at once
        assert sizes[0] < rate * chunk_ms // 1000 and set(sizes[1:-1]) == {rate * chunk_ms // 1000}
        audio = caller.far_end.played_audio()
        assert abs(len(audio) / 2 / rate - len(REPLY) * 0.040) < 0.3
        assert 100 < pitch_hz(audio, rate) < 170
    assert [chat[-1]["content"] for chat in stack.gateway.chats] == [text(sample)] * 2


async def test_an_unsupported_codec_closes_the_stream_with_a_reason():
    async with telephony_stack() as stack, connect(stack.ws + "/v1/telnyx") as ws:
        start = {
            "event": "start",
            "sequence_number": "1",
            "stream_id": "s1",
            "start": {"media_format": {"encoding": "OPUS", "sample_rate": 16000}},
        }
        await ws.send('{"event":"connected","version":"1.0.0"}')
        await ws.send(json.dumps(start))
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1003


async def test_the_streaming_auth_token_is_required_when_set():
    async with telephony_stack(telephony={"telnyx_stream_token": "tok"}) as stack:
        url = stack.ws + "/v1/telnyx"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"x-telnyx-streaming-auth-token": "no"}):
                pass
        assert refused.value.response.status_code == 403
        good = {"x-telnyx-streaming-auth-token": "tok"}
        async with CarrierCaller(url, TELNYX_PCMU, headers=good):
            await stack.until(lambda: stack.metrics.sessions_active == 1, 5)
