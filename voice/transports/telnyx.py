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

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from voice.errors import AudioFormatError
from voice.transports.codecs import codec_for
from voice.transports.telephony import (
    CarrierError,
    Connected,
    Dialect,
    Dtmf,
    Inbound,
    MarkEcho,
    Media,
    Start,
    Stop,
    parse_wire,
)


class _Message(BaseModel):
    # Telnyx may add fields at any time; only the ones we read are checked.
    model_config = ConfigDict(frozen=True, extra="ignore")


class _MediaFormat(_Message):
    encoding: str
    sample_rate: int
    channels: int = 1


class _StartBody(_Message):
    call_control_id: str = ""
    custom_parameters: dict[str, Any] = Field(default_factory=dict)
    media_format: _MediaFormat


class _Connected(_Message):
    event: Literal["connected"]


class _Start(_Message):
    event: Literal["start"]
    stream_id: str
    start: _StartBody


class _MediaBody(_Message):
    track: str = "inbound"
    chunk: int
    payload: str


class _Media(_Message):
    event: Literal["media"]
    media: _MediaBody


class _DtmfBody(_Message):
    digit: str


class _Dtmf(_Message):
    event: Literal["dtmf"]
    dtmf: _DtmfBody


class _MarkBody(_Message):
    name: str


class _Mark(_Message):
    event: Literal["mark"]
    mark: _MarkBody


class _Stop(_Message):
    event: Literal["stop"]


class _Error(_Message):
    event: Literal["error"]
    payload: dict[str, Any] = Field(default_factory=dict)


_Inbound = Annotated[
    _Connected | _Start | _Media | _Dtmf | _Mark | _Stop | _Error, Field(discriminator="event")
]
_inbound: TypeAdapter[_Inbound] = TypeAdapter(_Inbound)


class TelnyxDialect(Dialect):
    """Telnyx's spelling: ``stream_id``, snake_case, PCMU/PCMA 8 kHz or L16 8/16 kHz."""

    name = "telnyx"

    def parse(self, text: str) -> Inbound:
        match parse_wire(_inbound, text):
            case _Media(media=media):
                return Media(media.chunk, media.payload, inbound=media.track == "inbound")
            case _Mark(mark=mark):
                return MarkEcho(mark.name)
            case _Dtmf(dtmf=dtmf):
                return Dtmf(dtmf.digit)
            case _Start(stream_id=stream_id, start=start):
                fmt = start.media_format
                if fmt.channels != 1:
                    raise AudioFormatError(f"{fmt.channels}-channel media; only mono is served")
                codec = codec_for(fmt.encoding, fmt.sample_rate)
                parameters = {str(k): str(v) for k, v in start.custom_parameters.items()}
                return Start(stream_id, start.call_control_id, codec, parameters)
            case _Stop():
                return Stop()
            case _Error(payload=payload):
                return CarrierError(json.dumps(payload))
            case _:
                return Connected()

    def media(self, stream_id: str, payload: bytes) -> str:
        encoded = base64.b64encode(payload).decode("ascii")
        return f'{{"event":"media","media":{{"payload":"{encoded}"}}}}'

    def mark(self, stream_id: str, name: str) -> str:
        return f'{{"event":"mark","mark":{{"name":{json.dumps(name)}}}}}'

    def clear(self, stream_id: str) -> str:
        return '{"event":"clear"}'
