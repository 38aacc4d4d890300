"""PCM audio as the pipeline passes it around: PCM16 little-endian mono in `bytes`.

:class:`PcmFrame` is the unit passed between stages; :class:`Reframer` cuts a stream that
arrives in arbitrary chunks into the fixed frames VAD and playout expect.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice.errors import AudioFormatError

PIPELINE_RATE = 16_000
"""Sample rate of everything between the transport's decoder and the gateway."""

FRAME_MS = 20
"""Frame length fed to VAD and the turn detector (webrtcvad takes 10, 20 or 30 ms)."""

SAMPLE_WIDTH = 2
"""Bytes per sample: PCM16."""

SPEECH_RATE = 24_000
"""Sample rate of speech as OpenAI's ``/v1/audio/speech`` returns ``pcm`` (s16le mono), and
so of every reply: the native protocol's default output, our engines' and simulator's TTS."""


@dataclass(frozen=True, slots=True)
class PcmFrame:
    """A run of PCM16LE mono samples at ``sample_rate``; any length, often 20 ms."""

    pcm: bytes
    sample_rate: int

    @property
    def num_samples(self) -> int:
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.num_samples / self.sample_rate


def frame_bytes(sample_rate: int, frame_ms: int = FRAME_MS) -> int:
    """Bytes in one ``frame_ms`` frame of PCM16 mono at ``sample_rate``."""
    return sample_rate * frame_ms // 1000 * SAMPLE_WIDTH


class Reframer:
    """Cuts a PCM16 stream arriving in arbitrary chunks into exact ``frame_ms`` frames.

    Transports and TTS streams deliver audio in whatever sizes the network chose, but VAD
    and playout want fixed frames. The remainder, including a lone odd byte when a chunk
    split a sample, is carried into the next :meth:`push`.
    """

    def __init__(self, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        size = frame_bytes(sample_rate, frame_ms) if sample_rate > 0 and frame_ms > 0 else 0
        if size <= 0:
            raise AudioFormatError(
                f"cannot cut {frame_ms} ms frames at {sample_rate} Hz: "
                "both must be positive and make at least one sample"
            )
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_size = size
        """Bytes per frame."""
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back because they do not fill a frame yet."""
        return len(self._buffer)

    def push(self, pcm: bytes) -> list[PcmFrame]:
        """Add ``pcm`` and return every complete frame now available, oldest first."""
        return [PcmFrame(frame, self.sample_rate) for frame in self.cut(pcm)]

    def cut(self, pcm: bytes) -> list[bytes]:
        """:meth:`push`, returning each frame's bytes alone (for a caller's every frame)."""
        size = self.frame_size
        if not self._buffer and len(pcm) == size and isinstance(pcm, bytes):
            return [pcm]  # transports mostly send whole frames: nothing to cut or copy
        data = self.take(pcm)
        return [data[i : i + size] for i in range(0, len(data), size)]

    def take(self, pcm: bytes = b"", *, partial: bool = False) -> bytes:
        """Add ``pcm`` and return every complete frame now available as one run (``b""``
        if none), for a caller that handles them in one batch. With ``partial``, return
        everything held, in whole samples and unpadded; a lone odd byte stays."""
        unit = SAMPLE_WIDTH if partial else self.frame_size
        if not self._buffer and len(pcm) % unit == 0 and isinstance(pcm, bytes):
            return pcm  # nothing held back and nothing to hold back: no copy
        self._buffer += pcm
        end = len(self._buffer) // unit * unit
        if end == 0:
            return b""
        # One slice and one delete per call, not per frame: a long chunk stays linear.
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def clear(self) -> None:
        """Drop whatever is held back."""
        self._buffer.clear()

    def flush(self) -> PcmFrame | None:
        """Return the remainder padded with silence to a full frame, or None if empty."""
        if not self._buffer:
            return None
        pcm = bytes(self._buffer) + bytes(self.frame_size - len(self._buffer))
        self._buffer.clear()
        return PcmFrame(pcm, self.sample_rate)
