"""`voice --help` and each command's, as a newcomer reads them: what voice is, every option's
default, what serving with no gateway URL means, and never a secret from the environment."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "caller-token-from-the-environment"


def help_of(*command):
    env = {**os.environ, "VOICE_TOKEN": TOKEN, "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-m", "voice.cli", *command, "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout  # --token's default is read when it runs, not shown
    return " ".join(done.stdout.split())  # unwrapped, to find phrases across line breaks


def test_the_top_level_help_says_what_voice_is_and_how_to_start():
    text = help_of()
    assert "Realtime voice conversations on an OpenAI-compatible inference gateway" in text
    assert "runs offline, on embedded engines" in text
    assert "Start with `voice serve`" in text
    assert "the one place that reads arguments" not in text  # the module's own docstring


def test_every_command_shows_its_defaults():
    assert "--url URL the server's session URL (default: ws://127.0.0.1:8080/v1/session)" in (
        help_of("call")
    )
    gateway = help_of("gateway")
    assert "listen port (default: 8081)" in gateway
    assert "time to the first chat token, ms (default: 250)" in gateway
    bench = help_of("bench")
    for phrase in (
        "concurrent callers (default: 1)",
        "questions per caller (default: 3)",
        "(default: ws://127.0.0.1:8080/v1/session)",
        "default: samples/",
    ):
        assert phrase in bench, phrase
    # An option whose default comes from the environment names it, not "None".
    serve = help_of("serve")
    assert "(VOICE_PORT, default: 8080)" in serve and "(default: None)" not in serve


def test_serve_says_that_no_gateway_url_means_the_embedded_engines():
    text = help_of("serve")
    assert "Without one, the embedded local engines" in text
    assert "With no gateway URL the embedded local engines answer, offline" in text
