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


HEARD_AT_PAUSES = {"i01_wait_stop.wav": "Wait,|stop."}
"""Samples with a pause long enough to speculate on, cut where an ASR hears it."""


def transcript_of(name: str) -> str:
    """A simulated gateway's transcript of ``name``: as :func:`text`, cut into the parts an
    ASR hears when a server transcribes at the sample's pause (voice/gateway/simulated.py)."""
    return HEARD_AT_PAUSES.get(name, text(name))


PAUSES = SAMPLES / "pauses"
"""The pause set: sentences with pauses inside (samples/README.md)."""


@cache
def pause_manifest() -> dict[str, dict]:
    data = json.loads((PAUSES / "manifest.json").read_text())
    return {entry["file"]: entry for entry in data["samples"]}


def pause_recording(name: str) -> PcmFrame:
    return load_wav(PAUSES / name)


ENCODINGS = {".mp3": ("libmp3lame", 16_000), ".ogg": ("libopus", 48_000),
             ".flac": ("flac", 16_000), ".m4a": ("aac", 16_000)}  # fmt: skip
"""Formats people have, with an encoder FFmpeg (PyAV's build) has and a rate it takes."""


def encode(frame: PcmFrame, path: Path, codec: str | None = None) -> Path:
    """Write ``frame`` to ``path``, encoded as its suffix says (see :data:`ENCODINGS`), or
    with ``codec`` at the frame's own rate."""
    import av
    import numpy as np

    codec, rate = ENCODINGS[path.suffix] if codec is None else (codec, frame.sample_rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        context = stream.codec_context
        size = context.frame_size or 1024
        resampler = av.AudioResampler(format=context.format, layout="mono", rate=rate)
        samples = np.frombuffer(frame.pcm, dtype="<i2").reshape(1, -1)
        source = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        source.sample_rate = frame.sample_rate
        fifo = av.AudioFifo()
        for out in [*resampler.resample(source), *resampler.resample(None)]:
            fifo.write(out)
        while (chunk := fifo.read(size, partial=True)) is not None:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return path
