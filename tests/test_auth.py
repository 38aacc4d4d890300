"""Caller tokens: each refusal says which check failed, never the token; pins come through."""

import base64
import json
import time

import jwt
import pytest

from voice.app.auth import Pins, TokenVerifier, check_secret, mint
from voice.errors import ConfigError, Unauthorized

SECRET = "s" * 40
OTHER = "o" * 40


def refusal(token, secret=SECRET):
    with pytest.raises(Unauthorized) as caught:
        TokenVerifier(secret).verify(token)
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    if token:
        assert token not in caught.value.message and token not in repr(caught.value)
    return caught.value.message


def test_a_minted_token_verifies_with_its_subject_and_pins():
    pins = Pins(instructions="Be brief.", voice="nova", max_session_s=600, allow_update=False)
    caller = TokenVerifier(SECRET).verify(mint(SECRET, ttl_s=60, sub="user-42", pins=pins))
    assert caller.sub == "user-42"
    assert caller.pins == pins
    bare = TokenVerifier(SECRET).verify(mint(SECRET))
    assert bare.sub is None and bare.pins == Pins() and bare.pins.allow_update


def test_each_bad_token_is_refused_saying_why():
    now = time.time()
    assert "required" in refusal(None)
    assert "required" in refusal("")
    assert "expired" in refusal(mint(SECRET, ttl_s=60, now=now - 3600))
    early = jwt.encode({"exp": now + 3600, "nbf": now + 600}, SECRET, algorithm="HS256")
    assert "not valid yet" in refusal(early)
    assert "signature" in refusal(mint(OTHER))
    assert "exp" in refusal(jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"))
    assert "malformed" in refusal("not.a.jwt")
    assert "malformed" in refusal("x" * 10_000)
    bad_pins = jwt.encode({"exp": now + 60, "voice": {"colour": "red"}}, SECRET, algorithm="HS256")
    assert "voice" in refusal(bad_pins)


def test_an_unsigned_token_is_refused():
    # alg "none": the oldest JWT attack; only HS256 is accepted.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps({"exp": time.time() + 60}).encode())
    unsigned = f"{header.decode().rstrip('=')}.{body.decode().rstrip('=')}."
    assert "HS256" in refusal(unsigned) or "malformed" in refusal(unsigned)


def test_a_short_secret_is_refused_and_the_verifier_hides_it():
    with pytest.raises(ConfigError, match="at least 32"):
        check_secret("short")
    with pytest.raises(ConfigError):
        TokenVerifier("x" * 31)
    assert SECRET not in repr(TokenVerifier(SECRET))


def test_voice_token_prints_a_token_the_server_accepts():
    import os
    import subprocess
    import sys

    env = {**os.environ, "VOICE_AUTH_SECRET": SECRET}
    command = [sys.executable, "-m", "voice.cli", "token", "--sub", "ops", "--ttl", "60"]
    printed = subprocess.run(
        [*command, "--voice", "nova", "--no-update"], env=env, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    caller = TokenVerifier(SECRET).verify(printed.stdout.strip())
    assert caller.sub == "ops" and caller.pins.voice == "nova" and not caller.pins.allow_update
    env.pop("VOICE_AUTH_SECRET")
    missing = subprocess.run(command, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "VOICE_AUTH_SECRET" in missing.stderr


def test_a_network_address_needs_a_secret_or_an_explicit_opt_out():
    from voice.app.auth import carrier_routes_served, check_exposure
    from voice.config import Settings

    def settings(host, **auth):
        return Settings.model_validate({"server": {"host": host}, "auth": auth})

    check_exposure(settings("127.0.0.1"))
    check_exposure(settings("::1"))
    check_exposure(settings("localhost"))
    with pytest.raises(ConfigError, match="VOICE_AUTH_SECRET.*--no-auth"):
        check_exposure(settings("0.0.0.0"))
    with pytest.raises(ConfigError):
        check_exposure(settings("voice.example"))
    check_exposure(settings("0.0.0.0", secret=SECRET))
    check_exposure(settings("0.0.0.0", no_auth=True))
    assert carrier_routes_served(settings("127.0.0.1")) == {"twilio": True, "telnyx": True}
    exposed = Settings.model_validate(
        {"server": {"host": "0.0.0.0"}, "telephony": {"twilio_auth_token": "t"}}
    )
    assert carrier_routes_served(exposed) == {"twilio": True, "telnyx": False}
