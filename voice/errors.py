"""Every exception `voice` raises on purpose has one root, :class:`VoiceError`.

The tree::

    VoiceError
    ├── ConfigError                 settings that cannot work (bad URL, bad rate, ...)
    ├── AudioFormatError            audio we cannot read (bad WAV, odd-length PCM, bad rate)
    ├── ProtocolError               a caller's message we cannot accept
    │   ├── FrameTooLarge           a binary frame over the size cap (close 1009)
    │   └── InvalidOffer            a WebRTC offer we cannot answer (HTTP 400)
    ├── CallRefused                 a call the admission path did not let in; ``status``
    │   ├── Unauthorized            no caller token, or a bad one           (HTTP 401)
    │   ├── OriginNotAllowed        a browser page from another origin      (HTTP 403)
    │   ├── ServerBusy              at ``max_sessions``                     (HTTP 503)
    │   └── ServerDraining          the server is stopping; go elsewhere    (HTTP 503)
    └── GatewayError                anything that went wrong talking to the gateway
        ├── GatewayTimeout          no answer in time                       (retryable)
        ├── GatewayUnavailable      connection failed, or 5xx               (retryable)
        ├── RateLimited             429, carries ``retry_after``            (retryable)
        ├── PaymentRequired         402 (x402), carries the challenge body  (never retried)
        ├── GatewayAuthError        401 / 403: the API key is missing or wrong
        ├── GatewayBadRequest       any other 4xx: the request itself is wrong
        └── GatewayProtocolError    a response we cannot parse

Each class carries a stable ``code``: the string the caller sees in an ``error`` event. Codes
are API: add new ones, never rename. Messages are written for the person reading them and
never contain a credential: nothing here stores request headers.
"""

from __future__ import annotations

from typing import ClassVar


class VoiceError(Exception):
    """Root of every error `voice` raises on purpose."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(VoiceError):
    code = "invalid_config"


class AudioFormatError(VoiceError):
    code = "unsupported_audio"


class ProtocolError(VoiceError):
    """A message from the caller that breaks the session protocol."""

    code = "invalid_message"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance refinement of the class code


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"


class InvalidOffer(ProtocolError):
    """A WebRTC offer refused before (or instead of) connecting; ``code`` says which check."""

    code = "invalid_offer"


class CallRefused(VoiceError):
    """A call not admitted (``voice.app.admission``). Each transport says so in its own wire:
    an HTTP status before a WebSocket upgrade or on an offer, an error event, a close code."""

    code = "call_refused"
    status: ClassVar[int] = 403
    """The HTTP status that refuses it."""


class Unauthorized(CallRefused):
    code = "unauthorized"
    status = 401


class OriginNotAllowed(CallRefused):
    code = "origin_not_allowed"
    status = 403


class ServerBusy(CallRefused):
    code = "server_busy"
    status = 503

    def __init__(self, message: str = "server at capacity; retry") -> None:
        super().__init__(message)


class ServerDraining(CallRefused):
    """This server is stopping (a deploy): its calls go on, new ones go elsewhere."""

    code = "server_draining"
    status = 503

    def __init__(self, message: str = "server shutting down; retry on another") -> None:
        super().__init__(message)


class GatewayError(VoiceError):
    """The gateway failed a request.

    ``status`` is the HTTP status (None when no response arrived), ``error_type`` the
    gateway's own error type if it sent one, ``request_id`` the id to quote to the gateway's
    operator (theirs if they sent one, else ours), ``route`` the path that failed.
    """

    code = "gateway_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.request_id = request_id
        self.route = route

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status!r}, "
            f"error_type={self.error_type!r}, request_id={self.request_id!r}, "
            f"route={self.route!r})"
        )


class GatewayTimeout(GatewayError):
    code = "gateway_timeout"
    retryable = True


class GatewayUnavailable(GatewayError):
    code = "gateway_unavailable"
    retryable = True


class RateLimited(GatewayError):
    code = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        error_type: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status, error_type=error_type, request_id=request_id, route=route
        )
        self.retry_after = retry_after


class PaymentRequired(GatewayError):
    """402: the gateway wants payment (x402). ``challenge`` is the body, credentials masked."""

    code = "payment_required"

    def __init__(
        self,
        message: str,
        *,
        challenge: str = "",
        status: int | None = 402,
        error_type: str | None = None,
        request_id: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status, error_type=error_type, request_id=request_id, route=route
        )
        self.challenge = challenge


class GatewayAuthError(GatewayError):
    code = "gateway_unauthorized"


class GatewayBadRequest(GatewayError):
    code = "gateway_bad_request"


class GatewayProtocolError(GatewayError):
    code = "gateway_bad_response"


def error_class_for_status(status: int) -> type[GatewayError]:
    """The error type a gateway's HTTP ``status`` maps to (for non-2xx statuses)."""
    if status == 402:
        return PaymentRequired
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return GatewayAuthError
    if status in (408, 504):
        return GatewayTimeout
    if status >= 500:
        return GatewayUnavailable
    return GatewayBadRequest
