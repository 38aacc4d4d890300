"""The tail gate: speech ends at the last audible frame, never starts late.

Unit tests drive ``TailGate`` with a scripted inner classifier (the verdicts webrtcvad would
give, frame by frame) and synthetic frames of known level; then the real webrtcvad on the
sample recordings, and a ``Session`` fed a recording, at 16 kHz and at 8 kHz after μ-law.
"""

import math

import numpy as np
import pytest

from tests.samples import manifest, recording
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample
from voice.config import Settings, TurnSettings
from voice.core.events import SpeechStopped
from voice.errors import ConfigError
from voice.gateway.simulated import SimulatedGateway, SimulationSettings
from voice.pipeline.session import Session
from voice.vad import TailGate, WebRtcVad, speech_classifier

RATE = 16_000
FRAME = RATE // 50  # samples in 20 ms


class Scripted:
    """The verdicts a VAD would give, one per call; counts its resets."""

    def __init__(self, verdicts):
        self.verdicts = list(verdicts)
        self.resets = 0

    def is_speech(self, frame, sample_rate):
        return self.verdicts.pop(0)

    def reset(self):
        self.resets += 1


def tone(dbfs, rate=RATE):
    """20 ms of a 200 Hz sine whose RMS is ``dbfs``."""
    t = np.arange(rate // 50) / rate
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    return np.round(amplitude * np.sin(2 * math.pi * 200 * t)).astype("<i2").tobytes()


def hiss(dbfs, seed=0):
    """20 ms of white noise whose RMS is about ``dbfs``: a fricative's shape, roughly."""
    noise = np.random.default_rng(seed).standard_normal(FRAME)
    noise *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(noise**2))
    return np.round(noise).astype("<i2").tobytes()


SILENCE = bytes(FRAME * 2)


def verdicts(frames, inner):
    gate = TailGate(Scripted(inner))
    return [gate.is_speech(f, RATE) for f in frames]


def test_a_fading_tail_is_unvoiced_from_where_it_falls_40_db_below_the_speech():
    vowel = [tone(-20)] * 25
    fade = [tone(-20 - 7 * k) for k in range(1, 9)]  # -27 ... -76 dBFS
    frames = vowel + fade + [SILENCE] * 3  # webrtcvad's own hangover: speech on silence
    out = verdicts(frames, [True] * len(frames))
    assert out[:25] == [True] * 25
    # -27 -34 -41 -48 -55 voiced; -62 and below (more than 40 dB down) and the silence not.
    assert out[25:] == [True] * 5 + [False] * 6


@pytest.mark.parametrize("fricative_dbfs", [-45, -52, -57])
def test_a_soft_fricative_ending_stays_voiced(fricative_dbfs):
    # A final /s/ or /f/ at 8 kHz lies 30-37 dB under the vowels (benchmarks/vad_tail.py).
    frames = [tone(-20)] * 25 + [hiss(fricative_dbfs, k) for k in range(8)] + [SILENCE] * 3
    out = verdicts(frames, [True] * len(frames))
    assert out == [True] * 33 + [False] * 3


def test_a_stretch_starts_voiced_however_soft_and_a_rising_onset_is_never_gated():
    frames = [tone(level) for level in (-75, -65, -50, -35, -20, -12)]
    assert verdicts(frames, [True] * 6) == [True] * 6


def test_soft_speech_after_a_pause_is_voiced_from_its_first_frame():
    loud, soft = [tone(-10)] * 20, [tone(-65)] * 10  # 55 dB softer than what came before
    out = verdicts([*loud, SILENCE, *soft], [True] * 20 + [False] + [True] * 10)
    assert out == [True] * 20 + [False] + [True] * 10


def test_a_lone_loud_click_sets_no_level():
    frames = [tone(-1)] + [tone(-50)] * 10  # 49 dB under the click
    assert verdicts(frames, [True] * 11) == [True] * 11


def test_speech_resuming_after_a_gated_dip_is_voiced_at_once():
    frames = [tone(-20)] * 10 + [tone(-70)] * 4 + [tone(-45)] + [tone(-20)] * 3
    assert verdicts(frames, [True] * 18) == [True] * 10 + [False] * 4 + [True] * 4


def test_the_level_sinks_during_a_long_stretch():
    # Two loud frames, then 3 s of quiet speech: the remembered -10 dBFS sinks 5 dB/s, so
    # a frame 50 dB under it (-60) is voiced by then; right after the loud frames it is not.
    early = [tone(-10)] * 2 + [tone(-60)]
    assert verdicts(early, [True] * 3) == [True, True, False]
    late = [tone(-10)] * 2 + [tone(-45)] * 150 + [tone(-60)]
    assert verdicts(late, [True] * 153)[-1] is True


