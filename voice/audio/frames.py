"""PCM audio as the pipeline passes it around: PCM16 little-endian mono in `bytes`."""

from __future__ import annotations

from dataclasses import dataclass

PIPELINE_RATE = 16_000
"""Sample rate of everything between the transport's decoder and the gateway."""

FRAME_MS = 20
"""Frame length fed to VAD and the turn detector (webrtcvad takes 10, 20 or 30 ms)."""

SAMPLE_WIDTH = 2
"""Bytes per sample: PCM16."""


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
