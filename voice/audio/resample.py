"""Sample-rate conversion of PCM16 mono streams, on libswresample (through PyAV).

Transports and TTS speak 8, 24 or 48 kHz; the pipeline runs at 16 kHz. A :class:`Resampler`
is one continuous stream: it keeps the filter state between chunks, so audio resampled in
20 ms pieces is the same, sample for sample, as the whole signal resampled at once. A fresh
resampler per chunk would restart the filter each time and click at every boundary.

All calls are synchronous and cheap for a 20 ms chunk (about 15-20 µs; see
``scripts/bench_audio.py``); resampling a long buffer belongs in an executor.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from voice.audio.frames import SAMPLE_WIDTH
from voice.errors import AudioFormatError


class Resampler:
    """Streaming PCM16LE mono converter from ``in_rate`` to ``out_rate`` Hz.

    :meth:`process` returns whatever output is ready; libswresample holds back a few
    milliseconds (the filter's look-ahead), which :meth:`flush` releases at end of stream.
    Over a whole stream the output has ``round(n * out_rate / in_rate)`` samples, aligned
    in time with the input (the filter delay is compensated). A chunk that splits a sample
    leaves its odd byte for the next call.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioFormatError(
                f"cannot resample from {in_rate} Hz to {out_rate} Hz: rates must be positive"
            )
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._time_base = Fraction(1, in_rate)
        self._carry = b""
        self._swr: av.AudioResampler | None = None
        self._pts = 0

    @property
    def is_identity(self) -> bool:
        """True when the rates match and audio passes through untouched."""
        return self.in_rate == self.out_rate

    def process(self, pcm: bytes) -> bytes:
        """Feed ``pcm`` (PCM16LE mono at ``in_rate``); return output ready at ``out_rate``."""
        if self._carry:
            pcm = self._carry + pcm
            self._carry = b""
        if len(pcm) % SAMPLE_WIDTH:
            self._carry = pcm[-1:]
            pcm = pcm[:-1]
        if not pcm or self.is_identity:
            return pcm
        if self._swr is None:
            self._swr = av.AudioResampler(format="s16", layout="mono", rate=self.out_rate)
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        # Contiguous timestamps tell the filter graph the chunks form one stream, so it
        # never inserts or drops samples to "fix" a gap.
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += samples.shape[1]
        return _join(self._swr.resample(frame))

    def flush(self) -> bytes:
        """End the stream: return the held-back tail and reset for a new stream.

        A dangling odd byte cannot form a sample and is dropped.
        """
        self._carry = b""
        swr, self._swr = self._swr, None
        self._pts = 0
        if swr is None:
            return b""
        return _join(swr.resample(None))


def _join(frames: list[av.AudioFrame]) -> bytes:
    # Plane buffers may be padded past the last sample, so cut each to its sample count.
    # (Reading the buffer directly is ~2.5 µs a frame cheaper than to_ndarray().)
    return b"".join(memoryview(f.planes[0])[: f.samples * SAMPLE_WIDTH] for f in frames)


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole PCM16LE mono buffer in one go (a stream of one chunk)."""
    resampler = Resampler(in_rate, out_rate)
    return resampler.process(pcm) + resampler.flush()
