"""Reply audio as Opus packets: one libopus encoder per stream, and silence that costs nothing.

The WebRTC reply track hands aiortc ready Opus packets (``av.Packet``), which aiortc only
wraps in RTP. Left to itself, aiortc would upmix every 20 ms frame to stereo, encode it at
96 kbps on an executor thread and compute its RFC 6464 level in Python, silence included,
and a session is silent whenever nobody is being answered.

:class:`OpusStream` is one continuous Opus stream: mono (Opus packets carry their own channel
count, and a decoder set up for stereo plays mono packets), application ``voip``, 20 ms
packets, each stamped with the pts its caller gives, in 1/48000. Speech is encoded as it
comes. After it, the encoder goes on encoding zeros until its output for them stops changing
(two equal packets in a row; 3-5 frames in practice), which flushes its look-ahead (the last
6.5 ms of speech come out one packet late) and lets the decoder fade out exactly as the
encoder intended. From then on the stream repeats that settled packet without encoding, until
the next speech. The packet is the stream's own rather than one captured elsewhere: a fresh
encoder's silence may be in another Opus mode (hybrid, where this stream may have settled in
CELT), and every switch between them would make the decoder change modes without the
redundancy the encoder sends when it switches itself.

Sans-I/O and synchronous: encoding a 20 ms mono frame takes about 0.1 ms, so it runs inline,
as one webrtcvad call per frame does; an executor hand-off would cost more than the encode.
"""

from __future__ import annotations

import enum
import fractions
from typing import Any

import av

from voice.audio.frames import SAMPLE_WIDTH
from voice.errors import AudioFormatError

RATE = 48_000
"""Opus's own rate; the stream's pts count samples at it (RTP's Opus clock, RFC 7587)."""
FRAME_MS = 20
"""One packet per 20 ms, aiortc's ``AUDIO_PTIME``."""
SAMPLES = RATE * FRAME_MS // 1000
TIME_BASE = fractions.Fraction(1, RATE)
ZEROS = bytes(SAMPLES * SAMPLE_WIDTH)
BITRATE = 32_000
"""Mono speech at 32 kbit/s, inside RFC 7587 §3.1.1's 28-40 kbit/s for fullband speech: TTS
at 24 kHz (12 kHz of audio) is then coded in hybrid super-wideband, keeping its top octave;
at 24 kbit/s libopus drops to SILK wideband (8 kHz) for much of it. A third of the 96 kbit/s
stereo aiortc would send, and cheaper to encode."""
SETTLE_MAX_FRAMES = 10
"""Zero frames encoded after speech at most, should the encoder's output never repeat: the
last of them becomes the silence packet regardless."""


class _Phase(enum.Enum):
    SPEECH = "speech"  # the last packet carried audio
    SETTLING = "settling"  # encoding zeros until the encoder's output for them repeats
    SILENT = "silent"  # repeating the settled packet; the encoder is idle


class OpusStream:
    """One Opus stream of 20 ms mono packets: :meth:`speech` encodes, :meth:`silence` is free.

    A new stream starts settling, so its first few silence packets are encoded too.
    """

    def __init__(self, *, bitrate: int = BITRATE) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = RATE
        codec.time_base = TIME_BASE
        codec.bit_rate = bitrate
        codec.options = {"application": "voip", "frame_duration": str(FRAME_MS)}
        self._codec = codec
        self._phase = _Phase.SETTLING
        self._settling = 0
        self._previous: bytes | None = None
        self._silence = b""
        self.encoded = 0
        """Frames run through libopus so far (silence sent from the settled packet is not)."""

    def speech(self, pcm: bytes, pts: int) -> av.Packet[Any]:
        """Encode 20 ms of PCM16LE mono at 48 kHz; the packet carries ``pts`` (1/48000)."""
        if len(pcm) != len(ZEROS):
            raise AudioFormatError(f"an Opus frame is {len(ZEROS)} bytes, not {len(pcm)}")
        self._phase = _Phase.SPEECH
        return _packet(self._encode(pcm), pts)

    def silence(self, pts: int) -> av.Packet[Any]:
        """20 ms of silence: encoded zeros while the encoder settles, then its settled packet."""
        if self._phase is _Phase.SILENT:
            return _packet(self._silence, pts)
        if self._phase is _Phase.SPEECH:
            self._phase = _Phase.SETTLING
            self._settling = 0
            self._previous = None
        data = self._encode(ZEROS)
        self._settling += 1
        if data == self._previous or self._settling >= SETTLE_MAX_FRAMES:
            self._phase = _Phase.SILENT
            self._silence = data
        self._previous = data
        return _packet(data, pts)

    def _encode(self, pcm: bytes) -> bytes:
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(pcm)
        # The encoder's own clock: libopus needs it monotonic, the packet gets the caller's.
        frame.pts = self.encoded * SAMPLES
        frame.sample_rate = RATE
        frame.time_base = TIME_BASE
        # libopus returns one packet per 20 ms frame at once: its look-ahead is internal.
        (packet,) = self._codec.encode(frame)
        self.encoded += 1
        return bytes(packet)


def _packet(data: bytes, pts: int) -> av.Packet[Any]:
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = TIME_BASE
    return packet
