"""`voice serve` and `voice gateway` on a port already in use, as a user runs them: they fail
at once with a line that says so, before anything slow starts (the app's startup, where the
gateway is warmed and the embedded models load), and never claim to be serving."""

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Listener:
    """A port that is taken, and counts the connections made to it (a stand-in gateway: the
    voice app's startup opens one to warm it up)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def taken():
    listener = Listener()
    yield listener
    listener.close()


def voice(*args):
    command = [sys.executable, "-m", "voice.cli", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [1, 2])
def test_voice_serve_on_a_port_in_use_fails_before_its_app_starts(taken, workers):
    # The port in use is also the gateway's: had the app started, its warm-up would have
    # connected to it.
    gateway = f"http://127.0.0.1:{taken.port}/v1"
    done = voice("serve", "--port", taken.port, "--gateway-url", gateway, "--workers", workers)
    assert done.returncode == 2, done.stderr
    assert f"voice: cannot listen on 127.0.0.1:{taken.port}: Address already in use" in done.stderr
    assert "voice serving" not in done.stderr and "Traceback" not in done.stderr
    assert taken.accepted == 0


def test_voice_serve_without_a_gateway_url_fails_before_loading_the_models(taken):
    done = voice("serve", "--port", taken.port)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{taken.port}" in done.stderr
    # Said before anything loads: the engines' own log lines, and ours, never came.
    assert "embedded local engines" not in done.stderr and "voice serving" not in done.stderr


@pytest.mark.parametrize("mode", [[], ["--simulate"]], ids=["local", "simulated"])
def test_voice_gateway_on_a_port_in_use_fails_at_once(taken, mode):
    done = voice("gateway", *mode, "--port", taken.port)
    # uvicorn's own bind failure, after the models loaded, exits 3 with its log line.
    assert done.returncode == 2, done.stderr
    assert f"voice: cannot listen on 127.0.0.1:{taken.port}" in done.stderr
    assert "gateway on http" not in done.stderr
