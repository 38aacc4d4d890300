"""SimulatedGateway: latencies honoured (lower bounds only), scripts cycle, faults, cleanup."""

import asyncio
import io
import json
import subprocess
import sys
import wave
from contextlib import aclosing, suppress

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from tests.processes import ROOT, free_port
from tests.samples import pause_manifest, pause_recording
from tests.timing import MS, SCALE
from voice.audio.frames import PcmFrame
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample
from voice.audio.upsample import Upsampler2x
from voice.audio.wav import wav_bytes as wav_bytes_of
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
    continuing,
    segments_heard,
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


# A transcript cut into segments where the caller pauses: an upload gets what it holds.

PAUSE_SET = sorted(pause_manifest())
SPECULATION_PAUSE_S = 0.2
"""Silence a server that transcribes at a pause has heard before it uploads."""


def cut_wav(frame: PcmFrame, end_s: float) -> bytes:
    """``frame`` up to ``end_s``, as a WAV: a server's upload of the caller so far."""
    return wav_bytes_of(
        PcmFrame(frame.pcm[: round(end_s * frame.sample_rate) * 2], frame.sample_rate)
    )


def over_a_phone_line(frame: PcmFrame) -> PcmFrame:
    """What a server hears of ``frame`` on a Twilio call, and uploads: the carrier's 8 kHz
    μ-law, decoded and doubled to 16 kHz as the session does."""
    narrow = mulaw_decode(mulaw_encode(resample(frame.pcm, frame.sample_rate, 8_000)))
    return PcmFrame(Upsampler2x().process(narrow), 16_000)


def segmented(name: str) -> SimulationSettings:
    return FAST.model_copy(update={"transcripts": [pause_manifest()[name]["transcript"]]})


@pytest.mark.parametrize("line", ["wideband", "phone"])
async def test_an_upload_cut_at_a_pause_gets_the_words_said_so_far(line):
    for name in PAUSE_SET:
        entry = pause_manifest()[name]
        audio = pause_recording(name)
        if line == "phone":
            audio = over_a_phone_line(audio)
        gateway = SimulatedGateway(segmented(name))
        segments = [s["text"] for s in entry["segments"]]
        for i, pause in enumerate(entry["pauses"]):
            upload = cut_wav(audio, pause["start_s"] + SPECULATION_PAUSE_S)
            assert await gateway.transcribe(upload) == " ".join(segments[: i + 1]), name
        whole = cut_wav(audio, entry["speech_end_s"] + 0.5)
        assert await gateway.transcribe(whole) == entry["text"], name


@pytest.mark.parametrize("line", ["wideband", "phone"])
async def test_an_upload_after_a_pause_continues_the_words_in_its_prompt(line):
    """A server that kept the words before a pause sends only the audio after it, with
    those words as its prompt: it gets the next segments, and nothing twice."""
    for name in PAUSE_SET:
        entry = pause_manifest()[name]
        audio = pause_recording(name)
        if line == "phone":
            audio = over_a_phone_line(audio)
        rate = audio.sample_rate
        gateway = SimulatedGateway(segmented(name))
        cuts = [p["start_s"] + SPECULATION_PAUSE_S for p in entry["pauses"]]
        cuts.append(entry["speech_end_s"] + 0.5)
        said, start = "", 0.0
        for end in cuts:
            part = PcmFrame(audio.pcm[round(start * rate) * 2 : round(end * rate) * 2], rate)
            words = await gateway.transcribe(wav_bytes_of(part), prompt=said or None)
            said, start = f"{said} {words}".strip(), end
        assert said == entry["text"], name


def test_continuing_a_plain_transcript_drops_the_words_of_the_prompt():
    assert continuing("Book a table for four, please.", "book a TABLE for") == "four, please."
    assert continuing("Book a table.", "something else") == "Book a table."
    assert continuing("Book a table.", None) == "Book a table."


async def test_a_segmented_entry_stays_current_until_an_upload_holds_all_of_it():
    name = "p10_money_to_but.wav"
    entry = pause_manifest()[name]
    audio = pause_recording(name)
    settings = FAST.model_copy(update={"transcripts": [entry["transcript"], "Thanks."]})
    gateway = SimulatedGateway(settings)
    first, second = (p["start_s"] + SPECULATION_PAUSE_S for p in entry["pauses"])
    heard = [
        await gateway.transcribe(cut_wav(audio, first)),
        await gateway.transcribe(cut_wav(audio, second)),
        await gateway.transcribe(cut_wav(audio, first)),  # a caller who started over
        await gateway.transcribe(cut_wav(audio, entry["duration_s"])),
        await gateway.transcribe(wav_bytes()),
        await gateway.transcribe(cut_wav(audio, first)),
    ]
    assert heard == [
        "I want to move some money to",
        "I want to move some money to my savings account, but",
        "I want to move some money to",
        entry["text"],
        "Thanks.",  # the next entry: a plain one answers any upload
        "I want to move some money to",  # the script cycled back
    ]


