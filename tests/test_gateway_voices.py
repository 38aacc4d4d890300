"""Reference-audio voices: the speech body RunInfra takes, sent by HttpGateway over real HTTP
to the simulated gateway, and refused where a gateway cannot clone.
"""

import base64
import io
import logging
import wave
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.servers import serve_app
from tests.test_gateway_e2e import FAST
from voice.app.factory import build_gateway
from voice.config import GatewaySettings, Settings
from voice.errors import ConfigError
from voice.gateway.base import ReferenceVoice
from voice.gateway.http import HttpGateway
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import SimulatedGateway

REF_TEXT = "This is how I sound when I read aloud."


def a_wav(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\x10\x00" * int(16_000 * seconds))
    return buf.getvalue()


@asynccontextmanager
async def speaking(**settings):
    simulated = SimulatedGateway(FAST)
    async with serve_app(create_gateway_app(simulated)) as url:
        async with HttpGateway(GatewaySettings(url=url, max_retries=0, **settings)) as gateway:
            yield gateway, simulated, url


async def test_a_reference_recording_is_read_once_and_sent_as_a_data_url(tmp_path, caplog):
    path = tmp_path / "me.wav"
    path.write_bytes(a_wav())
    settings = {"tts_ref_audio": str(path), "tts_ref_text": REF_TEXT}
    with caplog.at_level(logging.INFO, logger="voice.gateway.simulated"):
        async with speaking(**settings) as (gateway, simulated, _):
            path.unlink()  # read at start: later requests do not need the file
            for sentence in ("One.", "Two."):
                assert [frame async for frame in gateway.speak(sentence)]
    expected = "data:audio/wav;base64," + base64.b64encode(a_wav()).decode()
    assert simulated.voices == [ReferenceVoice(expected, REF_TEXT, "Base")] * 2
    assert "reference-audio voice: task_type Base" in caplog.text


async def test_a_reference_url_is_passed_on_and_a_task_type_sent(caplog):
    url = "https://voices.example/me.wav?X-Amz-Signature=abc123"
    settings = {"tts_ref_audio": url, "tts_ref_text": REF_TEXT, "tts_task_type": "Clone"}
    async with speaking(**settings) as (gateway, simulated, _):
        assert [frame async for frame in gateway.speak("Hello.")]
        # A named voice asked for per request still wins over the configured reference.
        assert [frame async for frame in gateway.speak("Hello.", voice="nova")]
    assert simulated.voices == [ReferenceVoice(url, REF_TEXT, "Clone"), "nova"]


async def test_the_speech_route_checks_a_reference_voice():
    async with speaking() as (_, simulated, url):
        async with httpx.AsyncClient(base_url=url) as client:
            base = {"model": "tts-1", "input": "Hi."}
            for body, why in (
                ({"ref_audio": "https://v.example/a.wav"}, "ref_audio and ref_text go together"),
                (
                    {"ref_audio": "https://v.example/a.wav", "ref_text": "x", "voice": "nova"},
                    "not both",
                ),
                ({"ref_audio": "/etc/passwd", "ref_text": "x"}, "ref_audio must be an http(s)"),
                ({"ref_audio": "data:audio/wav;base64,@@", "ref_text": "x"}, "valid base64"),
            ):
                r = await client.post("/v1/audio/speech", json=base | body)
                assert r.status_code == 400 and why in r.json()["error"]["message"], body
            ok = {"ref_audio": "https://v.example/a.wav", "ref_text": "words"}
            r = await client.post("/v1/audio/speech", json=base | ok)
            assert r.status_code == 200 and r.content
    assert simulated.voices == [ReferenceVoice("https://v.example/a.wav", "words", "Base")]


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "cannot read"), (b"ID3 not a wav at all", "is not a WAV file")],
)
def test_a_reference_recording_that_cannot_be_used_is_a_start_up_error(tmp_path, content, why):
    path = tmp_path / "ref.wav"
    if content is not None:
        path.write_bytes(content)
    settings = GatewaySettings(url="http://127.0.0.1:9/v1", tts_ref_audio=str(path),
                               tts_ref_text=REF_TEXT)  # fmt: skip
    with pytest.raises(ConfigError, match=why):
        HttpGateway(settings)


def test_only_half_a_reference_voice_is_a_start_up_error():
    with pytest.raises(ConfigError, match="VOICE_TTS_REF_AUDIO is set but VOICE_TTS_REF_TEXT"):
        Settings.from_env({"VOICE_TTS_REF_AUDIO": "https://v.example/a.wav"})
    with pytest.raises(ConfigError, match="VOICE_TTS_REF_TEXT is set but VOICE_TTS_REF_AUDIO"):
        Settings.from_env({"VOICE_TTS_REF_TEXT": REF_TEXT})


def test_the_embedded_engines_refuse_a_reference_voice_at_start():
    env = {"VOICE_TTS_REF_AUDIO": "https://v.example/a.wav", "VOICE_TTS_REF_TEXT": REF_TEXT}
    with pytest.raises(ConfigError, match="the embedded engines do not"):
        build_gateway(Settings.from_env(env))
