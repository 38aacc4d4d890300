"""SimulatedGateway: latencies honoured (lower bounds only), scripts cycle, faults, cleanup."""

import asyncio
import io
import json
import wave
from contextlib import aclosing

import numpy as np
import pytest
from pydantic import ValidationError

from tests.timing import MS, SCALE
from voice.core.dialog import ChatMessage
from voice.errors import (
    GatewayAuthError,
    GatewayBadRequest,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentRequired,
    RateLimited,
)
from voice.gateway.base import Gateway
from voice.gateway.simulated import (
    CHUNK_MS,
    SPEECH_RATE,
    Fault,
    SimulatedGateway,
    SimulationSettings,
)

EARLY = 2 * MS
"""asyncio may wake a timer up to a clock tick early: lower bounds allow for that much."""

FAST = SimulationSettings(
    asr_ms=30 * SCALE,
    ttft_ms=40 * SCALE,
    ms_per_token=5 * SCALE,
    tts_ttfb_ms=30 * SCALE,
    tts_rtf=0.1,
    speech_ms_per_char=20 * SCALE,
    transcripts=["first question", "second question"],
    replies=["One two three four.", "Five six."],
)
MESSAGES = [ChatMessage("user", "hi")]


def wav_bytes(seconds: float = 0.1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\0\0" * int(16_000 * seconds))
    return buf.getvalue()


def now() -> float:
    return asyncio.get_running_loop().time()


def with_faults(*faults: Fault) -> SimulatedGateway:
    return SimulatedGateway(FAST.model_copy(update={"faults": list(faults)}))


async def collect(stream):
    return [item async for item in stream]


async def until(condition, within_ms: float = 2000) -> None:
    """Poll ``condition`` (a counter has no event to wait on) until it holds."""
    async with asyncio.timeout(within_ms * MS):
        while True:
            if condition():
                return
            await asyncio.sleep(MS)


def test_it_is_a_gateway():
    simulated = SimulatedGateway()
    gateway: Gateway = simulated  # mypy checks the protocol here
    assert gateway is simulated
    assert simulated.settings == SimulationSettings()


def test_defaults_match_the_documented_latencies():
    s = SimulationSettings()
    assert (s.asr_ms, s.ttft_ms, s.ms_per_token, s.tts_ttfb_ms, s.tts_rtf) == (
        150,
        250,
        15,
        120,
        0.2,
    )
    assert s.transcripts[0].endswith("?")
    assert s.replies[0].count(". ") == 2


async def test_transcribe_waits_asr_ms_and_cycles_the_script():
    gateway = SimulatedGateway(FAST)
    start = now()
    first = await gateway.transcribe(wav_bytes())
    assert now() - start >= FAST.asr_ms / 1000 - EARLY
    rest = [await gateway.transcribe(wav_bytes()) for _ in range(2)]
    assert [first, *rest] == ["first question", "second question", "first question"]


async def test_transcribe_rejects_what_is_not_wav():
    with pytest.raises(GatewayBadRequest) as err:
        await SimulatedGateway(FAST).transcribe(b"not audio")
    assert err.value.status == 400


async def test_chat_streams_words_after_ttft_and_cycles_replies():
    gateway = SimulatedGateway(FAST)
    start = now()
    arrivals = []
    async for token in gateway.chat(MESSAGES):
        arrivals.append((now() - start, token))
    times, tokens = zip(*arrivals, strict=True)
    assert "".join(tokens) == "One two three four."
    assert tokens == ("One", " two", " three", " four.")
    assert times[0] >= FAST.ttft_ms / 1000 - EARLY
    last_due = (FAST.ttft_ms + 3 * FAST.ms_per_token) / 1000
    assert times[-1] >= last_due - EARLY
    assert list(times) == sorted(times)
    assert "".join(await collect(gateway.chat(MESSAGES))) == "Five six."
    assert "".join(await collect(gateway.chat(MESSAGES))) == "One two three four."


async def test_speak_streams_24khz_chunks_paced_faster_than_real_time():
    gateway = SimulatedGateway(FAST)
    text = "Hello there, friend."
    start = now()
    arrivals = []
    async for frame in gateway.speak(text):
        arrivals.append((now() - start, frame))
    times = [t for t, _ in arrivals]
    frames = [f for _, f in arrivals]
    assert times[0] >= FAST.tts_ttfb_ms / 1000 - EARLY
    compute = (len(frames) - 1) * CHUNK_MS / 1000 * FAST.tts_rtf
    assert times[-1] >= FAST.tts_ttfb_ms / 1000 + compute - EARLY
    assert all(f.sample_rate == SPEECH_RATE for f in frames)
    assert all(40 <= f.duration_ms <= 100 for f in frames[:-1])
    audio_ms = sum(f.duration_ms for f in frames)
    assert audio_ms == pytest.approx(len(text) * FAST.speech_ms_per_char, abs=0.1)
    # tts_rtf < 1: the whole sentence arrives well before it would finish playing.
    assert times[-1] < audio_ms / 1000


async def test_speech_is_loud_from_the_first_chunk_and_deterministic():
    gateway = SimulatedGateway(FAST)
    frames = await collect(gateway.speak("A sentence long enough for several chunks."))
    for frame in frames:
        samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float64)
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(samples**2)) / 32768)
        assert rms_dbfs > -25, "every chunk must read as speech to an onset detector"
    again = await collect(gateway.speak("A sentence long enough for several chunks."))
    assert [f.pcm for f in again] == [f.pcm for f in frames]


