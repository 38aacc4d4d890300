"""G.711: spec values, round trips, and bit-exact agreement with the reference algorithm."""

import importlib
import warnings

import numpy as np
import pytest

from voice.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2")


def pcm(values) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def values(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


# Reconstruction values from the G.711 tables, scaled to 16 bits (mu-law x4, A-law x8).
MULAW_DECODED = {
    0x00: -32124, 0x01: -31100, 0x0F: -16764, 0x10: -15996, 0x70: -120, 0x7E: -8,
    0x7F: 0, 0xFF: 0, 0xFE: 8, 0xF0: 120, 0xEF: 132, 0x90: 15996, 0x80: 32124,
}  # fmt: skip
ALAW_DECODED = {
    0x00: -5504, 0x01: -5248, 0x02: -6016, 0x08: -7552, 0x10: -2752, 0x2A: -32256,
    0x55: -8, 0xD5: 8, 0xD4: 24, 0xAA: 32256, 0x80: 5504,
}  # fmt: skip


@pytest.mark.parametrize(("code", "value"), MULAW_DECODED.items())
def test_mulaw_decodes_spec_values(code, value):
    assert values(mulaw_decode(bytes([code]))) == [value]


@pytest.mark.parametrize(("code", "value"), ALAW_DECODED.items())
def test_alaw_decodes_spec_values(code, value):
    assert values(alaw_decode(bytes([code]))) == [value]


def test_encoders_code_zero_and_the_extremes():
    # mu-law inverts all bits, A-law inverts the even ones (0x55) and sets the sign bit.
    assert mulaw_encode(pcm([0, 32767, -32768, 8, -8])) == bytes([0xFF, 0x80, 0x00, 0xFE, 0x7E])
    assert alaw_encode(pcm([0, 32767, -32768, 8, -8])) == bytes([0xD5, 0xAA, 0x2A, 0xD5, 0x55])


def test_every_code_survives_decode_then_encode():
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES
    # 0x7F is mu-law's negative zero: it decodes to 0, which encodes as positive zero.
    expected = ALL_CODES.replace(b"\x7f", b"\xff")
    assert mulaw_encode(mulaw_decode(ALL_CODES)) == expected


CODECS = [(mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)]


@pytest.mark.parametrize(("encode", "decode"), CODECS)
def test_quantizer_is_monotonic_with_bounded_relative_error(encode, decode):
    x = ALL_SAMPLES.astype(np.int64)
    y = np.frombuffer(decode(encode(ALL_SAMPLES.tobytes())), dtype="<i2").astype(np.int64)
    assert np.all(np.diff(y) >= 0)
    # Logarithmic coding: the error grows with the level, but stays near 1/16 of it
    # (one mantissa step of 1/16 per segment) until the top segment saturates.
    inner = np.abs(x) < 32000
    assert np.all(np.abs(y - x)[inner] <= np.maximum(16, np.abs(x[inner]) // 16 + 16))


def test_frame_sizes_and_odd_trailing_byte():
    frame = pcm(np.arange(160) * 100)
    assert len(mulaw_encode(frame)) == len(alaw_encode(frame)) == 160
    assert len(mulaw_decode(bytes(160))) == len(alaw_decode(bytes(160))) == 320
    assert mulaw_encode(frame + b"\x01") == mulaw_encode(frame)
    assert mulaw_encode(b"") == mulaw_decode(b"") == b""


# A straight scalar port of the reference g711.c (Sun, public domain), the algorithm
# audioop also implements: independent of the vectorised tables under test.
def ref_linear2ulaw(sample: int) -> int:
    v = sample >> 2
    mask = 0x7F if v < 0 else 0xFF
    v = min(abs(v), 8159) + 33
    for seg, end in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        if v <= end:
            return ((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask
    return 0x7F ^ mask


def ref_linear2alaw(sample: int) -> int:
    v = sample >> 3
    mask = 0xD5 if v >= 0 else 0x55
    v = v if v >= 0 else -v - 1
    for seg, end in enumerate((0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)):
        if v <= end:
            return ((seg << 4) | ((v >> (1 if seg < 2 else seg)) & 0xF)) ^ mask
    return 0x7F ^ mask


def test_encoders_match_the_reference_for_every_sample():
    samples = ALL_SAMPLES.tolist()
    assert mulaw_encode(ALL_SAMPLES.tobytes()) == bytes(map(ref_linear2ulaw, samples))
    assert alaw_encode(ALL_SAMPLES.tobytes()) == bytes(map(ref_linear2alaw, samples))


def load_audioop():
    """The stdlib codec (Python < 3.13), or None: the test below then checks less."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


def test_agrees_with_audioop_where_it_exists():
    audioop = load_audioop()
    data = ALL_SAMPLES.tobytes()
    if audioop is None:
        # Python 3.13+ removed audioop; the reference port above still covers encoding.
        assert values(mulaw_decode(b"\x80\x00")) == [32124, -32124]
        return
    assert mulaw_encode(data) == audioop.lin2ulaw(data, 2)
    assert alaw_encode(data) == audioop.lin2alaw(data, 2)
    assert mulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
