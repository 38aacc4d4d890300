"""The embedded engines, for real: no fakes, the weights the `local` extra installs.

The engines load once for the whole test session (a few seconds); every test here shares
them, as every session of a server does.
"""

import asyncio
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.samples import SAMPLES, recording, text
from tests.servers import serve_app
from tests.timing import MS
from voice.app.factory import build_gateway, create_app
from voice.audio.frames import PcmFrame
from voice.audio.wav import wav_bytes
from voice.bench import answers as judged
from voice.bench.native import call
from voice.config import Settings
from voice.core.dialog import ChatMessage
from voice.errors import ConfigError, GatewayBadRequest
from voice.gateway import weights
from voice.gateway.engines import MODEL_IDS, LocalEngines, _request, load_llm, shared_engines
from voice.gateway.local import LocalGateway
from voice.gateway.local_prompt import DEFAULT_INSTRUCTIONS, local_preamble
from voice.gateway.server import create_gateway_app

pytestmark = pytest.mark.local

ANSWERS = Path(__file__).resolve().parent.parent / "benchmarks" / "answers.json"
INSTRUCTIONS = "You are a helpful voice assistant. Answer in one or two short sentences."


@pytest.fixture(scope="session")
def engines() -> LocalEngines:
    return shared_engines()


@pytest.fixture
def gateway(engines) -> LocalGateway:
    return LocalGateway(engines=engines)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, ignoring case and punctuation."""

    def words(s: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", s.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def test_word_error_rate():
    assert word_error_rate("What time is it?", "what time is it") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5


@pytest.mark.parametrize(
    "sample",
    # One recording per synthetic voice family: hibari, piper, flite.
    ["q06_pharmacy_hours.wav", "q07_vegetarian_dinner.wav", "q04_remind_mother.wav"],
)
async def test_a_sample_transcribes_to_its_manifest_text(gateway, sample):
    heard = await gateway.transcribe((SAMPLES / sample).read_bytes())
    assert word_error_rate(text(sample), heard) <= 0.15, heard


async def test_audio_that_is_not_a_wav_is_a_bad_request(gateway):
    with pytest.raises(GatewayBadRequest):
        await gateway.transcribe(b"not a wav file")


async def test_chat_streams_a_non_empty_reply(gateway):
    messages = [ChatMessage("system", INSTRUCTIONS), ChatMessage("user", "What time is it?")]
    deltas = [d async for d in gateway.chat(messages)]
    assert len(deltas) > 1  # streamed, not one block
    assert "".join(deltas).strip()


async def test_closing_a_chat_early_frees_its_slot(gateway, engines):
    story = [ChatMessage("user", "Tell me a very long story about a dragon.")]
    # More early closes than there are slots: a generation left running would hold one.
    for _ in range(6):
        stream = gateway.chat(story)
        assert await anext(stream)
        await stream.aclose()
    reply = [d async for d in gateway.chat([ChatMessage("user", "Say hello.")])]
    assert "".join(reply).strip()


def test_chats_at_once_each_start_from_the_computed_preamble():
    # A server of its own, so that its slots hold only what loading put there. The second of
    # two chats at once (or the chat after a cut one, whose slot is still busy) lands on a
    # slot that has not served anyone yet; it used to compute the ~330-token preamble again.
    server = load_llm(threads=2, slots=2, context=1024)
    prompt_tokens: list[int] = []

    def ask(question: str) -> None:
        def sink(chunk: Mapping[str, Any]) -> bool:
            if "timings" in chunk:
                prompt_tokens.append(chunk["timings"]["prompt_n"])
            return False

        messages = [*local_preamble(), ChatMessage("user", question)]
        server.handle_chat_completions(_request(messages, 8, 0.0), sink)

    threads = [threading.Thread(target=ask, args=(q,)) for q in ("Say hi.", "Say bye.")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Only the question and the chat template's tokens around it are computed.
    assert len(prompt_tokens) == 2 and max(prompt_tokens) < 40, prompt_tokens


async def test_speech_is_audio_of_plausible_length(gateway):
    line = "Tomorrow afternoon looks mostly sunny. Temperatures should reach about twenty degrees."
    frames = [f async for f in gateway.speak(line)]
    assert {f.sample_rate for f in frames} == {24_000}
    assert len(frames) > 2  # streamed in chunks, not one block
    seconds = sum(f.num_samples for f in frames) / 24_000
    # Spoken English runs at about 12-18 characters a second.
    assert len(line) / 25 < seconds < len(line) / 8


async def test_speech_round_trips_through_recognition(gateway):
    line = "Please call me back tomorrow morning."
    frames = [f async for f in gateway.speak(line)]
    speech = PcmFrame(b"".join(f.pcm for f in frames), 24_000)
    assert word_error_rate(line, await gateway.transcribe(wav_bytes(speech))) <= 0.2


async def test_recognition_does_not_stall_the_event_loop(gateway):
    """Other sessions' audio runs on the loop while one session's ASR and TTS compute."""
    lags = []
    busy = True

    async def ticker():
        while busy:
            start = time.perf_counter()
            await asyncio.sleep(20 * MS)
            lags.append(time.perf_counter() - start - 20 * MS)

    task = asyncio.create_task(ticker())
    wav = (SAMPLES / "q09_cancelled_flight.wav").read_bytes()
    await asyncio.gather(gateway.transcribe(wav), gateway.transcribe(wav))
    async for _ in gateway.speak("One sentence here. And another one after it."):
        pass
    busy = False
    await task
    assert len(lags) > 20
    assert max(lags) < 100 * MS  # measured under 10 ms


async def test_a_reference_voice_is_a_clear_400_over_http(gateway):
    body = {
        "model": "hibari",
        "input": "Hello there.",
        "ref_audio": "https://voices.example/me.wav",
        "ref_text": "This is how I sound.",
    }
    async with serve_app(create_gateway_app(gateway)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/v1/audio/speech", json=body)
            named = await client.post("/v1/audio/speech", json={**body, "ref_audio": None,
                                                                   "ref_text": None})  # fmt: skip
    assert r.status_code == 400
    error = r.json()["error"]
    assert "not supported by the embedded engines" in error["message"]
    assert error["code"] == "gateway_bad_request"
    assert named.status_code == 200 and named.content  # the same request in its own voice


async def test_models_and_warm(gateway):
    assert await gateway.models() == list(MODEL_IDS)
    await gateway.warm()
    await gateway.aclose()  # leaves the shared engines loaded for everyone else
    assert await gateway.models() == list(MODEL_IDS)


@pytest.mark.parametrize("which", ["time", "date", "rain", "remind", "capital"])
async def test_the_embedded_model_answers_honestly(gateway, which):
    """Greedy decoding makes these replies the same every run: the judged answer set's
    questions whose honest answer a small model is most tempted to invent."""
    expected = next(e for e in judged.load(ANSWERS) if e.id == which)
    messages = [ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", expected.question)]
    reply = "".join([delta async for delta in gateway.chat(messages)])
    assert expected.problems(reply) == [], reply


def test_no_gateway_url_builds_the_local_gateway():
    assert isinstance(build_gateway(Settings()), LocalGateway)


def test_the_app_on_the_embedded_engines_waits_their_turn_floor():
    app = create_app(Settings.from_env({}))
    assert app.state.voice.settings.turn.hangover_min_ms == 600


def test_a_weight_file_that_changed_is_refused(monkeypatch):
    key = ("hibari-tts", "hibari/assets/vocab.json")
    monkeypatch.setitem(weights.WEIGHTS, key, "0" * 64)
    with pytest.raises(ConfigError, match="sha256"):
        weights.read_verified(*key)


def test_a_missing_extra_is_named(monkeypatch):
    real = weights.importlib.metadata.distribution

    def distribution(name):
        if name == "xllamacpp":
            raise weights.importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(weights.importlib.metadata, "distribution", distribution)
    with pytest.raises(ConfigError, match=r"missing: xllamacpp.*voice\[local\]"):
        LocalGateway()


async def test_a_whole_turn_over_the_websocket(engines):
    """voice serve with no gateway URL: a caller's question gets a spoken answer."""
    sample = "q01_what_time.wav"
    app = create_app(Settings(pipeline={"instructions": INSTRUCTIONS}))
    async with serve_app(app) as url:
        result = await call(url.replace("http", "ws", 1) + "/v1/session", recording(sample),
                            timeout_s=60)  # fmt: skip
    assert word_error_rate(text(sample), result.transcript) <= 0.15
    (done,) = result.of_type("response.done")
    assert done["status"] == "completed" and result.reply_text.strip()
    assert result.voice_to_voice_ms is not None
    reply = result.reply_frame()
    assert reply.num_samples > 24_000 // 2  # over half a second of speech
    heard = engines.transcribe(wav_bytes(reply))
    assert heard.strip(), "the reply audio should be recognisable speech"
