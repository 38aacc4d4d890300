"""WAV (RIFF) in and out: whole files, and TTS responses parsed as they stream.

Everything inside `voice` is PCM16 mono, so :func:`read_wav` converts what people commonly
have (8-bit, 24/32-bit integer, 32-bit float, mu-law/A-law, stereo) and names what it
cannot read. :class:`WavStreamParser` is stricter: a TTS asked for PCM16 mono WAV must send
exactly that, so it only finds the samples and passes them through.

The chunk layout follows the RIFF/WAVE spec: chunk bodies are padded to an even length, and
``WAVE_FORMAT_EXTENSIBLE`` carries the real format tag in its sub-format GUID. Streaming
writers cannot know the length up front and write 0 or 0xFFFFFFFF as a size; both mean
"until the end of the stream".
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from voice.audio.frames import PcmFrame
from voice.audio.g711 import alaw_decode, mulaw_decode
from voice.errors import AudioFormatError

_PCM: Final = 0x0001
_FLOAT: Final = 0x0003
_ALAW: Final = 0x0006
_MULAW: Final = 0x0007
_EXTENSIBLE: Final = 0xFFFE
_NAMES: Final = {_PCM: "integer PCM", _FLOAT: "float", _ALAW: "A-law", _MULAW: "mu-law",
                 0x0002: "MS ADPCM", 0x0011: "IMA ADPCM", 0x0055: "MP3"}  # fmt: skip

_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)
"""Chunk sizes a streaming writer puts in before it knows the length."""

_MAX_FMT_SIZE: Final = 1024
"""A real fmt chunk is 16-40 bytes; a larger one is garbage we refuse to buffer."""

_CONVERT_HINT: Final = "convert it first, e.g. `ffmpeg -i in.wav -ac 1 -c:a pcm_s16le out.wav`"


@dataclass(frozen=True, slots=True)
class _Format:
    tag: int
    channels: int
    sample_rate: int
    bits: int

    def describe(self) -> str:
        name = _NAMES.get(self.tag, f"format 0x{self.tag:04X}")
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels}-channel")
        return f"{self.bits}-bit {name} {layout} at {self.sample_rate} Hz"


def _parse_fmt(body: bytes) -> _Format:
    if len(body) < 16:
        raise AudioFormatError(f"WAV fmt chunk is {len(body)} bytes, under the 16 it needs")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise AudioFormatError("WAV says WAVE_FORMAT_EXTENSIBLE but its fmt chunk is cut")
        # The first two bytes of the sub-format GUID are the ordinary format tag.
        (tag,) = struct.unpack_from("<H", body, 24)
    fmt = _Format(tag, channels, rate, bits)
    if channels == 0 or rate == 0:
        raise AudioFormatError(f"WAV header is broken: {fmt.describe()}")
    return fmt


def _riff_error(head: bytes) -> AudioFormatError | None:
    """Why ``head`` (the first bytes of a stream, maybe fewer than 12) cannot start a WAV."""
    if head[:4] == b"RF64":
        return AudioFormatError("WAV is RF64 (over 4 GiB), which voice does not read")
    if head[:4] != b"RIFF"[: len(head)] or (len(head) >= 12 and head[8:12] != b"WAVE"):
        return AudioFormatError(
            f"not a WAV file: it starts with {bytes(head[:12])!r}, not RIFF....WAVE"
        )
    return None


def read_wav(data: bytes) -> PcmFrame:
    """Decode a whole WAV file to PCM16 mono at the file's own sample rate."""
    if (err := _riff_error(data[:12])) is not None:
        raise err
    if len(data) < 12:
        raise AudioFormatError(f"not a WAV file: only {len(data)} bytes")
    fmt: _Format | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        pos += 8
        if chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError("WAV has its data chunk before the fmt chunk")
            # Unknown or over-long sizes (a streamed or truncated file): take what is there.
            end = len(data) if size in _UNKNOWN_SIZES else min(pos + size, len(data))
            return PcmFrame(_to_pcm16(data[pos:end], fmt), fmt.sample_rate)
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[pos : pos + size])
        pos += size + (size & 1)
    raise AudioFormatError("WAV has no fmt chunk" if fmt is None else "WAV has no data chunk")


def _to_pcm16(payload: bytes, fmt: _Format) -> bytes:
    tag, bits, channels = fmt.tag, fmt.bits, fmt.channels
    if tag in (_ALAW, _MULAW) and bits == 8:
        payload = (alaw_decode if tag == _ALAW else mulaw_decode)(payload)
        tag, bits = _PCM, 16
    if not ((tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _FLOAT and bits == 32)):
        raise AudioFormatError(
            f"WAV is {fmt.describe()}; voice reads 8/16/24/32-bit integer PCM, 32-bit float, "
            f"mu-law and A-law: {_CONVERT_HINT}"
        )
    width = bits // 8
    usable = len(payload) - len(payload) % (width * channels)  # drop a torn last sample
    if tag == _PCM and bits == 16 and channels == 1:
        return payload[:usable]
    samples = _decode_samples(payload[:usable], tag, bits).reshape(-1, channels)
    if channels > 1:
        # Average rather than sum: a downmix must not clip what each channel did not.
        samples = samples.mean(axis=1, dtype=np.float64)
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def _decode_samples(raw: bytes, tag: int, bits: int) -> npt.NDArray[np.float64]:
    """Samples scaled to the PCM16 range, as float64 so a downmix can average them."""
    samples: npt.NDArray[np.float64]
    if tag == _FLOAT:
        samples = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        samples *= 32768.0
        return samples
    if bits == 8:  # 8-bit WAV is the one unsigned format: silence is 128.
        samples = np.frombuffer(raw, dtype=np.uint8).astype(np.float64)
        samples -= 128.0
        samples *= 256.0
        return samples
    if bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        # Put the three bytes in the top of an int32, so the sign comes along for free.
        wide = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
        samples = (wide >> 16).astype(np.float64)
    elif bits == 32:
        samples = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.float64)
    else:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    return samples


