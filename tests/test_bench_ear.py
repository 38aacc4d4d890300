"""The caller's ear on synthetic audio with known onsets: found within ±20 ms."""

import numpy as np
import pytest

from voice.bench.ear import Ear
from voice.bench.stats import percentile, summarize

RATE = 24_000


def tone(ms, level=0.3):
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * np.pi * 220 * t) * level * 32767).astype("<i2").tobytes()


def silence(ms):
    return bytes(RATE * ms // 1000 * 2)


def deliver(ear, pcm, *, start, chunk_ms=20, speed=1.0):
    """Chunks arrive ``speed`` times faster than real time, from ``start``."""
    step = RATE * chunk_ms // 1000 * 2
    for n, i in enumerate(range(0, len(pcm), step)):
        ear.receive(pcm[i : i + step], start + n * chunk_ms / 1000 / speed)


@pytest.mark.parametrize("chunk_ms", [7, 20, 60, 250])
@pytest.mark.parametrize("speed", [1.0, 5.0])
def test_onset_is_found_within_20_ms_however_audio_is_chunked(chunk_ms, speed):
    ear = Ear(RATE)
    deliver(
        ear, silence(430) + tone(800) + silence(300), start=10.0, chunk_ms=chunk_ms, speed=speed
    )
    assert ear.onset_after(10.0) == pytest.approx(10.430, abs=0.020)
    assert ear.sound_end_after(10.5) == pytest.approx(11.230, abs=0.020)


def test_an_underrun_delays_playback_and_the_onset_with_it():
    ear = Ear(RATE)
    ear.receive(silence(100), 0.0)  # plays 0.0–0.1, then the buffer runs dry
    ear.receive(tone(300), 0.5)  # plays from its arrival
    assert ear.onset_after(0.0) == pytest.approx(0.5, abs=0.020)


def test_word_gaps_are_bridged_and_clicks_ignored():
    ear = Ear(RATE)
    pcm = silence(200) + tone(10) + silence(300) + tone(300) + silence(150) + tone(300)
    deliver(ear, pcm, start=0.0)
    (span,) = ear.spans()
    assert span.start == pytest.approx(0.510, abs=0.020)
    assert span.end == pytest.approx(1.260, abs=0.020)


def test_a_flush_silences_what_was_buffered_but_not_yet_played():
    ear = Ear(RATE)
    ear.receive(tone(2000), 0.0)  # 2 s arrives at once
    ear.flush(0.7)  # the caller barged in and dropped its buffer
    assert ear.sound_end_after(0.0) == pytest.approx(0.7, abs=0.020)
    ear.receive(silence(100) + tone(500), 1.0)  # the next reply
    assert ear.onset_after(0.7) == pytest.approx(1.1, abs=0.020)


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([], 50) is None
    assert summarize([3.0, 1.0, 2.0])["p50"] == 2.0
