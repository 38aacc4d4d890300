"""Settings are read once from VOICE_* variables, validated, normalised and frozen."""

import logging
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from voice.app.factory import (
    LOCAL_HANGOVER_MIN_MS,
    LOCAL_PAUSE_MS,
    LOCAL_SPECULATION,
    for_embedded_engines,
)
from voice.config import (
    ENV_VARS,
    GatewaySettings,
    PipelineSettings,
    ServerSettings,
    Settings,
    parse_headers,
)
from voice.errors import ConfigError


def test_environment_fills_every_section_and_flags_override_it():
    env = {
        "VOICE_GATEWAY_URL": "https://gw.example/v1",
        "VOICE_GATEWAY_API_KEY": "sk-abc",
        "VOICE_LLM_MODEL": "llama",
        "VOICE_TURN_HANGOVER_MS": "700",
        "VOICE_PORT": "9000",
        "VOICE_GATEWAY_HEADERS": "X-Pipeline: p1; X-Payment: proof",
    }
    settings = Settings.from_env(env, server={"port": 9100, "host": None})
    assert settings.gateway.llm_model == "llama"
    assert settings.turn.hangover_ms == 700
    assert settings.server.port == 9100
    assert settings.server.host == "127.0.0.1"
    assert settings.gateway.extra_headers == {"X-Pipeline": "p1", "X-Payment": "proof"}
    assert settings.gateway.api_key.get_secret_value() == "sk-abc"


def test_every_setting_the_docs_name_is_read_from_the_environment():
    root = Path(__file__).resolve().parent.parent
    docs = (root / "README.md").read_text() + (root / "docs" / "protocol.md").read_text()
    read_elsewhere = {"VOICE_GATEWAY_HEADERS", "VOICE_WEBRTC_ICE_SERVERS", "VOICE_REINSTALL"}
    named = set(re.findall(r"VOICE_[A-Z0-9_]+", docs)) - read_elsewhere
    assert named - set(ENV_VARS) == set()
    held = Settings.from_env({"VOICE_TURN_HOLD_UNTIL_READY": "false"})
    assert held.turn.hold_until_ready is False


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://gw.example/v1", "https://gw.example/v1"),
        ("https://gw.example/v1/", "https://gw.example/v1"),
        ("https://gw.example", "https://gw.example/v1"),
        ("http://127.0.0.1:8081/", "http://127.0.0.1:8081/v1"),
        ("https://gw.example/openai/v1", "https://gw.example/openai/v1"),
        # RunInfra's pipeline-scoped base URL: the routes follow the pipeline id.
        ("https://api.runinfra.ai/v1/pipe_123", "https://api.runinfra.ai/v1/pipe_123"),
        ("https://api.runinfra.ai/v1/pipe_123/", "https://api.runinfra.ai/v1/pipe_123"),
        ("https://gw.example/v10", "https://gw.example/v10/v1"),
    ],
)
def test_gateway_url_is_normalised_with_a_log_line(given, expected, caplog):
    caplog.set_level(logging.INFO, "voice.config")
    assert Settings.from_env({"VOICE_GATEWAY_URL": given}).gateway.url == expected
    assert (given != expected) == ("normalised" in caplog.text)


@pytest.mark.parametrize("url", ["gw.example/v1", "ftp://gw/v1", "https://gw/v1?key=1"])
def test_unusable_gateway_urls_are_refused_with_the_reason(url):
    with pytest.raises(ConfigError, match="gateway.url"):
        Settings.from_env({"VOICE_GATEWAY_URL": url})


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@gw.example/v1", "https://hunter2@gw.example", "user:hunter2@gw"]
)
def test_gateway_url_with_credentials_is_refused_without_echoing_them(url, caplog):
    caplog.set_level(logging.DEBUG, "voice.config")
    with pytest.raises(ConfigError, match="VOICE_GATEWAY_API_KEY") as caught:
        Settings.from_env({"VOICE_GATEWAY_URL": url})
    assert "VOICE_GATEWAY_HEADERS" in str(caught.value)
    with pytest.raises(ValidationError) as invalid:
        GatewaySettings(url=url)
    assert "hunter2" not in str(caught.value) + str(invalid.value) + caplog.text


def test_bad_values_name_the_setting():
    with pytest.raises(ConfigError, match="server.port"):
        Settings.from_env({"VOICE_PORT": "eighty"})
    with pytest.raises(ConfigError, match="turn.vad_aggressiveness"):
        Settings.from_env({"VOICE_VAD_AGGRESSIVENESS": "7"})


def test_api_key_is_hidden_in_reprs_and_errors():
    settings = Settings.from_env({"VOICE_GATEWAY_API_KEY": "sk-secret-123"})
    assert "sk-secret-123" not in repr(settings)
    assert "sk-secret-123" not in str(settings.model_dump())
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"VOICE_GATEWAY_API_KEY": "sk-secret-123", "VOICE_PORT": "x"})
    assert "sk-secret-123" not in str(caught.value)


def test_extra_header_values_are_hidden_in_reprs():
    settings = Settings.from_env({"VOICE_GATEWAY_HEADERS": "X-Payment: proof-77c1"})
    assert settings.gateway.extra_headers == {"X-Payment": "proof-77c1"}
    for shown in (repr(settings), str(settings), repr(settings.gateway), str(settings.gateway)):
        assert "X-Payment" in shown and "proof-77c1" not in shown


