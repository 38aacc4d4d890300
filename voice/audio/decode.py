"""Recordings from audio files, whatever their format, as PCM16 mono at the file's own rate.

`voice call` and `voice bench` both read their recordings here. A WAV is read by
:func:`voice.audio.wav.read_wav` (exact, and fast); anything else, and a WAV in an encoding
``read_wav`` does not take (ADPCM, MP3 inside RIFF), is decoded by FFmpeg through PyAV,
which reads MP3, Ogg (Vorbis, Opus), FLAC, M4A/AAC, WebM and most of what people record.
Every failure is an :class:`~voice.errors.AudioFormatError` naming the file and saying what
is wrong with it, never an FFmpeg or OS traceback.

Blocking: call from an executor in async code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import av

from voice.audio.frames import SAMPLE_WIDTH, PcmFrame
from voice.audio.wav import read_wav
from voice.errors import AudioFormatError

AUDIO_SUFFIXES: Final = (".wav", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".webm")
"""What a folder of recordings is taken to hold (other files in it are not recordings)."""

MAX_DECODED_S: Final = 15 * 60
"""Longest recording decoded: a compressed file expands ~10x, and a caller's question is
seconds long, so past this it is the wrong file, not a long question."""


def load_audio(path: str | os.PathLike[str]) -> PcmFrame:
    """The recording in the file at ``path``, as PCM16 mono at its own sample rate."""
    path = Path(path)
    if path.is_dir():
        raise AudioFormatError(f"{path} is a folder, not an audio file")
    try:
        with path.open("rb") as file:
            head = file.read(12)
            wav = head + file.read() if head[:4] == b"RIFF" and head[8:12] == b"WAVE" else None
    except FileNotFoundError:
        raise AudioFormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise AudioFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not head:
        raise AudioFormatError(f"{path}: the file is empty")
    if wav is None:
        return _decode(path)
    try:
        return read_wav(wav)
    except AudioFormatError as exc:
        wav_error = exc  # maybe an encoding FFmpeg knows (ADPCM): try that before giving up
    try:
        return _decode(path)
    except AudioFormatError:
        raise AudioFormatError(f"{path}: {wav_error.message}") from None


def _decode(path: Path) -> PcmFrame:
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioFormatError(f"{path}: has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate
            if not rate:
                raise AudioFormatError(f"{path}: its audio stream has no sample rate")
            # To PCM16 mono at the stream's own rate: the same as read_wav gives.
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            limit = MAX_DECODED_S * rate * SAMPLE_WIDTH
            pcm = bytearray()
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pcm += memoryview(out.planes[0])[: out.samples * SAMPLE_WIDTH]
                if len(pcm) > limit:
                    raise AudioFormatError(
                        f"{path}: longer than {MAX_DECODED_S // 60} minutes; a recording to "
                        "play into a call is a few seconds"
                    )
            for out in resampler.resample(None):
                pcm += memoryview(out.planes[0])[: out.samples * SAMPLE_WIDTH]
    except av.FFmpegError as exc:
        reason = exc.strerror or str(exc)
        raise AudioFormatError(
            f"{path}: not an audio file voice can decode ({reason}); voice reads WAV, MP3, "
            "Ogg, FLAC, M4A and most formats FFmpeg decodes"
        ) from None
    except ValueError as exc:  # the stream changed its format half-way (PyAV's resampler)
        raise AudioFormatError(f"{path}: cannot decode it: {exc}") from None
    if not pcm:
        raise AudioFormatError(f"{path}: holds no audio")
    return PcmFrame(bytes(pcm), rate)
