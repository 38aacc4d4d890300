"""ITU-T G.711 mu-law and A-law codecs (telephony: Twilio speaks 8 kHz mu-law).

Both directions are table lookups. Encoding indexes a 65536-entry numpy table by the
sample's bit pattern (its uint16 view): one ``take`` for a whole reply chunk. Decoding, done
for every 20 ms frame a caller sends, needs no numpy at all: ``bytes.translate`` maps each
code to its sample's low byte and again to its high byte, and two slice assignments
interleave them, about a third of what a ``take`` costs with numpy's per-call overhead.
The tables are built once at import from the segment
rules of G.711 (as in the reference ``g711.c``): mu-law works on the top 14 bits of the
sample, A-law on the top 13.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

_MULAW_BIAS: Final = 0x84
"""Mu-law bias, 132 in 16-bit units (33 in the 14-bit units G.711 is written in)."""

_MULAW_CLIP: Final = 8159
"""Largest 14-bit magnitude mu-law can code; louder samples saturate."""


def _segment(magnitude: npt.NDArray[np.int32], first_end: int) -> npt.NDArray[np.int32]:
    """The G.711 segment (0-8) of each magnitude; each segment is twice as long as the last."""
    ends = np.array([((first_end + 1) << s) - 1 for s in range(8)], dtype=np.int32)
    return np.searchsorted(ends, magnitude, side="left").astype(np.int32)


def _build_mulaw_encode() -> npt.NDArray[np.uint8]:
    # Index i is the uint16 view of a sample; reinterpret as int16 to get its value.
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    seg = _segment(magnitude, 0x3F)
    mantissa = (magnitude >> (np.minimum(seg, 7) + 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def _build_mulaw_decode() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & 0x0F) << 3) + _MULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _MULAW_BIAS - t, t - _MULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 3
    # A-law has no negative zero: -1 codes like +0 with the sign bit clear (one's complement).
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(magnitude, 0x1F)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((magnitude >> shift) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code & 0x70) >> 4
    t: npt.NDArray[np.int32] = ((code & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = t << np.maximum(seg - 1, 0)
    return np.where(code & 0x80, t, -t).astype(np.int16)


_MULAW_ENCODE: Final = _build_mulaw_encode()
_MULAW_DECODE: Final = _build_mulaw_decode()
_ALAW_ENCODE: Final = _build_alaw_encode()
_ALAW_DECODE: Final = _build_alaw_decode()


def _encode(pcm: bytes, table: npt.NDArray[np.uint8]) -> bytes:
    # A trailing odd byte is not a sample; callers frame PCM on sample boundaries.
    samples = np.frombuffer(pcm, dtype="<u2", count=len(pcm) // 2)
    return table.take(samples).tobytes()


def _byte_tables(table: npt.NDArray[np.int16]) -> tuple[bytes, bytes]:
    """For each code, its sample's low byte and its high byte (PCM16LE)."""
    pcm = table.astype("<i2").tobytes()
    return pcm[0::2], pcm[1::2]


_MULAW_BYTES: Final = _byte_tables(_MULAW_DECODE)
_ALAW_BYTES: Final = _byte_tables(_ALAW_DECODE)


def _decode(data: bytes, tables: tuple[bytes, bytes]) -> bytes:
    low, high = tables
    pcm = bytearray(2 * len(data))
    pcm[0::2] = data.translate(low)
    pcm[1::2] = data.translate(high)
    return bytes(pcm)


def mulaw_encode(pcm: bytes) -> bytes:
    """PCM16LE samples to mu-law, one byte per sample."""
    return _encode(pcm, _MULAW_ENCODE)


def mulaw_decode(data: bytes) -> bytes:
    """Mu-law bytes to PCM16LE, two bytes per code."""
    return _decode(data, _MULAW_BYTES)


def alaw_encode(pcm: bytes) -> bytes:
    """PCM16LE samples to A-law, one byte per sample."""
    return _encode(pcm, _ALAW_ENCODE)


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes to PCM16LE, two bytes per code."""
    return _decode(data, _ALAW_BYTES)
