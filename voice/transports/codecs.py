"""Audio codecs carriers stream in: G.711 (PCMU, PCMA) at 8 kHz and L16 at 8 or 16 kHz.

Carrier media is RTP payload without the header, base64 in JSON. L16 is sent in network
byte order (big-endian, RFC 3551 §4.5.11), so it is byte-swapped to and from the pipeline's
little-endian PCM16; G.711 goes through the lookup tables in :mod:`voice.audio.g711`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voice.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from voice.errors import AudioFormatError


def _l16_swap(data: bytes) -> bytes:
    # A trailing odd byte is not a sample; callers check sizes before decoding.
    return np.frombuffer(data, dtype="<u2", count=len(data) // 2).byteswap().tobytes()


@dataclass(frozen=True, slots=True)
class Codec:
    """One carrier audio format: its name, sample rate, and PCM16LE conversions both ways."""

    name: str
    rate: int
    sample_bytes: int
    decode: Callable[[bytes], bytes]
    """Carrier bytes → PCM16LE at ``rate``."""
    encode: Callable[[bytes], bytes]
    """PCM16LE at ``rate`` → carrier bytes."""

    def bytes_for(self, ms: int) -> int:
        """Encoded bytes in ``ms`` milliseconds of audio."""
        return self.rate * ms // 1000 * self.sample_bytes

    def duration_ms(self, size: int) -> float:
        """Milliseconds of audio in ``size`` encoded bytes."""
        return 1000.0 * size / self.sample_bytes / self.rate


PCMU = Codec("PCMU", 8_000, 1, mulaw_decode, mulaw_encode)
PCMA = Codec("PCMA", 8_000, 1, alaw_decode, alaw_encode)
L16_8K = Codec("L16", 8_000, 2, _l16_swap, _l16_swap)
L16_16K = Codec("L16", 16_000, 2, _l16_swap, _l16_swap)

_CODECS = {(c.name, c.rate): c for c in (PCMU, PCMA, L16_8K, L16_16K)}


def codec_for(name: str, rate: int) -> Codec:
    """The codec for an encoding name (``PCMU``, ``PCMA``, ``L16``) and sample rate."""
    codec = _CODECS.get((name.upper(), rate))
    if codec is None:
        known = ", ".join(f"{c.name} {c.rate} Hz" for c in _CODECS.values())
        raise AudioFormatError(f"{name} at {rate} Hz is not supported; use one of: {known}")
    return codec
