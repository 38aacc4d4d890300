"""Hearing Opus packets in tests: libopus decodes them as a browser does (to stereo), and the
encoder's look-ahead is dropped so the samples line up with the PCM that was encoded."""

import av
import numpy as np

from voice.audio.level import rms_dbfs
from voice.transports.rtc_audio import SAMPLES, caller_pcm

LOOKAHEAD = 312
"""libopus's delay at 48 kHz (2.5 ms of look-ahead plus 4 ms for SILK), for ``voip``: the
first packet's own pts is -312. Decoded sample ``LOOKAHEAD + i`` is input sample ``i``."""


def heard(packets) -> np.ndarray:
    """The packets decoded in order by one decoder, as PCM16 mono aligned with the input."""
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format = "s16"
    decoder.layout = "stereo"
    decoder.sample_rate = 48_000
    pcm = b"".join(caller_pcm(frame) for p in packets for frame in decoder.decode(p))
    return np.frombuffer(pcm, dtype="<i2")[LOOKAHEAD:]


def levels(samples: np.ndarray) -> list[float]:
    """dBFS of each whole 20 ms frame."""
    return [
        rms_dbfs(samples[i : i + SAMPLES].astype("<i2").tobytes())
        for i in range(0, len(samples) - SAMPLES + 1, SAMPLES)
    ]
