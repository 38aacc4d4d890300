"""Speech/non-speech per frame behind a two-method protocol, so a neural VAD can replace
webrtcvad without touching the session.
"""

from __future__ import annotations

from typing import Protocol

import webrtcvad

from voice.audio.frames import FRAME_MS


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


assert FRAME_MS in (10, 20, 30), "webrtcvad takes 10, 20 or 30 ms frames"
