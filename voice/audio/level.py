"""Signal level of PCM16 audio, in dB relative to full scale.

The load tester's onset detector uses it to find where reply audio stops being silence,
and tests use it to check that audio is (or is not) there.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

SILENCE_DBFS: Final = -120.0
"""What digital silence measures: a floor instead of -inf, so levels compare and print."""

_FULL_SCALE: Final = 32768.0


def rms_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16LE ``pcm`` in dBFS: 0.0 for a full-scale square wave, a full-scale
    sine reads about -3.0; empty or silent input reads :data:`SILENCE_DBFS`."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    if samples.size == 0:
        return SILENCE_DBFS
    # float64 before squaring: int16 squares overflow, and float32 loses precision on sums.
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square) - 20.0 * math.log10(_FULL_SCALE))
