"""rms_dbfs: known levels, and a finite floor for silence."""

import math

import numpy as np
import pytest

from voice.audio.level import SILENCE_DBFS, rms_dbfs


def pcm(samples) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


@pytest.mark.parametrize("data", [b"", b"\x00", pcm(np.zeros(320))])
def test_silence_and_empty_read_the_floor(data):
    assert rms_dbfs(data) == SILENCE_DBFS == -120.0


def test_full_scale_square_is_zero_dbfs():
    assert rms_dbfs(pcm([-32768, -32768] * 100)) == pytest.approx(0.0)


def test_sine_reads_about_minus_3_db_below_its_peak():
    t = np.arange(16000) / 16000
    full = rms_dbfs(pcm(32767 * np.sin(2 * np.pi * 440 * t)))
    assert full == pytest.approx(-3.01, abs=0.02)
    tenth = rms_dbfs(pcm(3277 * np.sin(2 * np.pi * 440 * t)))
    assert tenth == pytest.approx(full - 20.0, abs=0.02)


def test_one_lsb_is_about_minus_90_db():
    assert rms_dbfs(pcm([1] * 1000)) == pytest.approx(-90.31, abs=0.01)


def test_level_never_drops_below_the_floor():
    level = rms_dbfs(pcm([1] + [0] * 99_999))  # would be about -140 dBFS
    assert math.isfinite(level)
    assert level == SILENCE_DBFS


def test_trailing_odd_byte_is_ignored():
    assert rms_dbfs(pcm([1000] * 10) + b"\x7f") == rms_dbfs(pcm([1000] * 10))
