"""The committed sample recordings and their manifest, for tests."""

import json
from functools import cache
from pathlib import Path

from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@cache
def manifest() -> dict[str, dict]:
    data = json.loads((SAMPLES / "manifest.json").read_text())
    return {entry["file"]: entry for entry in data["samples"]}


def recording(name: str) -> PcmFrame:
    return load_wav(SAMPLES / name)


def text(name: str) -> str:
    return manifest()[name]["text"]
