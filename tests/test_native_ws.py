"""The native WebSocket session over real sockets on 127.0.0.1, against the simulated gateway
served over real HTTP (voice → HttpGateway → uvicorn → SimulatedGateway).
"""

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.samples import recording, text, transcript_of
from tests.stack import REPLY, SIMULATION, stack
from tests.timing import MS
from voice.audio.frames import PcmFrame
from voice.audio.resample import resample
from voice.bench.native import call
from voice.config import TurnSettings
from voice.gateway.simulated import Fault


def joined(*names):
    frames = [recording(n) for n in names]
    return PcmFrame(b"".join(f.pcm for f in frames), frames[0].sample_rate)


@pytest.mark.parametrize("speculation", ["off", "full"])
async def test_a_sample_turn_end_to_end(speculation):
    sample = "q03_weather_paris.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with stack(simulation, turn={"speculation": speculation}) as (url, simulated):
        result = await call(url, recording(sample), timeout_s=30)
    kinds = [e["type"] for e in result.events]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert kinds.index("input.speech_started") < kinds.index("input.speech_stopped")
    assert result.transcript == text(sample)
    assert result.reply_text == REPLY
    (done,) = result.of_type("response.done")
    assert done["status"] == "completed" and done["text"] == REPLY
    assert result.of_type("response.audio.done")
    timings = done["timings"]
    assert None not in timings.values()
    # The reply is ~len(REPLY) * 40 ms of speech at 24 kHz PCM16.
    expected_s = len(REPLY) * 0.040
    assert abs(len(result.received) / 2 / 24_000 - expected_s) < 0.5
    if speculation == "off":
        assert timings["vad_ms"] == 500
        assert timings["asr_ms"] >= 50 and timings["tts_ttfb_ms"] >= 40
        # At the caller: no earlier than hangover + every simulated stage.
        assert result.voice_to_voice_ms >= 500 + 50 + 80 + 40
    else:
        # The stages ran during the pause: the turn ended when the words read finished
        # (a question: 250 ms, in frames), and what was left to wait for is all that counts.
        assert 260 <= timings["vad_ms"] < 900
        assert timings["asr_ms"] < 50
        assert done["speculation"]["committed"] == {"asr": 1, "llm": 1, "tts": 1}
        # At the caller: no earlier than the pause that started the requests + every stage.
        assert result.voice_to_voice_ms >= TurnSettings().pause_ms + 50 + 80 + 40
    assert sum(simulated.in_flight.values()) == 0


async def test_other_rates_in_and_out():
    sample = recording("q01_what_time.wav")
    at_8k = PcmFrame(resample(sample.pcm, 16_000, 8_000), 8_000)
    async with stack() as (url, _):
        result = await call(url, at_8k, output_rate=16_000, timeout_s=30)
    (updated,) = result.of_type("session.updated")
    assert updated["session"]["input_audio"]["sample_rate"] == 8_000
    assert updated["session"]["output_audio"]["sample_rate"] == 16_000
    assert result.of_type("response.done")[0]["status"] == "completed"
    assert abs(len(result.received) / 2 / 16_000 - len(REPLY) * 0.040) < 0.5


async def test_barge_in_over_the_socket_keeps_only_what_was_heard():
    # The interruption starts 2 s after the question ends: mid-reply (the reply is ~3 s).
    talk = joined("q01_what_time.wav", "i01_wait_stop.wav")
    # What an ASR hears: "Wait," alone at the pause inside "Wait, stop." (it trails off).
    transcripts = [text("q01_what_time.wav"), transcript_of("i01_wait_stop.wav")]
    simulation = SIMULATION.model_copy(update={"transcripts": transcripts})
    async with stack(simulation) as (url, simulated):
        result = await call(url, talk, responses=2, timeout_s=30)
    (interrupted,) = result.of_type("response.interrupted")
    heard = interrupted["heard_text"]
    assert heard and REPLY.startswith(heard) and len(heard) < len(REPLY)
    first, second = result.of_type("response.done")
    assert first["status"] == "interrupted" and first["text"] == heard
    assert second["status"] == "completed"
    kinds = [e["type"] for e in result.events]
    # The interruption is announced right after the caller's speech starts.
    started = [i for i, k in enumerate(kinds) if k == "input.speech_started"]
    assert kinds.index("response.interrupted") == started[1] + 1
    assert sum(simulated.in_flight.values()) == 0


async def test_gateway_error_is_reported_and_the_session_keeps_listening():
    simulation = SIMULATION.model_copy(
        update={"faults": [Fault(route="chat", kind="status", status=402)]}
    )
    talk = joined("q01_what_time.wav", "q02_going_to_rain.wav")
    async with stack(simulation) as (url, _):
        result = await call(url, talk, responses=2, timeout_s=30)
    (error,) = result.of_type("error")
    assert error["code"] == "payment_required"
    assert "402" in error["message"] or "payment" in error["message"].lower()
    first, second = result.of_type("response.done")
    assert first["status"] == "failed" and second["status"] == "completed"