async def test_models_lists_the_configured_ids():
    assert await SimulatedGateway(FAST).models() == ["whisper-1", "gpt-4o-mini", "tts-1"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, GatewayBadRequest),
        (401, GatewayAuthError),
        (402, PaymentRequired),
        (429, RateLimited),
        (500, GatewayUnavailable),
        (503, GatewayUnavailable),
        (504, GatewayTimeout),
    ],
)
async def test_status_faults_raise_the_mapped_error(status, error):
    gateway = with_faults(Fault(route="transcribe", kind="status", status=status))
    with pytest.raises(error) as err:
        await gateway.transcribe(wav_bytes())
    assert err.value.status == status
    assert err.value.route == "/v1/audio/transcriptions"


async def test_payment_required_carries_an_x402_challenge():
    gateway = with_faults(Fault(route="chat", kind="status", status=402))
    with pytest.raises(PaymentRequired) as err:
        await collect(gateway.chat(MESSAGES))
    challenge = json.loads(err.value.challenge)
    assert challenge["x402Version"] == 1
    assert challenge["accepts"][0]["resource"] == "/v1/chat/completions"


async def test_rate_limit_carries_retry_after():
    gateway = with_faults(Fault(route="speak", kind="status", status=429, retry_after=2.5))
    with pytest.raises(RateLimited) as err:
        await collect(gateway.speak("hi"))
    assert err.value.retry_after == 2.5


async def test_a_fault_hits_count_requests_on_its_route_only():
    gateway = with_faults(Fault(route="transcribe", kind="status", status=503, count=2))
    assert await gateway.models()
    for _ in range(2):
        with pytest.raises(GatewayUnavailable):
            await gateway.transcribe(wav_bytes())
    assert await gateway.transcribe(wav_bytes()) == "first question"


async def test_a_fault_with_count_minus_one_hits_every_request():
    gateway = with_faults(Fault(route="models", kind="status", status=500, count=-1))
    for _ in range(3):
        with pytest.raises(GatewayUnavailable):
            await gateway.models()


