"""What benchmarks/turn_taking.py runs: the turn settings and sweeps it is given, the
recordings, and the processes (simulated or embedded-engine gateways, and a voice server
per setting that logs when it ends a turn).

    python -m benchmarks.turn_setup PORT GATEWAY_URL EVENTS    # one such server
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.overhead import free_port
from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav
from voice.bench.ear import sound_span
from voice.gateway.engines import ASR_MODEL, LLM_MODEL, TTS_MODEL

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
LATENCIES: dict[str, float] = {
    "asr_ms": 150,
    "ttft_ms": 200,
    "ms_per_token": 30,
    "tts_ttfb_ms": 120,
}
REPLY = "Sure, I can help you with that. What time suits you best?"
"""Seven tokens (words) to the first sentence's end, then a second sentence: as mid-reply,
the sentence is known to have ended only when the next token arrives."""
SHORT_S = 4.0
"""``--questions short``: the questions whose speech is over by then."""
LOCAL_MODELS = {
    "VOICE_ASR_MODEL": ASR_MODEL,
    "VOICE_LLM_MODEL": LLM_MODEL,
    "VOICE_TTS_MODEL": TTS_MODEL,
}
"""The embedded engines' gateway's model ids, asked for by name."""
QUIET_EVENTS = frozenset({"TextDelta", "AudioDone", "ResponseStarted"})
"""Server events not logged (one per token, or said by others)."""
# ---------------------------------------------------------------------------------------
# what is run: settings, sweeps, recordings


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[tuple[str, str], ...]
    """``VOICE_*`` variables, sorted: equal settings share a server."""


@dataclass(frozen=True)
class Sweep:
    name: str
    variable: str
    values: tuple[str, ...]
    base: tuple[tuple[str, str], ...]

    def settings(self) -> list[Setting]:
        out = []
        for value in self.values:
            env = dict(self.base) | {self.variable: value}
            out.append(Setting(f"{self.name} {value}", tuple(sorted(env.items()))))
        return out


def env_pairs(text: str) -> dict[str, str]:
    """``"SPECULATION=off,TURN_HANGOVER_MS=500"`` → ``VOICE_*`` variables."""
    pairs = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().upper()
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        pairs[key if key.startswith("VOICE_") else f"VOICE_{key}"] = value.strip()
    return pairs


def parse_latencies(text: str) -> dict[str, float]:
    """``"asr_ms=0,ttft_ms=50"`` → the simulated gateway's latencies to change."""
    out = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in LATENCIES:
            raise SystemExit(f"--latencies: {key!r} is not one of {', '.join(LATENCIES)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise SystemExit(f"--latencies: {key} must be a number of ms, got {value!r}") from None
    return out


def parse_setting(spec: str) -> Setting:
    name, sep, pairs = spec.partition(":")
    if not sep or not name.strip():
        raise SystemExit(f"--setting: expected NAME:KEY=VALUE,..., got {spec!r}")
    return Setting(name.strip(), tuple(sorted(env_pairs(pairs).items())))


def parse_sweep(spec: str) -> Sweep:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or "=" not in parts[1]:
        raise SystemExit(f"--sweep: expected NAME:KEY=V1,V2,...[:KEY=VALUE,...], got {spec!r}")
    variable, _, values = parts[1].partition("=")
    (variable,) = env_pairs(f"{variable}=x")
    numbers = tuple(v.strip() for v in values.split(",") if v.strip())
    if not numbers or not all(v.replace(".", "", 1).isdigit() for v in numbers):
        raise SystemExit(f"--sweep: the values of {variable} must be numbers, got {values!r}")
    base = env_pairs(parts[2]) if len(parts) == 3 else {}
    return Sweep(parts[0].strip(), variable, numbers, tuple(sorted(base.items())))


@dataclass(frozen=True)
class Recording:
    name: str
    role: str
    """``question``, ``pause`` (unfinished words before a pause) or ``clause``."""
    audio: PcmFrame = field(repr=False)
    speech_start_s: float
    speech_end_s: float
    """The end of the last voiced frame (webrtcvad, the manifest's): the last word's end."""
    sound_end_s: float
    """Where the sound ends, as the callers' ear judges reply audio (energy over -45 dBFS;
    `voice bench` measures from it): a little before ``speech_end_s``."""
    transcript: str
    """What the simulated gateway answers (segmented at the pauses)."""


def recordings(folder: Path, roles: tuple[str, ...], pick: str) -> list[Recording]:
    """The manifest's recordings of these roles: ``all``, ``short`` (speech over within
    :data:`SHORT_S`), the first N, or names."""
    entries = [e for e in json.loads((folder / "manifest.json").read_text())["samples"]]
    entries = [e for e in entries if e["role"] in roles]
    if pick == "short":
        entries = [e for e in entries if e["speech_end_s"] <= SHORT_S]
    elif pick.isdigit():
        entries = entries[: int(pick)]
    elif pick != "all":
        wanted = [name.strip() for name in pick.split(",") if name.strip()]
        known = {e["file"]: e for e in entries}
        missing = [name for name in wanted if name not in known]
        if missing:
            raise SystemExit(f"not in {folder / 'manifest.json'}: {', '.join(missing)}")
        entries = [known[name] for name in wanted]
    out = []
    for e in entries:
        audio = load_wav(folder / e["file"])
        end = round((e["speech_end_s"] + 0.1) * audio.sample_rate) * 2  # silence follows anyway
        out.append(
            Recording(
                e["file"],
                e["role"],
                PcmFrame(audio.pcm[:end], audio.sample_rate),
                e["speech_start_s"],
                e["speech_end_s"],
                sound.end if (sound := sound_span(audio)) is not None else e["speech_end_s"],
                e.get("transcript", e["text"]),
            )
        )
    return out


# ---------------------------------------------------------------------------------------
# the server process: `voice serve`'s app, logging its turn events


def serve(port: int, gateway_url: str, events: Path) -> None:
    from voice.cli import run_app

    logging.basicConfig(level=logging.WARNING)
    os.environ |= {
        "VOICE_GATEWAY_URL": gateway_url,
        "VOICE_HOST": "127.0.0.1",
        "VOICE_PORT": str(port),
    }
    run_app(logged_app(events), host="127.0.0.1", port=port, log_level="warning")


def logged_app(events: Path) -> Any:
    """`voice serve`'s app, whose metrics also log each session event but the chattiest,
    with the time it happened (``time.monotonic``: the machine's clock, the callers' too)."""
    from voice.app.factory import create_app

    app = create_app()
    out = events.open("a", buffering=1)
    metrics = app.state.voice.metrics
    observe = metrics.observe

    def record(event: Any) -> None:
        observe(event)
        kind = type(event).__name__
        if kind in QUIET_EVENTS:
            return
        line: dict[str, Any] = {"t": time.monotonic(), "type": kind}
        if kind == "SpeechStopped":
            line |= {"at_ms": event.at_ms, "speech_end_ms": event.speech_end_ms, "cut": event.cut}
        elif kind == "ResponseDone":
            line |= {"status": event.status, **event.timings.as_dict()}
        elif kind == "Transcript":
            line["text"] = event.text
        out.write(json.dumps(line) + "\n")

    metrics.observe = record
    return app


# ---------------------------------------------------------------------------------------
# the processes


@dataclass
class Server:
    setting: Setting
    url: str
    events: Path
    gateway: str
    """Base URL of its gateway (``.../v1``)."""
    own_gateway: bool
    """Its gateway serves no other server: its request counts are this setting's."""

    def events_between(self, start: float, end: float) -> list[dict[str, Any]]:
        lines = self.events.read_text().splitlines()
        return [e for e in map(json.loads, lines) if start <= e["t"] <= end]


@contextlib.contextmanager
def processes(
    reported: list[Setting], swept: list[Setting], args: argparse.Namespace, tmp: Path
) -> Iterator[list[Server]]:
    """A gateway (or one per reported setting) and a server per distinct setting."""
    python = sys.executable
    started: list[subprocess.Popen[bytes]] = []
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}

    def gateway() -> str:
        port = free_port()
        command = [python, "-m", "voice.cli", "gateway", "--port", str(port)]
        if args.engines == "simulated":
            command += ["--simulate", "--reply", REPLY]
            command += [f"--{k.replace('_', '-')}={v:g}" for k, v in args.latencies.items()]
        log = subprocess.DEVNULL
        started.append(subprocess.Popen(command, env=clean_env, stdout=log, stderr=log))
        return f"http://127.0.0.1:{port}/v1"

    try:
        servers: list[Server] = []
        by_env: dict[tuple[tuple[str, str], ...], Server] = {}
        shared = gateway()
        for setting in [*reported, *swept]:
            if setting.env in by_env:
                continue
            own = setting in reported and args.engines == "simulated"
            gateway_url = gateway() if own else shared
            port = free_port()
            events = tmp / f"events-{port}.jsonl"
            events.touch()
            command = [python, "-m", "benchmarks.turn_setup", str(port)]
            env = clean_env | (LOCAL_MODELS if args.engines == "local" else {}) | dict(setting.env)
            started.append(
                subprocess.Popen(
                    [*command, gateway_url, str(events)], cwd=ROOT, env=env,
                    stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
            server = Server(setting, f"ws://127.0.0.1:{port}/v1/twilio", events, gateway_url, own)
            by_env[setting.env] = server
            servers.append(server)
        yield servers
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def served_by(servers: list[Server], setting: Setting) -> Server:
    return next(s for s in servers if s.setting.env == setting.env)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