async def test_secret_api_key_never_reaches_the_caller():
    secret = "sk-very-secret-0123456789"
    simulation = SIMULATION.model_copy(
        # Every request: a speculative transcription that failed is made again at the
        # turn's end, and a gateway refusing the key refuses it again.
        update={"faults": [Fault(route="transcribe", kind="status", status=401, count=-1)]}
    )
    async with stack(simulation, gateway={"api_key": secret}) as (url, _):
        result = await call(url, recording("q01_what_time.wav"), timeout_s=10, responses=1)
    assert result.of_type("error")[0]["code"] == "gateway_unauthorized"
    assert secret not in json.dumps(result.events)


async def test_caller_hanging_up_mid_reply_cancels_gateway_requests():
    slow = SIMULATION.model_copy(update={"ms_per_token": 300})
    async with stack(slow) as (url, simulated):
        task = asyncio.create_task(call(url, recording("q01_what_time.wav"), timeout_s=30))
        async with asyncio.timeout(20 * 1000 * MS):
            while simulated.in_flight["chat"] == 0:  # noqa: ASYNC110  # server-owned state
                await asyncio.sleep(10 * MS)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(5 * 1000 * MS):
            while sum(simulated.in_flight.values()):  # noqa: ASYNC110  # server-owned state
                await asyncio.sleep(10 * MS)


async def events_until(ws, kind):
    seen = []
    async with asyncio.timeout(5 * 1000 * MS):
        async for message in ws:
            if isinstance(message, str):
                seen.append(json.loads(message))
                if seen[-1]["type"] == kind:
                    return seen
    raise AssertionError(f"socket closed before {kind}: {seen}")


async def test_bad_messages_get_errors_and_the_session_goes_on():
    async with stack() as (url, _), connect(url) as ws:
        await events_until(ws, "session.created")
        await ws.send("{not json")
        assert (await events_until(ws, "error"))[-1]["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "dance"}))
        assert (await events_until(ws, "error"))[-1]["code"] == "unknown_event"
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": 3}}))
        assert (await events_until(ws, "error"))[-1]["code"] == "invalid_message"
        await ws.send(bytes(640))
        await ws.send(
            json.dumps(
                {"type": "session.update", "session": {"input_audio": {"sample_rate": 8000}}}
            )
        )
        assert (await events_until(ws, "error"))[-1]["code"] == "invalid_session_update"
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": "nova"}}))
        updated = (await events_until(ws, "session.updated"))[-1]
        assert updated["session"]["voice"] == "nova"


@pytest.mark.parametrize(
    ("send", "code", "close"),
    [
        (bytes(641), "unsupported_audio", 1003),
        (bytes(64 * 1024 + 2), "frame_too_large", 1009),
        (
            json.dumps(
                {"type": "session.update", "session": {"input_audio": {"sample_rate": 11025}}}
            ),
            "unsupported_audio",
            1003,
        ),
    ],
    ids=["odd-length", "oversize", "unsupported-rate"],
)
async def test_unusable_audio_is_explained_then_closed(send, code, close):
    async with stack() as (url, _), connect(url) as ws:
        await events_until(ws, "session.created")
        await ws.send(send)
        error = (await events_until(ws, "error"))[-1]
        assert error["code"] == code and error["message"]
        async with asyncio.timeout(5 * 1000 * MS):
            await ws.wait_closed()
        assert ws.close_code == close


async def test_sessions_past_the_limit_are_refused_and_others_go_on():
    async with stack(server={"max_sessions": 1}) as (url, _), connect(url) as first:
        await events_until(first, "session.created")
        async with connect(url) as second:
            error = (await events_until(second, "error"))[-1]
            assert error["code"] == "server_busy"
            await second.wait_closed()
            assert second.close_code == 1013
        await first.send(json.dumps({"type": "session.update", "session": {"voice": "x"}}))
        await events_until(first, "session.updated")
        http = url.replace("ws", "http", 1).removesuffix("/v1/session")
        async with httpx.AsyncClient(base_url=http) as client:
            assert (await client.get("/ready")).status_code == 503
            metrics = (await client.get("/metrics")).text
        assert "voice_sessions_active 1" in metrics
        assert "voice_sessions_rejected_total 1" in metrics


async def test_response_cancel_stops_the_reply_like_a_barge_in():
    sample = recording("q01_what_time.wav")
    async with stack() as (url, simulated), connect(url) as ws:
        await events_until(ws, "session.created")

        async def speak():
            step = 640
            for i in range(0, len(sample.pcm) + 100 * step, step):
                await ws.send(sample.pcm[i : i + step] or bytes(step))
                await asyncio.sleep(20 * MS)

        sender = asyncio.create_task(speak())
        try:
            async with asyncio.timeout(20 * 1000 * MS):
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):  # reply audio is playing: cancel it
                        await ws.send(json.dumps({"type": "response.cancel"}))
                        break
            events = await events_until(ws, "response.done")
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    (interrupted,) = [e for e in events if e["type"] == "response.interrupted"]
    assert REPLY.startswith(interrupted["heard_text"])
    assert events[-1]["status"] == "interrupted"
    assert sum(simulated.in_flight.values()) == 0