def load_wav(path: str | os.PathLike[str]) -> PcmFrame:
    """Read the WAV file at ``path`` (blocking: call from an executor in async code)."""
    return read_wav(Path(path).read_bytes())


def wav_bytes(frame: PcmFrame) -> bytes:
    """A complete PCM16 mono WAV file holding ``frame``."""
    if len(frame.pcm) % 2:
        raise AudioFormatError(f"PCM16 must have an even byte count, got {len(frame.pcm)}")
    rate = frame.sample_rate
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(frame.pcm), b"WAVE",
        b"fmt ", 16, _PCM, 1, rate, rate * 2, 2, 16,
        b"data", len(frame.pcm),
    )  # fmt: skip
    return header + frame.pcm


def save_wav(path: str | os.PathLike[str], frame: PcmFrame) -> None:
    """Write ``frame`` as a PCM16 mono WAV file (blocking)."""
    Path(path).write_bytes(wav_bytes(frame))


class _Stage(enum.Enum):
    """Where :class:`WavStreamParser` is in the file."""

    RIFF = "riff"  # waiting for the 12-byte RIFF....WAVE header
    CHUNK = "chunk"  # waiting for an 8-byte chunk header
    FMT = "fmt"  # collecting the fmt chunk's body
    SKIP = "skip"  # discarding a chunk we do not use (LIST, fact, a pad byte, ...)
    DATA = "data"  # passing samples through
    END = "end"  # the data chunk is over; anything after it is ignored


class WavStreamParser:
    """Finds the PCM16 mono samples in a WAV file that arrives in pieces (a TTS response).

    Sans-I/O: :meth:`feed` takes whatever bytes the network delivered and returns the
    samples it can release, always a whole number of samples. The header may be split
    anywhere; memory stays bounded, since only the fmt chunk is ever buffered.
    """

    def __init__(self) -> None:
        self._stage = _Stage.RIFF
        self._buffer = bytearray()
        self._want = 0  # bytes left in the current FMT, SKIP or (sized) DATA stage
        self._pad = 0  # the pad byte after an odd-sized chunk
        self._sized = False  # True when the data chunk has a real size to stop at
        self._carry = b""  # a sample's first byte, waiting for its second
        self._fmt: _Format | None = None
        self._received = 0

    @property
    def sample_rate(self) -> int | None:
        """The stream's sample rate, or None until its fmt chunk has been parsed."""
        return None if self._fmt is None else self._fmt.sample_rate

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the stream; return the PCM16LE samples they complete."""
        self._received += len(data)
        if self._stage is _Stage.DATA and not self._buffer:
            return self._payload(data)
        if self._stage is _Stage.END:
            return b""
        self._buffer += data
        self._parse_header()
        if self._stage is _Stage.DATA and self._buffer:
            rest = bytes(self._buffer)
            self._buffer.clear()
            return self._payload(rest)
        return b""

    def close(self) -> None:
        """Declare the stream over; raise if it ended before any sample could start."""
        if self._stage not in (_Stage.DATA, _Stage.END):
            raise AudioFormatError(
                f"WAV stream ended after {self._received} bytes, before its data chunk"
            )

    def _parse_header(self) -> None:
        buf = self._buffer
        while True:
            match self._stage:
                case _Stage.RIFF:
                    if (err := _riff_error(bytes(buf[:12]))) is not None:
                        raise err
                    if len(buf) < 12:
                        return
                    del buf[:12]
                    self._stage = _Stage.CHUNK
                case _Stage.CHUNK:
                    if len(buf) < 8:
                        return
                    chunk_id, size = struct.unpack_from("<4sI", buf)
                    del buf[:8]
                    self._start_chunk(chunk_id, size)
                case _Stage.FMT:
                    if len(buf) < self._want:
                        return
                    fmt = _parse_fmt(bytes(buf[: self._want]))
                    del buf[: self._want]
                    if fmt.tag != _PCM or fmt.bits != 16 or fmt.channels != 1:
                        raise AudioFormatError(
                            f"streamed WAV is {fmt.describe()}; voice needs 16-bit integer "
                            "PCM mono: ask the TTS for that (or for raw pcm)"
                        )
                    self._fmt = fmt
                    self._stage = _Stage.SKIP
                    self._want = self._pad
                case _Stage.SKIP:
                    dropped = min(self._want, len(buf))
                    del buf[:dropped]
                    self._want -= dropped
                    if self._want:
                        return
                    self._stage = _Stage.CHUNK
                case _Stage.DATA | _Stage.END:
                    return

    def _start_chunk(self, chunk_id: bytes, size: int) -> None:
        self._pad = size & 1
        if chunk_id == b"fmt ":
            if size > _MAX_FMT_SIZE:
                raise AudioFormatError(f"WAV fmt chunk claims {size} bytes; this is not a WAV")
            self._stage, self._want = _Stage.FMT, size
        elif chunk_id == b"data":
            if self._fmt is None:
                raise AudioFormatError("WAV has its data chunk before the fmt chunk")
            self._sized = size not in _UNKNOWN_SIZES
            self._stage, self._want = _Stage.DATA, size
        else:
            self._stage, self._want = _Stage.SKIP, size + self._pad

    def _payload(self, data: bytes) -> bytes:
        if self._sized:
            data = data[: self._want]
            self._want -= len(data)
            if self._want == 0:
                self._stage = _Stage.END
        if self._carry:
            data = self._carry + data
        split = len(data) - len(data) % 2
        self._carry = data[split:]
        return data[:split]
