"""Spoken notices: what a caller hears when the server cannot answer.

A turn that fails for good (a gateway error after its retries, a timeout, payment required)
is followed by :attr:`Notices.failure`; after ``max_consecutive_failures`` such turns in a
row the session says :attr:`Notices.closing` and ends. Both are recordings, not synthesized
at run time: the speech route may be what failed. The defaults ship in ``sounds/`` (rendered
once with the embedded TTS by scripts/render-notices); ``VOICE_FAILURE_AUDIO`` and
``VOICE_CLOSING_AUDIO`` replace them with a WAV file of the operator's, or ``off``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav
from voice.config import PipelineSettings
from voice.errors import AudioFormatError, ConfigError

SOUNDS = Path(__file__).resolve().parent / "sounds"
TEXTS = {
    "failure": "Sorry, I'm having trouble answering right now.",
    "closing": "Sorry, I can't answer right now. Please call again later. Goodbye.",
}
"""What each shipped notice says (and what scripts/render-notices renders)."""
OFF = "off"
DEFAULT = "default"
MAX_NOTICE_S = 30.0


@dataclass(frozen=True, slots=True)
class Notices:
    failure: PcmFrame | None = None
    closing: PcmFrame | None = None


def load_notices(settings: PipelineSettings) -> Notices:
    """Read the notices the settings name (blocking; once, at start). Raises ConfigError
    naming the setting when a file cannot be used."""
    return Notices(
        failure=_load("VOICE_FAILURE_AUDIO", settings.failure_audio, "failure"),
        closing=_load("VOICE_CLOSING_AUDIO", settings.closing_audio, "closing"),
    )


def _load(variable: str, choice: str, name: str) -> PcmFrame | None:
    if choice == OFF:
        return None
    path = SOUNDS / f"{name}.wav" if choice == DEFAULT else Path(choice)
    try:
        audio = load_wav(path)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    except AudioFormatError as exc:
        raise ConfigError(f"{variable}: {path} is not a usable WAV file: {exc}") from None
    if audio.duration_ms > MAX_NOTICE_S * 1000:
        raise ConfigError(
            f"{variable}: {path} lasts {audio.duration_ms / 1000:.0f} s; "
            f"a notice may last {MAX_NOTICE_S:g} s at most"
        )
    return audio
