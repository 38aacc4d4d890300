"""Telephony settings: read from VOICE_* variables, validated, documented defaults."""

import pytest

from voice.config import Settings
from voice.errors import ConfigError


def test_defaults_keep_a_bounded_lead_and_interrupt_on_star():
    telephony = Settings().telephony
    assert telephony.public_url is None and telephony.twilio_auth_token is None
    assert telephony.lead_ms == 300 and telephony.chunk_ms == 60
    assert telephony.jitter_frames == 3 and telephony.interrupt_digit == "*"


def test_environment_fills_the_section_and_hides_the_token():
    env = {
        "VOICE_PUBLIC_URL": "https://voice.example.com/",
        "VOICE_TWILIO_AUTH_TOKEN": "tok-123",
        "VOICE_TELEPHONY_LEAD_MS": "500",
        "VOICE_TELEPHONY_CHUNK_MS": "40",
        "VOICE_TELEPHONY_JITTER_FRAMES": "0",
        "VOICE_DTMF_INTERRUPT_DIGIT": "#",
    }
    telephony = Settings.from_env(env).telephony
    assert telephony.public_url == "https://voice.example.com"
    assert telephony.twilio_auth_token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(telephony)
    assert (telephony.lead_ms, telephony.chunk_ms, telephony.jitter_frames) == (500, 40, 0)
    assert telephony.interrupt_digit == "#"


def test_the_interrupt_digit_can_be_turned_off():
    env = {"VOICE_DTMF_INTERRUPT_DIGIT": "none"}
    assert Settings.from_env(env).telephony.interrupt_digit is None


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("VOICE_PUBLIC_URL", "voice.example.com"),
        ("VOICE_PUBLIC_URL", "https://voice.example.com/?a=1"),
        ("VOICE_PUBLIC_URL", "https://user:pw@voice.example.com"),
        ("VOICE_DTMF_INTERRUPT_DIGIT", "12"),
        ("VOICE_DTMF_INTERRUPT_DIGIT", "x"),
        ("VOICE_TELEPHONY_LEAD_MS", "10"),
    ],
)
def test_unusable_values_are_refused_with_the_setting_named(var, value):
    with pytest.raises(ConfigError, match="telephony"):
        Settings.from_env({var: value})
