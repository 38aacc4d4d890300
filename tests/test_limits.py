"""Per-caller limits over real sockets: a silent or too-long session is ended by the server
(a final event, close 1000) and a caller over the turn rate is refused, with nothing sent to
the gateway for what was refused."""

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.samples import recording
from tests.stack import stack
from tests.telephony_stack import telephony_stack
from tests.timing import MS


def billed(gateway):
    """Requests that cost the operator: ASR, chat, TTS (not the warm-up's model list)."""
    requests = gateway.requests
    return requests["transcribe"] + requests["chat"] + requests["speak"]


async def events_until_closed(ws, timeout_s):
    events = []
    async with asyncio.timeout(timeout_s):
        try:
            async for message in ws:
                if isinstance(message, str):
                    events.append(json.loads(message))
        except ConnectionClosed:
            pass
    return events


async def test_a_silent_session_is_ended_as_idle_and_the_gateway_sees_nothing():
    async with stack(limits={"idle_timeout_s": 0.5}) as (url, simulated):
        async with connect(url) as ws:
            events = await events_until_closed(ws, 10)
            assert ws.close_code == 1000 and ws.close_reason == "idle"
    assert events[0]["type"] == "session.created"
    assert events[-1]["type"] == "session.ended" and events[-1]["reason"] == "idle"
    assert "0.5 s" in events[-1]["message"]
    assert billed(simulated) == 0


async def test_a_session_past_its_length_is_ended_even_while_the_caller_talks():
    sample = recording("q01_what_time.wav")
    async with stack(limits={"max_session_s": 1.0}) as (url, _):
        async with connect(url) as ws:
            # The caller keeps sending audio (the sample, then silence) in real time.
            frame = sample.sample_rate * 20 // 1000 * 2
            pcm = sample.pcm + bytes(sample.sample_rate * 2 * 2)
            ended = None
            async with asyncio.timeout(10):
                for start in range(0, len(pcm), frame):
                    try:
                        await ws.send(pcm[start : start + frame])
                    except ConnectionClosed:
                        break
                    await asyncio.sleep(20 * MS)
                events = await events_until_closed(ws, 5)
                ended = [e for e in events if e["type"] == "session.ended"]
            assert ws.close_code == 1000 and ws.close_reason == "max_duration"
    assert ended and ended[0]["reason"] == "max_duration"


async def test_turns_over_the_rate_are_dropped_before_the_gateway():
    # Three utterances, sent faster than real time (the native protocol allows it): the
    # turn rate is counted on the server's clock, not the audio's.
    sample = recording("q01_what_time.wav")
    pause = bytes(sample.sample_rate * 2)  # a second of silence: three separate turns
    pcm = (sample.pcm + pause) * 3
    chunk = sample.sample_rate * 2 // 10  # 100 ms
    async with stack(limits={"max_turns_per_min": 1}) as (url, simulated):
        async with connect(url) as ws:
            for start in range(0, len(pcm), chunk):
                await ws.send(pcm[start : start + chunk])
            events = []
            async with asyncio.timeout(20):
                while not any(e["type"] == "response.done" for e in events):
                    message = await ws.recv()
                    if isinstance(message, str):
                        events.append(json.loads(message))
    refused = [e for e in events if e.get("code") == "rate_limited"]
    assert len(refused) == 2 and "over 1 turns a minute" in refused[0]["message"]
    # Nothing of the dropped turns reached the gateway, not even speculatively. (The first
    # turn's reply may ask twice: withdrawn by the second turn's speech, it is asked again.)
    assert simulated.requests["transcribe"] == 1 and simulated.requests["chat"] <= 2


async def test_a_carrier_stream_that_never_starts_is_closed_as_idle():
    async with telephony_stack(limits={"idle_timeout_s": 0.5}) as stack_:
        async with connect(stack_.ws + "/v1/twilio") as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            await events_until_closed(ws, 10)
            assert ws.close_code == 1000 and ws.close_reason == "idle"
        await stack_.until(lambda: stack_.metrics.sessions_active == 0, 5)
    assert billed(stack_.gateway) == 0


async def test_a_text_frame_over_the_cap_closes_1009_before_it_is_parsed():
    async with stack(server={"max_frame_bytes": 4096}) as (url, _):
        async with connect(url) as ws:
            json.loads(await ws.recv())  # session.created
            await ws.send("{" + " " * 5000 + "}")
            events = await events_until_closed(ws, 10)
            assert ws.close_code == 1009
    assert events[-1]["code"] == "frame_too_large" and "text frame" in events[-1]["message"]
