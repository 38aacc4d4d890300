"""Streaming 2x upsampling (telephony's 8 kHz to the pipeline's 16 kHz), in numpy.

Every phone call sends fifty 20 ms frames a second, and each must reach the pipeline at
16 kHz. libswresample (:class:`~voice.audio.resample.Resampler`) does it well but costs
~20 µs a frame, mostly per-call overhead, which at a hundred calls is a good part of a core.
Doubling the rate needs much less: keep every input sample and compute one new sample
halfway between each pair with a windowed-sinc interpolator (the odd phase of a half-band
low-pass). Sixteen taps keep audio up to 3 kHz within -50 dB of the ideal result and the
images mirrored above 4 kHz under -55 dB there: far below what a phone line carries.

G.711 input can be decoded in the same pass (a 256-entry table straight to float), which
saves the round trip through PCM16 bytes.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

TAPS: Final = 16
"""Input samples each new sample is interpolated from (8 either side)."""
DELAY: Final = TAPS // 2
"""Output lag in input samples (1 ms at 8 kHz): the interpolator needs samples ahead."""


def _halfway_filter(taps: int) -> npt.NDArray[np.float32]:
    # Ideal band-limited interpolation at +0.5 sample is sinc(j - 0.5) over input j; a
    # Kaiser window (beta 6) tames the truncation; normalising keeps DC gain at exactly 1.
    j = np.arange(-taps // 2 + 1, taps // 2 + 1)
    h = np.sinc(j - 0.5) * np.kaiser(taps, 6.0)
    kernel: npt.NDArray[np.float32] = (h / h.sum()).astype(np.float32)
    return kernel


_KERNEL: Final = _halfway_filter(TAPS)
_MAX: Final = np.float32(32767)
_MIN: Final = np.float32(-32768)


class Upsampler2x:
    """Mono audio in at rate R, PCM16LE out at 2R; one instance per stream.

    Input is PCM16LE, or with ``table`` 8-bit codes (G.711) decoded through it. Each input
    sample yields exactly two output samples, lagging by :data:`DELAY` input samples, so
    there is no tail to flush. Buffers are kept from call to call (frames are all one size
    on a call), so a frame allocates only its output bytes.
    """

    def __init__(self, *, table: npt.NDArray[np.float32] | None = None) -> None:
        if table is not None and table.shape != (256,):
            raise ValueError("a decode table maps each of the 256 byte values")
        self._table = table
        self._n = 0
        self._ext = np.zeros(TAPS - 1, dtype=np.float32)
        self._setup(0)

    def _setup(self, n: int) -> None:
        """Buffers for ``n``-sample chunks; the history (kept at the front) carries over."""
        history = self._ext[: TAPS - 1].copy()
        self._n = n
        self._ext = np.empty(n + TAPS - 1, dtype=np.float32)
        self._ext[: TAPS - 1] = history
        # Row i is the window ext[i : i + TAPS] that sample i's halfway point is made from.
        self._windows = as_strided(
            self._ext, shape=(n, TAPS), strides=(self._ext.itemsize, self._ext.itemsize)
        )
        self._halfway = np.empty(n, dtype=np.float32)
        self._out = np.empty(2 * n, dtype="<i2")

    def process(self, data: bytes) -> bytes:
        """Upsample ``data`` (whole samples); returns exactly twice as many samples."""
        width = 1 if self._table is not None else 2
        n = len(data) // width
        if n == 0:
            return b""
        if n != self._n:
            self._setup(n)
        ext, halfway, out = self._ext, self._halfway, self._out
        if self._table is not None:
            self._table.take(np.frombuffer(data, dtype=np.uint8), out=ext[TAPS - 1 :])
        else:
            ext[TAPS - 1 :] = np.frombuffer(data, dtype="<i2", count=n)
        np.dot(self._windows, _KERNEL, out=halfway)
        np.minimum(halfway, _MAX, out=halfway)  # ringing may overshoot full scale
        np.maximum(halfway, _MIN, out=halfway)
        # Storing into int16 truncates toward zero: an error under 1 LSB (-90 dB), cheaper
        # than rounding first.
        # Halfway point i sits after ext[i + DELAY - 1].
        out[0::2] = ext[DELAY - 1 : DELAY - 1 + n]
        out[1::2] = halfway
        ext[: TAPS - 1] = ext[n:]  # the last samples are the next chunk's history
        return out.tobytes()
