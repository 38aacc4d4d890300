"""Telnyx media streaming: the same events as Twilio, spelled in snake_case.

Protocol (developers.telnyx.com, "Stream call media over WebSocket"): JSON text frames;
``stream_id`` and ``sequence_number`` at the top level; ``start.media_format`` names the
RTP codec (``PCMU``, ``PCMA``, ``L16``) and rate. Bidirectional RTP mode
(``stream_bidirectional_mode=rtp``) plays what we send in that same codec and rate, and
echoes marks like Twilio. Telnyx warns that media frame order is not guaranteed; frames are
put back in order by ``media.chunk``. Our messages carry no stream id: one socket is one
stream.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from voice.errors import AudioFormatError
from voice.transports.codecs import codec_for
from voice.transports.telephony import (
    CarrierError,
    Dialect,
    MediaFormat,
    SharedEvents,
    Start,
    WireEvent,
    WireMessage,
)


class _StartBody(WireMessage):
    call_control_id: str = ""
    custom_parameters: dict[str, Any] = Field(default_factory=dict)
    media_format: MediaFormat


class _Start(WireEvent):
    event: Literal["start"]
    stream_id: str
    start: _StartBody

    def inbound(self) -> Start:
        start = self.start
        fmt = start.media_format
        if fmt.channels != 1:
            raise AudioFormatError(f"{fmt.channels}-channel media; only mono is served")
        codec = codec_for(fmt.encoding, fmt.sample_rate)
        parameters = {str(k): str(v) for k, v in start.custom_parameters.items()}
        return Start(self.stream_id, start.call_control_id, codec, parameters)


class _Error(WireEvent):
    event: Literal["error"]
    payload: dict[str, Any] = Field(default_factory=dict)

    def inbound(self) -> CarrierError:
        return CarrierError(json.dumps(self.payload))


class TelnyxDialect(Dialect):
    """Telnyx's spelling: ``stream_id``, snake_case, PCMU/PCMA 8 kHz or L16 8/16 kHz."""

    name = "telnyx"
    messages = TypeAdapter(Annotated[_Start | _Error | SharedEvents, Field(discriminator="event")])

    def media(self, stream_id: str, payload: bytes) -> str:
        encoded = base64.b64encode(payload).decode("ascii")
        return f'{{"event":"media","media":{{"payload":"{encoded}"}}}}'

    def mark(self, stream_id: str, name: str) -> str:
        return f'{{"event":"mark","mark":{{"name":{json.dumps(name)}}}}}'

    def clear(self, stream_id: str) -> str:
        return '{"event":"clear"}'
