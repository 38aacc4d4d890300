"""The WebRTC offer a browser posts, checked before any peer connection exists.

``POST /v1/webrtc/offer`` takes ``{"sdp": ..., "type": "offer", "session": {...}}``. What
cannot work is refused here with :class:`~voice.errors.InvalidOffer` and a message that says
what to change, so a bad offer costs no sockets, no certificate and no half-open connection:
the body must be JSON of that shape; the SDP must parse, carry exactly one audio m-line that
sends and receives (the microphone, and the reply), at most one data channel section and
nothing else, ICE credentials and a DTLS fingerprint on every section, RTCP multiplexing,
and an audio codec aiortc speaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpSender
from aiortc.sdp import SessionDescription
from pydantic import ValidationError

from voice.errors import AudioFormatError, InvalidOffer, ProtocolError
from voice.transports.wire import SessionConfig

SUPPORTED_AUDIO = frozenset(
    (c.mimeType.lower(), c.clockRate) for c in RTCRtpSender.getCapabilities("audio").codecs
)
"""Audio codecs aiortc can decode and encode (Opus, G.722, G.711), with their clock rates:
aiortc takes a codec only if both match."""
FINGERPRINT_ALGORITHMS = frozenset({"sha-256", "sha-384", "sha-512"})
"""Certificate fingerprints aiortc can check (RFC 8122); an offer needs one of them."""


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    session: SessionConfig | None = None


def parse_offer(body: bytes) -> Offer:
    """The request body as an :class:`Offer`; raises :class:`InvalidOffer` saying why not."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidOffer(
            f'the body is not JSON ({exc}); send {{"sdp": "...", "type": "offer"}}'
        ) from None
    if not isinstance(data, dict):
        raise InvalidOffer('the body must be a JSON object: {"sdp": "...", "type": "offer"}')
    unknown = sorted(set(data) - {"sdp", "type", "session"})
    if unknown:
        raise InvalidOffer(f"unknown field(s) {', '.join(unknown)}; expected sdp, type, session")
    if data.get("type") != "offer":
        raise InvalidOffer(
            f'type must be "offer" (got {data.get("type")!r}): the server answers offers, '
            "the browser makes them"
        )
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise InvalidOffer("sdp must be the offer's SDP text (pc.localDescription.sdp)")
    session = _session(data.get("session"))
    check_sdp(sdp)
    return Offer(sdp=sdp, session=session)


def _session(value: Any) -> SessionConfig | None:
    if value is None:
        return None
    try:
        config = SessionConfig.model_validate(value)
        check_fixed_audio(config)
    except (AudioFormatError, ProtocolError) as exc:
        raise InvalidOffer(f"session: {exc.message}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in ("session", *err["loc"]))
        raise InvalidOffer(f"{where}: {err['msg']}") from None
    return config


def check_fixed_audio(config: SessionConfig) -> None:
    """WebRTC negotiates its audio in SDP: a session may not choose PCM formats."""
    if config.input_audio is not None or config.output_audio is not None:
        raise ProtocolError(
            "audio formats are fixed for WebRTC (negotiated in SDP: Opus at 48 kHz); "
            "a session may set instructions and voice only",
            code="invalid_session_update",
        )


def check_sdp(sdp: str) -> None:
    """Refuse an offer aiortc could not connect, with the reason."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever its split/int()/assert hits
        detail = str(exc) or type(exc).__name__
        raise InvalidOffer(f"the SDP could not be parsed ({detail})") from None
    kinds = [media.kind for media in description.media]
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio:
        raise InvalidOffer(
            "the offer has no audio m-line (m=audio); add the microphone track "
            "(addTransceiver or addTrack) before createOffer()"
        )
    if len(audio) > 1 or kinds.count("application") > 1:
        raise InvalidOffer("the offer must have one audio m-line and at most one data channel")
    others = sorted({k for k in kinds if k not in ("audio", "application")})
    if others:
        raise InvalidOffer(f"only audio and a data channel are accepted, not {', '.join(others)}")
    for media in description.media:
        if media.dtls is None or not media.dtls.fingerprints:
            raise InvalidOffer(
                f"the {media.kind} section has no DTLS fingerprint (a=fingerprint); "
                "WebRTC media must be encrypted with DTLS-SRTP"
            )
        algorithms = {f.algorithm.lower() for f in media.dtls.fingerprints}
        if not algorithms & FINGERPRINT_ALGORITHMS:
            raise InvalidOffer(
                f"the {media.kind} section's fingerprint uses {', '.join(sorted(algorithms))}; "
                f"use one of {', '.join(sorted(FINGERPRINT_ALGORITHMS))}"
            )
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise InvalidOffer(f"the {media.kind} section has no ICE ufrag/pwd")
    _check_bundle(description)
    (mic,) = audio
    if mic.direction not in (None, "sendrecv"):
        raise InvalidOffer(
            f"the audio m-line is {mic.direction}; it must be sendrecv (the microphone goes "
            "up, the reply comes down)"
        )
    if not mic.rtcp_mux:
        raise InvalidOffer("the audio m-line must use RTCP multiplexing (a=rtcp-mux)")
    offered = {(codec.mimeType.lower(), codec.clockRate) for codec in mic.rtp.codecs}
    if not offered & SUPPORTED_AUDIO:
        names = ", ".join(sorted(f"{m.split('/')[1]}/{rate}" for m, rate in SUPPORTED_AUDIO))
        raise InvalidOffer(f"the offer has no audio codec the server speaks ({names})")


def _check_bundle(description: SessionDescription) -> None:
    """Every section needs its own mid, and a BUNDLE group may name only those."""
    mids = [media.rtp.muxId for media in description.media]
    if not all(mids) or len(set(mids)) != len(mids):
        raise InvalidOffer("every m-line needs its own a=mid")
    for group in description.group:
        unknown = [str(item) for item in group.items if str(item) not in mids]
        if unknown:
            raise InvalidOffer(
                f"the {group.semantic} group names mid {', '.join(unknown)}, which no m-line has"
            )
