"""Speech/non-speech per frame behind a two-method protocol, so a neural VAD can replace
webrtcvad without touching the session.

:class:`TailGate` sits on any classifier and ends speech where it stops being audible:
webrtcvad goes on calling the fading end of a word speech, and then a few frames of plain
silence (its own hangover), ~100 ms in all on the sample recordings at 8 and 16 kHz, and
every turn waited that long before its pause began to count (benchmarks/vad_tail.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import webrtcvad

from voice.audio.frames import FRAME_MS

if TYPE_CHECKING:
    from voice.config import TurnSettings

_PCM16: Final = np.dtype("<i2")  # built once: parsing "<i2" on every frame costs a µs

TAIL_GATE_DB: Final = 40.0
"""How far below the speech's level (the louder of two frames in a row, at its highest) a
frame the VAD calls speech counts as unvoiced. Measured at 16 kHz and at 8 kHz after μ-law
(benchmarks/vad_tail.py), the same figure is best at both: the softest endings still over
-55 dBFS (speech at -20) fall to 33 dB under the level at 16 kHz and to 35 dB at 8 kHz
(final fricatives, "this", "both", "fifth", lose their energy above 4 kHz there), and the
fading nasal of "rain?" to 37 dB at both. At 35 dB the gate cut that "rain" by 40 ms, at 38
by 10; at 40 it cuts nothing and speech ends 0-20 ms after the last sound over -55 dBFS
instead of 50-120 ms."""

TAIL_GATE_RELEASE_DB_PER_S: Final = 5.0
"""How fast the remembered level sinks while the speech goes on, so that a loud syllable
early in a long phrase does not hold the threshold up for the rest of it."""


class SpeechClassifier(Protocol):
    def is_speech(self, frame: bytes, sample_rate: int) -> bool:
        """Whether one frame (10, 20 or 30 ms of PCM16 mono) holds speech."""
        ...

    def reset(self) -> None:
        """Forget any state between calls (a new stream starts)."""
        ...


class WebRtcVad:
    """Google's WebRTC GMM VAD: a few µs per 20 ms frame, cheap enough to run inline."""

    def __init__(self, aggressiveness: int = 2) -> None:
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes, sample_rate: int) -> bool:
        return bool(self._vad.is_speech(frame, sample_rate))

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self._aggressiveness)


class TailGate:
    """``vad``'s verdict, except that a frame it calls speech is unvoiced once its level has
    fallen ``drop_db`` below the level of the speech so far.

    The level is tracked per stretch of speech (reset whenever ``vad`` says non-speech):
    the mean square of each frame, and the highest that two frames in a row both reached,
    sinking by :data:`TAIL_GATE_RELEASE_DB_PER_S` while the stretch goes on. So the gate
    only ever ends speech, never delays its start: the first frame of a stretch, and every
    frame while the level rises, is voiced as ``vad`` says, however soft; and a single loud
    frame (a click) sets no level. A frame that comes back within ``drop_db`` of the level is
    voiced again at once.

    Cost: one float32 dot product per frame ``vad`` calls speech, 2-5 µs for 20 ms (about
    what webrtcvad itself takes; benchmarks/vad_tail.py); nothing on frames it does not.
    """

    def __init__(self, vad: SpeechClassifier, *, drop_db: float = TAIL_GATE_DB) -> None:
        if not drop_db > 0:
            raise ValueError(f"drop_db must be positive, got {drop_db!r}")
        self._vad = vad
        self._ratio: float = 10.0 ** (-drop_db / 10.0)
        self._level = 0.0  # mean square; 0 until two voiced frames in a row set it
        self._previous = 0.0  # the last frame's mean square, 0 at a stretch's start

    def is_speech(self, frame: bytes, sample_rate: int) -> bool:
        if not self._vad.is_speech(frame, sample_rate):
            self._level = self._previous = 0.0
            return False
        samples = np.frombuffer(frame, dtype=_PCM16).astype(np.float32)
        energy = float(np.dot(samples, samples)) / max(1, samples.size)
        seconds = samples.size / sample_rate
        release: float = 10.0 ** (-TAIL_GATE_RELEASE_DB_PER_S * seconds / 10.0)
        self._level = max(self._level * release, min(energy, self._previous))
        self._previous = energy
        return energy >= self._level * self._ratio

    def reset(self) -> None:
        self._vad.reset()
        self._level = self._previous = 0.0


def speech_classifier(turn: TurnSettings) -> SpeechClassifier:
    """The classifier ``turn`` settings ask for: webrtcvad, behind the tail gate unless it
    is off (``vad_tail_gate_db`` 0)."""
    vad = WebRtcVad(turn.vad_aggressiveness)
    if turn.vad_tail_gate_db == 0:
        return vad
    return TailGate(vad, drop_db=turn.vad_tail_gate_db)


assert FRAME_MS in (10, 20, 30), "webrtcvad takes 10, 20 or 30 ms frames"
