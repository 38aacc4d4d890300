"""Cost of the audio hot path per 20 ms chunk: resampling and G.711, in µs.

Run: ``.venv/bin/python scripts/bench_audio.py [--seconds 20]``. Not a test: timings
depend on the machine, so they are printed for people, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import Resampler

PAIRS = [(8000, 16000), (16000, 24000), (24000, 8000), (24000, 16000), (48000, 16000)]
CHUNK_MS = 20


def speechlike(rate: int, seconds: float) -> bytes:
    """Noise shaped roughly like speech: a stand-in that keeps the filters honest."""
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    signal = 4000 * np.sin(2 * np.pi * 180 * t) + rng.normal(0, 1500, t.size)
    return np.clip(signal, -32768, 32767).astype("<i2").tobytes()


ROUNDS = 7


def per_chunk_us(step: Callable[[bytes], bytes], chunks: list[bytes]) -> str:
    """Median and best of several rounds: the best is the cost, the median the noise."""
    for chunk in chunks[:50]:  # warm up: the first call builds the filter graph
        step(chunk)
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for chunk in chunks:
            step(chunk)
        rounds.append((time.perf_counter() - start) / len(chunks) * 1e6)
    return f"median {statistics.median(rounds):6.1f} µs   best {min(rounds):6.1f} µs"


def chunks_of(pcm: bytes, rate: int) -> list[bytes]:
    size = rate * CHUNK_MS // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per measurement")
    args = parser.parse_args()
    print(f"per {CHUNK_MS} ms chunk; {ROUNDS} rounds of {args.seconds:g} s of audio each")
    for in_rate, out_rate in PAIRS:
        chunks = chunks_of(speechlike(in_rate, args.seconds), in_rate)
        us = per_chunk_us(Resampler(in_rate, out_rate).process, chunks)
        print(f"  resample {in_rate // 1000:>2}k -> {out_rate // 1000:>2}k  {us}")
    chunks = chunks_of(speechlike(8000, args.seconds), 8000)
    print(f"  mu-law encode  8k       {per_chunk_us(mulaw_encode, chunks)}")
    coded = [mulaw_encode(c) for c in chunks]
    print(f"  mu-law decode  8k       {per_chunk_us(mulaw_decode, coded)}")


if __name__ == "__main__":
    main()
