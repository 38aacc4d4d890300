"""Twilio Media Streams: the dialect, the TwiML that starts a stream, and request signatures.

Protocol (twilio.com/docs/voice/media-streams/websocket-messages): JSON text frames only;
camelCase fields; every number a string; audio 8 kHz mu-law in 20 ms frames. We send only
``media``, ``mark`` and ``clear``, each with the ``streamSid``. Media is ordered by
``media.chunk``, which counts media messages alone; ``sequenceNumber`` counts every message,
our marks' echoes and DTMF included, so gaps in it are not lost audio.

Signatures (twilio.com/docs/usage/security): ``X-Twilio-Signature`` is the base64
HMAC-SHA1, keyed with the account's auth token, of the full URL Twilio requested followed by
each POST parameter's name and value, sorted by name. The stream handshake is signed the
same way over its ``wss://`` URL, with no parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

from pydantic import Field, TypeAdapter
from pydantic.alias_generators import to_camel

from voice.errors import AudioFormatError
from voice.transports.codecs import PCMU
from voice.transports.telephony import (
    Dialect,
    MediaFormat,
    SharedEvents,
    Start,
    WireEvent,
    WireMessage,
)


class _MediaFormat(MediaFormat, alias_generator=to_camel):
    """Twilio's ``mediaFormat``: the shared fields spelled in camelCase (``sampleRate``)."""


class _StartBody(WireMessage, alias_generator=to_camel):
    call_sid: str = ""
    tracks: list[str] = Field(default_factory=list)
    custom_parameters: dict[str, Any] = Field(default_factory=dict)
    media_format: _MediaFormat


class _Start(WireEvent, alias_generator=to_camel):
    event: Literal["start"]
    stream_sid: str
    start: _StartBody

    def inbound(self) -> Start:
        start = self.start
        fmt = start.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != ("audio/x-mulaw", 8000, 1):
            raise AudioFormatError(
                f"Twilio stream in {fmt.encoding} {fmt.sample_rate} Hz x{fmt.channels}; "
                "only audio/x-mulaw 8000 Hz mono exists"
            )
        parameters = {str(k): str(v) for k, v in start.custom_parameters.items()}
        return Start(self.stream_sid, start.call_sid, PCMU, parameters)


class TwilioDialect(Dialect):
    """Twilio's spelling: ``streamSid`` and camelCase, audio/x-mulaw at 8 kHz only."""

    name = "twilio"
    messages = TypeAdapter(Annotated[_Start | SharedEvents, Field(discriminator="event")])

    def media(self, stream_id: str, payload: bytes) -> str:
        encoded = base64.b64encode(payload).decode("ascii")
        sid = json.dumps(stream_id)
        return f'{{"event":"media","streamSid":{sid},"media":{{"payload":"{encoded}"}}}}'

    def mark(self, stream_id: str, name: str) -> str:
        sid, quoted = json.dumps(stream_id), json.dumps(name)
        return f'{{"event":"mark","streamSid":{sid},"mark":{{"name":{quoted}}}}}'

    def clear(self, stream_id: str) -> str:
        return f'{{"event":"clear","streamSid":{json.dumps(stream_id)}}}'


# -- TwiML and signatures ------------------------------------------------------------------


def twiml_connect_stream(stream_url: str, parameters: Iterable[tuple[str, str]] = ()) -> str:
    """TwiML that connects the call to a bidirectional stream at ``stream_url``.

    The stream URL may not carry a query string: per-call data travels as ``<Parameter>``s
    and comes back in the ``start`` message's ``customParameters``.
    """
    params = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in parameters
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream>"
        "</Connect></Response>"
    )


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a request to ``url`` with POST ``params``."""
    data = url
    for name in sorted(params or {}):
        for value in sorted((params or {})[name]):
            data += name + value
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(
    auth_token: str,
    signature: str | None,
    urls: Iterable[str],
    params: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Whether ``signature`` signs any of ``urls`` (each also tried with and without its
    default port, as Twilio's own validators do)."""
    if not signature:
        return False
    for url in urls:
        for variant in _port_variants(url):
            expected = twilio_signature(auth_token, variant, params)
            if hmac.compare_digest(expected.encode(), signature.encode()):
                return True
    return False


_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    variants = [url]
    if default is not None and parts.port in (None, default):
        with_port = parts._replace(netloc=f"{host}:{default}")
        without = parts._replace(netloc=host)
        variants += [urlunsplit(with_port), urlunsplit(without)]
    return variants