async def test_hang_waits_until_cancelled():
    gateway = with_faults(Fault(route="transcribe", kind="hang"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(50 * MS):
            await gateway.transcribe(wav_bytes())
    assert gateway.in_flight["transcribe"] == 0


async def test_hang_mid_stream_after_chunks():
    gateway = with_faults(Fault(route="chat", kind="hang", after_chunks=2))
    received = []

    async def consume():
        async for token in gateway.chat(MESSAGES):
            received.append(token)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(200 * MS):
            await consume()
    assert received == ["One", " two"]
    assert gateway.in_flight["chat"] == 0


@pytest.mark.parametrize("route", ["chat", "speak"])
async def test_drop_fails_the_stream_after_chunks(route):
    gateway = with_faults(Fault(route=route, kind="drop", after_chunks=2))
    stream = gateway.chat(MESSAGES) if route == "chat" else gateway.speak("a longer sentence")
    received = []
    with pytest.raises(GatewayUnavailable, match="stream dropped"):
        async for item in stream:
            received.append(item)
    assert len(received) == 2
    assert gateway.in_flight[route] == 0


async def test_drop_set_past_the_end_still_fires():
    gateway = with_faults(Fault(route="chat", kind="drop", after_chunks=99))
    received = []
    with pytest.raises(GatewayUnavailable):
        async for token in gateway.chat(MESSAGES):
            received.append(token)
    assert "".join(received) == "One two three four."


@pytest.mark.parametrize(
    "fault",
    [
        {"route": "transcribe", "kind": "drop"},
        {"route": "models", "kind": "hang", "after_chunks": 1},
        {"route": "chat", "kind": "status", "after_chunks": 1},
        {"route": "chat", "kind": "status", "status": 200},
        {"route": "chat", "kind": "hang", "count": 0},
        {"route": "tts", "kind": "hang"},
    ],
)
def test_faults_that_cannot_happen_are_rejected(fault):
    with pytest.raises(ValidationError):
        Fault.model_validate(fault)


@pytest.mark.parametrize("route", ["chat", "speak"])
async def test_cancelling_the_consumer_closes_the_stream(route):
    slow = FAST.model_copy(update={"ms_per_token": 50 * SCALE, "tts_rtf": 1.0})
    gateway = SimulatedGateway(slow)
    received = []

    async def consume():
        stream = gateway.chat(MESSAGES) if route == "chat" else gateway.speak("a long sentence")
        async for item in stream:
            received.append(item)

    task = asyncio.create_task(consume())
    await until(lambda: received)
    assert gateway.in_flight[route] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gateway.in_flight[route] == 0
    assert gateway.requests[route] == 1


async def test_closing_a_stream_early_closes_it():
    gateway = SimulatedGateway(FAST)
    async with aclosing(gateway.speak("a long sentence to cut short")) as frames:
        async for _ in frames:
            assert gateway.in_flight["speak"] == 1
            break
    assert gateway.in_flight["speak"] == 0


async def test_counters_count_requests_and_open_ones():
    gateway = SimulatedGateway(FAST)
    pending = asyncio.create_task(gateway.transcribe(wav_bytes()))
    await until(lambda: gateway.in_flight["transcribe"] == 1)
    await gateway.models()
    await pending
    assert gateway.requests == {"transcribe": 1, "chat": 0, "speak": 0, "models": 1}
    assert gateway.in_flight == {"transcribe": 0, "chat": 0, "speak": 0, "models": 0}


async def test_update_applies_from_the_next_request_and_restarts_scripts():
    gateway = SimulatedGateway(FAST)
    assert await gateway.transcribe(wav_bytes()) == "first question"
    running = gateway.chat(MESSAGES)
    first = await anext(running)
    gateway.update(
        FAST.model_copy(
            update={
                "replies": ["Changed."],
                "faults": [Fault(route="transcribe", kind="status", status=503)],
            }
        )
    )
    rest = [token async for token in running]
    assert first + "".join(rest) == "One two three four."
    assert "".join(await collect(gateway.chat(MESSAGES))) == "Changed."
    with pytest.raises(GatewayUnavailable):
        await gateway.transcribe(wav_bytes())
    assert await gateway.transcribe(wav_bytes()) == "first question"
