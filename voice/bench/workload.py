"""What a load test plays: recordings with known speech bounds, and how sessions use them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from voice.audio.decode import AUDIO_SUFFIXES, load_audio
from voice.audio.frames import PcmFrame
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
    text: str | None = None
    """What is said, when known (a manifest's ``text``): what ASR should have heard."""

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


def load_recordings(*sources: Path) -> list[Recording]:
    """The recordings a run plays, from each of ``sources`` (default: ``samples/``).

    A source is an audio file (any format :func:`~voice.audio.decode.load_audio` reads), a
    folder (every audio file in it, by name, or the ones its ``manifest.json`` lists), or a
    manifest itself. Without a manifest every recording is a question. A manifest lists
    ``{"samples": [{"file": "x.wav", "role": "question", "text": "..."}, ...]}`` as
    `samples/manifest.json` does: ``role`` is ``question`` (default) or ``interrupt`` (played
    in barge-in turns), and ``text``, what is said, gives the run a word error rate. Each
    recording needs silence after its speech for the reply.
    """
    recordings: list[Recording] = []
    for source in sources or (DEFAULT_SAMPLES,):
        manifest = source / "manifest.json" if source.is_dir() else source
        if manifest.suffix == ".json" and manifest.is_file():
            recordings += _from_manifest(manifest)
        elif source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                kinds = ", ".join(AUDIO_SUFFIXES)
                raise ConfigError(f"{source}: no recordings in it (no {kinds} files)")
            recordings += [_recording(path, path.name) for path in files]
        else:
            recordings.append(_recording(source, source.name))
    if not any(r.role == "question" for r in recordings):
        raise ConfigError("no recording to ask with: every one is listed as an 'interrupt'")
    return recordings


def _from_manifest(manifest: Path) -> list[Recording]:
    try:
        entries = json.loads(manifest.read_text())["samples"]
        return [
            _recording(
                manifest.parent / entry["file"],
                entry["file"],
                role=entry.get("role", "question"),
                text=entry.get("text"),
            )
            for entry in entries
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{manifest}: not a recordings manifest ({type(exc).__name__}: {exc}); see "
            "samples/manifest.json for the form"
        ) from None


def _recording(
    path: Path, name: str, *, role: str = "question", text: str | None = None
) -> Recording:
    if role not in ("question", "interrupt"):
        raise ConfigError(f"{name}: role {role!r} is neither 'question' nor 'interrupt'")
    audio = load_audio(path)
    span = sound_span(audio)
    if span is None:
        raise ConfigError(f"{path}: no speech found (is it silent?)")
    return Recording(
        name=name,
        audio=audio,
        speech_start_s=span.start,
        speech_end_s=span.end,
        role=role,
        text=text,
    )
