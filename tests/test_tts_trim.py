"""The padding trimmed around each embedded TTS sentence (voice/gateway/engines.py)."""

import numpy as np

from voice.gateway.engines import KEEP_AFTER_MS, KEEP_BEFORE_MS, trim_silence

RATE = 24_000


def padded(before_ms, sound_ms, after_ms, level=0.3):
    ms = RATE // 1000
    return np.concatenate(
        [
            np.full(before_ms * ms, 1e-5, dtype=np.float32),
            np.full(sound_ms * ms, level, dtype=np.float32),
            np.zeros(after_ms * ms, dtype=np.float32),
        ]
    )


def test_the_padding_is_cut_to_a_short_lead_and_a_sentence_pause():
    out = trim_silence(padded(300, 1000, 450), RATE)
    assert out.size == (KEEP_BEFORE_MS + 1000 + KEEP_AFTER_MS) * RATE // 1000
    assert np.all(out[KEEP_BEFORE_MS * RATE // 1000 :][: 1000 * RATE // 1000] == np.float32(0.3))


def test_a_soft_sound_is_sound_and_short_padding_stays():
    soft = 10 ** (-45 / 20)  # -45 dBFS: quiet, but above the level
    out = trim_silence(padded(10, 500, 50, level=soft), RATE)
    assert out.size == (10 + 500 + 50) * RATE // 1000


def test_silence_is_left_as_it_is():
    silent = np.zeros(RATE, dtype=np.float32)
    assert trim_silence(silent, RATE) is silent
