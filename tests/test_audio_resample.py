"""Resampler: streaming output equals one-shot output, is click-free and the right length."""

import random

import numpy as np
import pytest

from voice.audio.resample import Resampler, resample
from voice.errors import AudioFormatError

RATE_PAIRS = [(8000, 16000), (16000, 24000), (24000, 8000), (24000, 16000), (48000, 16000)]
AMPLITUDE = 10_000
TONE_HZ = 440


def sine(rate: int, seconds: float = 1.0, hz: float = TONE_HZ) -> np.ndarray:
    return AMPLITUDE * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


def pcm(samples) -> bytes:
    return bytes(np.round(samples).astype("<i2"))


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


def random_chunks(data: bytes, seed: int, max_bytes: int = 2000) -> list[bytes]:
    """Cut ``data`` at random byte offsets: empty chunks, odd sizes and split samples too."""
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        n = rng.randint(0, max_bytes)
        chunks.append(data[pos : pos + n])
        pos += n
    return chunks


def stream(resampler: Resampler, chunks: list[bytes]) -> bytes:
    return b"".join(resampler.process(c) for c in chunks) + resampler.flush()


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_random_chunks_match_one_piece(in_rate, out_rate):
    source = pcm(sine(in_rate))
    whole = samples(resample(source, in_rate, out_rate))
    chunked = samples(stream(Resampler(in_rate, out_rate), random_chunks(source, seed=in_rate)))
    assert len(chunked) == len(whole)
    assert np.max(np.abs(chunked - whole)) <= 2


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_output_is_the_tone_without_clicks(in_rate, out_rate):
    out = samples(stream(Resampler(in_rate, out_rate), random_chunks(pcm(sine(in_rate)), 3)))
    ideal = sine(out_rate)
    # Skip the first and last few ms, where the filter sees the edges of the signal.
    edge = out_rate // 200
    error = np.abs(out - ideal)[edge:-edge]
    assert np.max(error) < 0.01 * AMPLITUDE
    # A click is a jump between neighbours larger than the tone's own steepest slope.
    steepest = AMPLITUDE * 2 * np.pi * TONE_HZ / out_rate
    assert np.max(np.abs(np.diff(out[edge:-edge]))) < 1.05 * steepest


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_stream_length_tracks_the_rate_ratio(in_rate, out_rate):
    r = Resampler(in_rate, out_rate)
    chunk = pcm(sine(in_rate, seconds=0.02))
    produced = 0
    for n in range(1, 501):  # 10 s in 20 ms chunks
        produced += len(r.process(chunk)) // 2
        # Output keeps pace with input: only the filter's look-ahead is held back.
        assert abs(produced - n * len(chunk) // 2 * out_rate // in_rate) <= out_rate // 500
    produced += len(r.flush()) // 2
    assert abs(produced - 500 * len(chunk) // 2 * out_rate // in_rate) <= 2


def test_identity_passes_bytes_through():
    r = Resampler(16000, 16000)
    assert r.is_identity
    data = pcm(sine(16000, 0.02))
    assert r.process(data) is data
    assert r.process(data[:5]) == data[:4]  # the odd byte waits for its partner
    assert r.process(data[5:]) == data[4:]
    assert r.flush() == b""


def test_flush_ends_the_stream_and_the_next_one_starts_fresh():
    r = Resampler(24000, 16000)
    source = pcm(sine(24000, 0.1))
    first = r.process(source) + r.flush()
    second = r.process(source) + r.flush()
    assert first == second == resample(source, 24000, 16000)
    assert len(first) // 2 == 1600


def test_empty_input_and_a_dangling_odd_byte():
    r = Resampler(8000, 16000)
    assert r.process(b"") == b""
    assert r.flush() == b""
    out = r.process(pcm(sine(8000, 0.1)) + b"\x01")
    out += r.flush()  # the odd byte is not a sample and is dropped
    assert len(out) == 2 * 1600


@pytest.mark.parametrize(("in_rate", "out_rate"), [(0, 16000), (16000, 0), (-8000, 16000)])
def test_bad_rates_are_refused(in_rate, out_rate):
    with pytest.raises(AudioFormatError):
        Resampler(in_rate, out_rate)
