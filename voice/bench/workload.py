"""What a load test plays: recordings with known speech bounds, and how sessions use them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav
from voice.bench.ear import sound_span
from voice.errors import ConfigError

DEFAULT_SAMPLES = Path(__file__).resolve().parent.parent.parent / "samples"


@dataclass(frozen=True, slots=True)
class Recording:
    """A caller utterance; ``speech_*_s`` are offsets where its sound starts and ends.

    They are measured with the same detector the ear uses on reply audio (energy over
    -45 dBFS in 10 ms windows), so both ends of a latency are judged alike. A VAD would put
    them tens of ms apart depending on its state.
    """

    name: str
    audio: PcmFrame
    speech_start_s: float
    speech_end_s: float
    role: str = "question"

    @property
    def duration_s(self) -> float:
        return self.audio.duration_ms / 1000.0


class Workload(BaseModel):
    """How each simulated caller behaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sessions: int = Field(default=1, ge=1, le=2000)
    ramp_per_s: float = Field(default=10.0, gt=0)
    """New sessions started per second."""
    turns: int = Field(default=3, ge=1)
    think_s: float = Field(default=1.0, ge=0)
    """Silence between the end of a reply and the caller's next question."""
    barge_in_every: int = Field(default=0, ge=0)
    """Every Nth turn the caller talks over the reply (0: never)."""
    barge_in_delay_s: float = Field(default=0.8, ge=0)
    """How long after the reply becomes audible the caller interrupts."""
    reply_timeout_s: float = Field(default=30.0, gt=0)
    """Longest wait for a reply before the turn counts as an error."""


def load_recordings(source: Path = DEFAULT_SAMPLES) -> list[Recording]:
    """Recordings from a folder holding ``manifest.json`` (or the manifest path itself).

    The manifest lists ``{"samples": [{"file": "x.wav", "role": "question"}, ...]}`` as
    `samples/manifest.json` does; ``role`` is ``question`` (default) or ``interrupt`` (used
    for barge-in turns). Each recording needs silence after its speech for the reply.
    """
    manifest = source / "manifest.json" if source.is_dir() else source
    if not manifest.is_file():
        raise ConfigError(f"no manifest.json at {source}; see samples/manifest.json for the form")
    recordings = []
    for entry in json.loads(manifest.read_text())["samples"]:
        audio = load_wav(manifest.parent / entry["file"])
        span = sound_span(audio)
        if span is None:
            raise ConfigError(f"{entry['file']}: no speech found (is it silent?)")
        recordings.append(
            Recording(
                name=entry["file"],
                audio=audio,
                speech_start_s=span.start,
                speech_end_s=span.end,
                role=entry.get("role", "question"),
            )
        )
    if not any(r.role == "question" for r in recordings):
        raise ConfigError(f"{manifest} lists no recording with role 'question'")
    return recordings
