"""The voice a gateway client is configured with: ``VOICE_TTS_VOICE``, or the reference-audio
voice of ``VOICE_TTS_REF_AUDIO`` + ``VOICE_TTS_REF_TEXT``.

A reference given as a path is read once, at start, checked to be a WAV file, and kept as the
``data:audio/wav;base64,...`` URL that speech requests carry (the form OpenAI-compatible TTS
servers such as vLLM-Omni's take for ``ref_audio``); a URL is passed on for the gateway to
fetch. Every speech request carries the reference, so a short clip is best.
"""

from __future__ import annotations

import base64
from pathlib import Path

from voice.config import GatewaySettings
from voice.errors import ConfigError
from voice.gateway.base import ReferenceVoice

MAX_REF_AUDIO_BYTES = 2 * 1024 * 1024
"""Largest reference recording read from a file: a minute of 16 kHz PCM16 fits; a cloning
model wants a few seconds, and the clip travels in every speech request."""


def configured_voice(settings: GatewaySettings) -> str | ReferenceVoice:
    """The settings' voice; raises :class:`ConfigError` for a reference it cannot use."""
    if settings.tts_ref_audio is None or settings.tts_ref_text is None:
        return settings.tts_voice
    spec = settings.tts_ref_audio.strip()
    audio = spec if spec.startswith(("http://", "https://", "data:")) else _data_url(spec)
    try:
        return ReferenceVoice(audio, settings.tts_ref_text, settings.tts_task_type)
    except ValueError as exc:
        raise ConfigError(f"VOICE_TTS_REF_AUDIO: {exc}") from None


def _data_url(path: str) -> str:
    file = Path(path).expanduser()
    try:
        size = file.stat().st_size
        if size > MAX_REF_AUDIO_BYTES:
            raise ConfigError(
                f"VOICE_TTS_REF_AUDIO: {path} is {size} bytes; a reference clip of a few "
                f"seconds is enough (at most {MAX_REF_AUDIO_BYTES} bytes), and it is sent "
                "with every speech request"
            )
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"VOICE_TTS_REF_AUDIO: cannot read {path} ({exc.strerror or exc}); give the "
            "path of a WAV file, or an http(s) URL the gateway can fetch"
        ) from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ConfigError(f"VOICE_TTS_REF_AUDIO: {path} is not a WAV file")
    return "data:audio/wav;base64," + base64.b64encode(data).decode("ascii")