@pytest.mark.parametrize(("sessions", "lookahead"), [(200, 2), (10, 1), (10, 3), (1, 8)])
def test_connection_pool_fits_every_session_replying_at_once(sessions, lookahead):
    # A replying session holds one chat stream and up to lookahead + 1 speech streams.
    env = {"VOICE_MAX_SESSIONS": str(sessions), "VOICE_TTS_LOOKAHEAD": str(lookahead)}
    assert Settings.from_env(env).gateway.max_connections == sessions * (lookahead + 2)
    sections = Settings(
        gateway=GatewaySettings(url="http://gw/v1"),
        server=ServerSettings(max_sessions=sessions),
        pipeline=PipelineSettings(tts_lookahead=lookahead),
    )
    assert sections.gateway.max_connections == sessions * (lookahead + 2)
    assert sections.gateway.url == "http://gw/v1"


def test_an_explicit_connection_pool_size_wins():
    env = {"VOICE_MAX_SESSIONS": "10", "VOICE_GATEWAY_MAX_CONNECTIONS": "7"}
    assert Settings.from_env(env).gateway.max_connections == 7
    given = Settings(gateway=GatewaySettings(max_connections=7), server={"max_sessions": 10})
    assert given.gateway.max_connections == 7
    with pytest.raises(ConfigError, match="gateway.max_connections"):
        Settings.from_env({"VOICE_GATEWAY_MAX_CONNECTIONS": "0"})
    assert Settings().gateway.max_connections == GatewaySettings().max_connections == 800


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        Settings().server.port = 1  # type: ignore[misc]


def test_header_spec_must_be_name_colon_value():
    assert parse_headers("A: 1\nB: two") == {"A": "1", "B": "two"}
    with pytest.raises(ConfigError, match="Name: value"):
        parse_headers("no-colon-here")


def test_the_seeds_gateway_settings_are_read_from_the_environment():
    env = {
        "VOICE_GATEWAY_RECEIPT_HEADERS": "X-Receipt, X-RunInfra-Idempotent-Replay",
        "VOICE_TTS_REF_AUDIO": "https://voices.example/me.wav?sig=s3cret",
        "VOICE_TTS_REF_TEXT": "This is how I sound.",
        "VOICE_TTS_TASK_TYPE": "Base",
        "VOICE_TTS_REF_FROM_CALLERS": "true",
        "VOICE_X402_PAYER": "wallets.lucid:pay",
        "VOICE_X402_MAX_PRICE": "10000",
        "VOICE_X402_TIMEOUT_S": "4",
    }
    gateway = Settings.from_env(env).gateway
    assert gateway.receipt_headers == ("x-receipt", "x-runinfra-idempotent-replay")
    assert gateway.tts_ref_from_callers and gateway.tts_ref_text == "This is how I sound."
    assert (gateway.x402_payer, gateway.x402_max_price, gateway.x402_timeout_s) == (
        "wallets.lucid:pay",
        10000,
        4.0,
    )
    assert "s3cret" not in repr(gateway)  # a pre-signed reference URL is a credential


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"VOICE_X402_PAYER": "wallets.lucid:pay"}, "VOICE_X402_MAX_PRICE is not"),
        ({"VOICE_X402_PAYER": "wallets/lucid.py", "VOICE_X402_MAX_PRICE": "1"}, "module:function"),
        ({"VOICE_X402_MAX_PRICE": "-1"}, "x402_max_price"),
        ({"VOICE_GATEWAY_RECEIPT_HEADERS": "X Receipt"}, "HTTP header names"),
        ({"VOICE_TTS_TASK_TYPE": "Base; rm"}, "tts_task_type"),
    ],
)
def test_the_seeds_gateway_settings_refuse_what_cannot_work(env, why):
    with pytest.raises(ConfigError, match=why):
        Settings.from_env(env)


def test_the_embedded_engines_wait_longer_before_ending_a_turn_unless_told_otherwise():
    assert Settings.from_env({}).turn.hangover_min_ms == 250
    local = for_embedded_engines(Settings.from_env({}))
    assert local.turn.hangover_min_ms == LOCAL_HANGOVER_MIN_MS == 600
    assert local.turn.hangover_max_ms == 900
    chosen = Settings.from_env({"VOICE_TURN_HANGOVER_MIN_MS": "300"})
    assert for_embedded_engines(chosen).turn.hangover_min_ms == 300
    low_ceiling = Settings.from_env({"VOICE_TURN_HANGOVER_MAX_MS": "400"})
    assert for_embedded_engines(low_ceiling).turn.hangover_min_ms == 400


def test_the_embedded_engines_speculate_on_the_chat_from_a_longer_pause_unless_told():
    gateway = Settings.from_env({}).turn
    assert (gateway.speculation, gateway.pause_ms, gateway.split_ms) == ("full", 60, 200)
    local = for_embedded_engines(Settings.from_env({})).turn
    assert (local.speculation, local.pause_ms) == (LOCAL_SPECULATION, LOCAL_PAUSE_MS)
    assert (local.speculation, local.pause_ms) == ("llm", 150)
    chosen = Settings.from_env({"VOICE_SPECULATION": "full", "VOICE_TURN_PAUSE_MS": "80"})
    kept = for_embedded_engines(chosen).turn
    assert (kept.speculation, kept.pause_ms) == ("full", 80)
    # A floor the operator set below the embedded pause keeps the pause valid.
    low_floor = Settings.from_env({"VOICE_TURN_HANGOVER_MIN_MS": "120"})
    assert for_embedded_engines(low_floor).turn.pause_ms == 60