async def test_an_upload_again_after_the_whole_entry_was_heard_gets_the_same_words():
    """A server that threw an upload away (the caller went on after a short gap) sends the
    rest of the utterance again, prompted with the words it kept: it is heard as the same
    utterance, not as the script's next one."""
    name = "p10_money_to_but.wav"
    entry = pause_manifest()[name]
    audio = pause_recording(name)
    settings = FAST.model_copy(update={"transcripts": [entry["transcript"], "Thanks."]})
    gateway = SimulatedGateway(settings)
    first = entry["pauses"][0]["start_s"] + SPECULATION_PAUSE_S
    kept = await gateway.transcribe(cut_wav(audio, first))
    rate = audio.sample_rate
    rest = PcmFrame(audio.pcm[round(first * rate) * 2 :], rate)
    thrown_away = await gateway.transcribe(wav_bytes_of(rest), prompt=kept)
    again = await gateway.transcribe(wav_bytes_of(rest), prompt=kept)
    assert f"{kept} {thrown_away}" == f"{kept} {again}" == entry["text"]
    assert await gateway.transcribe(wav_bytes()) == "Thanks."  # then the script goes on


async def test_silence_gets_nothing_from_a_segmented_transcript():
    gateway = SimulatedGateway(FAST.model_copy(update={"transcripts": ["Book a table for|four."]}))
    assert await gateway.transcribe(wav_bytes(1.0)) == ""
    assert gateway.requests["transcribe"] == 1


def tone(seconds: float, level_dbfs: float = -20.0) -> np.ndarray:
    t = np.arange(round(16_000 * seconds)) / 16_000
    return 32768 * 10 ** (level_dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)


def pcm_of(*parts: np.ndarray) -> PcmFrame:
    return PcmFrame(np.concatenate(parts).astype("<i2").tobytes(), 16_000)


def test_segments_are_stretches_of_sound_apart_by_the_gap():
    def heard(frame, gap_ms=250.0, dbfs=-50.0):
        return segments_heard(frame, gap_ms=gap_ms, dbfs=dbfs)

    quiet = np.zeros
    words = pcm_of(tone(0.4), quiet(3200), tone(0.3))  # 0.2 s between: one segment
    assert heard(words) == 1
    assert heard(words, gap_ms=150) == 2
    paused = pcm_of(tone(0.4), quiet(4800), tone(0.3))  # 0.3 s between: two
    assert heard(paused) == 2
    assert heard(pcm_of(quiet(800), tone(0.02), quiet(8000), tone(0.5))) == 1  # a click
    assert heard(pcm_of(tone(0.5, -60.0))) == 0  # below the level: quiet
    assert heard(pcm_of(tone(0.5, -60.0)), dbfs=-70.0) == 1
    assert heard(PcmFrame(b"", 16_000)) == 0


def test_a_segmented_transcript_needs_words_in_every_segment():
    for bad in ("a||b", "|a", "a|", "a| |b"):
        with pytest.raises(ValidationError, match="empty segment"):
            SimulationSettings(transcripts=[bad])
    with pytest.raises(ValidationError):
        SimulationSettings(segment_gap_ms=0)


async def test_a_segmented_transcript_needs_a_readable_wav():
    gateway = SimulatedGateway(FAST.model_copy(update={"transcripts": ["a|b"]}))
    with pytest.raises(GatewayBadRequest, match="not a readable WAV file") as err:
        await gateway.transcribe(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert err.value.status == 400


def run_gateway(*flags):
    port = free_port()
    command = [sys.executable, "-m", "voice.cli", "gateway", "--simulate", "--port", str(port)]
    process = subprocess.Popen([*command, *flags], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    return process, f"http://127.0.0.1:{port}"


async def test_the_command_line_sets_the_scripts():
    process, url = run_gateway(
        "--transcript", "Book a table for|four.", "--transcript", "Thanks.",
        "--reply", "Sure, I can help you with that.", "--segment-gap-ms", "300",
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            await until_up(client, process)
            settings = (await client.get("/v1/simulate")).json()
            upload = cut_wav(pause_recording("p01_table_for.wav"), 1.9)
            files = {"file": ("a.wav", upload, "audio/wav")}
            heard = await client.post(
                "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}
            )
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert settings["transcripts"] == ["Book a table for|four.", "Thanks."]
    assert settings["replies"] == ["Sure, I can help you with that."]
    assert settings["segment_gap_ms"] == 300
    assert heard.json() == {"text": "Book a table for"}


def test_the_command_line_refuses_an_empty_segment_in_words():
    process, _ = run_gateway("--transcript", "Book a table for||four.")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "has an empty segment: put words on both sides of every '|'" in err
    assert "Traceback" not in err


async def until_up(client, process):
    async with asyncio.timeout(30):
        while True:
            assert process.poll() is None, process.stderr.read()
            with suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
