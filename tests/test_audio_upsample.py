"""Upsampler2x: 8 kHz telephony audio to the pipeline's 16 kHz, streaming and exact in size."""

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from voice.audio.upsample import DELAY, Upsampler2x


def tone(freq, rate, n, delay=0, amplitude=10_000):
    t = (np.arange(n) - delay) / rate
    return np.sin(2 * np.pi * freq * t) * amplitude


def run(upsampler, data, step):
    return b"".join(upsampler.process(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize(("freq", "min_snr_db"), [(300, 70), (1000, 70), (3000, 50)])
def test_tones_in_the_phone_band_come_out_as_the_ideal_16khz_signal(freq, min_snr_db):
    pcm = tone(freq, 8000, 8000).astype("<i2").tobytes()
    out = np.frombuffer(run(Upsampler2x(), pcm, 320), "<i2").astype(float)
    ideal = tone(freq, 16_000, 16_000, delay=2 * DELAY)
    error = out[400:-400] - ideal[400:-400]
    snr = 10 * np.log10(np.mean(ideal[400:-400] ** 2) / np.mean(error**2))
    assert snr > min_snr_db
    # No image of the tone mirrored about 4 kHz.
    spectrum = np.abs(np.fft.rfft(out[400:-400] * np.hanning(len(out) - 800)))
    freqs = np.fft.rfftfreq(len(out) - 800, 1 / 16_000)
    image = spectrum[np.argmin(abs(freqs - (8000 - freq)))]
    assert 20 * np.log10(image / spectrum[np.argmin(abs(freqs - freq))]) < -50


def test_output_is_exactly_twice_the_input_whatever_the_chunking():
    pcm = tone(700, 8000, 4000).astype("<i2").tobytes()
    whole = Upsampler2x().process(pcm)
    assert len(whole) == 2 * len(pcm)
    rng = np.random.default_rng(1)
    upsampler, parts, pos = Upsampler2x(), [], 0
    while pos < len(pcm):
        step = int(rng.choice([2, 40, 160, 320, 322, 1000]))
        parts.append(upsampler.process(pcm[pos : pos + step]))
        pos += step
    assert b"".join(parts) == whole
    assert Upsampler2x().process(b"") == b""


def test_full_scale_ringing_is_clipped_not_wrapped():
    square = np.where(np.arange(800) // 8 % 2, 32767, -32768).astype("<i2").tobytes()
    out = np.frombuffer(Upsampler2x().process(square), "<i2")
    evens, odds = out[0::2], out[1::2]
    # Halfway between two full-scale samples the interpolator overshoots; stored as int16
    # without clipping it would wrap to the other sign.
    for level in (32767, -32768):
        plateau = (evens[:-1] == level) & (evens[1:] == level)
        assert plateau.sum() > 100
        assert np.all(odds[:-1][plateau].astype(int) * np.sign(level) > 20_000)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads per-thread CPU (Linux)")
def test_a_whole_utterance_is_upsampled_on_the_calling_thread_alone():
    # A matrix product here went to OpenBLAS, whose worker threads then spun for
    # milliseconds after every utterance: CPU taken from the event loop's core.
    def other_threads_ticks():
        me, total = threading.get_native_id(), 0
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != me:
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total

    pcm = tone(440, 8000, 8000 * 10).astype("<i2").tobytes()
    before = other_threads_ticks()
    for _ in range(40):  # 400 s of audio, ~0.3 s of work
        Upsampler2x().process(pcm)
    time.sleep(0.2)  # spinning workers would still be counting
    # Ticks of 10 ms. Other threads may wake now and then; spinning ones took 30 or more.
    assert other_threads_ticks() - before <= 12