def test_reset_forgets_the_level_and_resets_the_classifier():
    inner = Scripted([True] * 12)
    gate = TailGate(inner)
    for _ in range(10):
        gate.is_speech(tone(-10), RATE)
    assert gate.is_speech(tone(-65), RATE) is False  # 55 dB down: gated
    gate.reset()
    assert inner.resets == 1
    assert gate.is_speech(tone(-65), RATE) is True  # a new stream: nothing to compare with


def test_drop_must_be_positive():
    with pytest.raises(ValueError, match="drop_db must be positive"):
        TailGate(Scripted([]), drop_db=0)


def test_the_setting_chooses_the_classifier_and_refuses_a_gate_that_cuts_speech():
    assert isinstance(speech_classifier(TurnSettings()), TailGate)
    assert isinstance(speech_classifier(TurnSettings(vad_tail_gate_db=0)), WebRtcVad)
    settings = Settings.from_env({"VOICE_VAD_TAIL_GATE_DB": "0"})
    assert settings.turn.vad_tail_gate_db == 0
    with pytest.raises(ConfigError, match="would cut speech.*or 0 to turn it off"):
        Settings.from_env({"VOICE_VAD_TAIL_GATE_DB": "10"})


# -- on the recordings, with the real webrtcvad ------------------------------------------------


def phone(pcm16k):
    """What a Twilio caller's audio is at the server: 8 kHz through μ-law and back."""
    return mulaw_decode(mulaw_encode(resample(pcm16k, RATE, 8_000)))


def last_voiced_ms(classifier, pcm, rate):
    step = rate // 50 * 2
    frames = [pcm[i : i + step] for i in range(0, len(pcm) - step + 1, step)]
    voiced = [i for i, f in enumerate(frames) if classifier.is_speech(f, rate)]
    return (voiced[-1] + 1) * 20


def last_sound_ms(pcm, floor_dbfs=-55.0):
    """End of the last 10 ms whose RMS is above ``floor_dbfs`` (speech is at -20 dBFS)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)[: len(pcm) // 2 // 160 * 160]
    rms = np.sqrt(np.mean(x.reshape(-1, 160) ** 2, axis=1))
    return int(np.flatnonzero(rms > 32768 * 10 ** (floor_dbfs / 20))[-1] + 1) * 10


@pytest.mark.parametrize("rate", [16_000, 8_000])
def test_on_every_sample_speech_ends_earlier_and_not_before_its_last_sound(rate):
    saved = []
    for name in manifest():
        source = recording(name).pcm
        pcm = source if rate == RATE else phone(source)
        plain = last_voiced_ms(WebRtcVad(2), pcm, rate)
        gated = last_voiced_ms(TailGate(WebRtcVad(2)), pcm, rate)
        assert gated >= last_sound_ms(source), name  # nothing audible cut
        saved.append(plain - gated)
    # Measured: 40-120 ms a recording, ~90 on average, at both rates.
    assert min(saved) >= 20
    assert sum(saved) / len(saved) >= 60


@pytest.mark.parametrize("rate", [16_000, 8_000])
async def test_a_session_ends_the_turn_sooner_with_the_gate(rate):
    async def speech_end_ms(settings):
        events = []
        session = Session(
            session_id="tail",
            settings=settings,
            gateway=SimulatedGateway(SimulationSettings(asr_ms=1, transcripts=["what time"])),
            observe=events.append,
        )
        session.set_input_rate(rate)
        pcm = recording("q01_what_time.wav").pcm
        pcm = pcm if rate == RATE else phone(pcm)
        step = rate // 50 * 2
        for i in range(0, len(pcm), step):
            await session.feed(pcm[i : i + step])
        await session.aclose()
        (stop,) = [e for e in events if isinstance(e, SpeechStopped)]
        assert stop.at_ms - stop.speech_end_ms == settings.turn.hangover_ms
        return stop.speech_end_ms

    # The fixed hangover, so that the turn's end is the speech's end plus a known wait.
    fixed = {"speculation": "off"}
    gated = await speech_end_ms(Settings.model_validate({"turn": fixed}))
    plain = await speech_end_ms(Settings.model_validate({"turn": fixed | {"vad_tail_gate_db": 0}}))
    # Measured on this recording: 100 ms sooner at 16 kHz and at 8 kHz.
    assert plain - gated >= 60
    assert gated >= last_sound_ms(recording("q01_what_time.wav").pcm)
