"""Who may call: caller tokens and browser origins.

Caller tokens are JSON Web Tokens, HS256, signed with ``VOICE_AUTH_SECRET`` (PyJWT).

Claims: ``exp`` (required), ``nbf`` and ``iat`` (honoured when present), ``sub`` (the
caller's id, logged with the session id), and an optional ``voice`` object that pins the
session::

    {"exp": 1767225600, "sub": "user-42",
     "voice": {"instructions": "...", "voice": "nova", "max_session_s": 600,
               "allow_update": false}}

A refusal says which check failed (missing, malformed, expired, not yet valid, signed with
another secret) and never repeats the token. Tokens are read from ``Authorization: Bearer``
or, for browsers, whose WebSocket API cannot set headers, from ``?token=``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import HTTPConnection

from voice.config import Settings, check_auth_secret
from voice.errors import ConfigError, OriginNotAllowed, Unauthorized

ALGORITHM = "HS256"
LEEWAY_S = 5.0
"""Clock skew forgiven between the server that minted a token and this one."""
MAX_TOKEN_CHARS = 8192


class Pins(BaseModel):
    """The token's ``voice`` claim: what the session is pinned to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instructions: str | None = Field(default=None, max_length=20_000)
    voice: str | None = Field(default=None, max_length=200)
    max_session_s: float | None = Field(default=None, gt=0)
    allow_update: bool = True


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a verified token says the caller is, and what it pins."""

    sub: str | None
    pins: Pins


def check_secret(secret: str) -> None:
    try:
        check_auth_secret(secret)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


MAX_TOKEN_BYTES = 8000
"""The longest token a caller can send: the server refuses a request line or header line over
``voice.app.http_guard.MAX_LINE_BYTES`` (414/431)."""


def mint(
    secret: str,
    *,
    ttl_s: float = 600,
    sub: str | None = None,
    pins: Pins | None = None,
    now: float | None = None,
) -> str:
    """A token valid for ``ttl_s`` from ``now``: what ``voice token`` prints."""
    check_secret(secret)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": issued, "exp": issued + int(ttl_s)}
    if sub is not None:
        claims["sub"] = sub
    if pins is not None and (fields := pins.model_dump(exclude_defaults=True)):
        claims["voice"] = fields
    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    if len(token) > MAX_TOKEN_BYTES:
        raise ValueError(
            f"the token is {len(token)} bytes; a request carries at most {MAX_TOKEN_BYTES} "
            "in its URL or a header: pin shorter instructions (or set long ones on the "
            "server, VOICE_INSTRUCTIONS)"
        )
    return token


_REFUSALS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "has expired; ask for a new one"),
    (jwt.ImmatureSignatureError, "is not valid yet (nbf/iat in the future)"),
    (jwt.MissingRequiredClaimError, "has no `exp` claim; tokens must expire"),
    (jwt.InvalidSignatureError, "signature does not match this server's secret"),
    (jwt.InvalidAlgorithmError, f"must be signed with {ALGORITHM}"),
    (jwt.InvalidTokenError, "is malformed (not a signed JWT)"),
)
"""What a refusal says, by PyJWT's error, most specific first; never the token itself."""


class TokenVerifier:
    """Verifies caller tokens against one secret."""

    def __init__(self, secret: str) -> None:
        check_secret(secret)
        self._secret = secret

    def __repr__(self) -> str:
        return "TokenVerifier(secret=<hidden>)"

    def verify(self, token: str | None) -> Caller:
        """The caller the token names; raises :class:`~voice.errors.Unauthorized`."""
        if not token:
            raise Unauthorized(
                "a caller token is required: send `Authorization: Bearer <token>` "
                "or `?token=<token>`"
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("the caller token is malformed (too long)")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=LEEWAY_S,
                options={"require": ["exp"]},
            )
        except jwt.InvalidTokenError as exc:
            reason = next(text for kind, text in _REFUSALS if isinstance(exc, kind))
            raise Unauthorized(f"the caller token {reason}") from None
        sub = claims.get("sub")
        try:
            pins = Pins.model_validate(claims.get("voice") or {})
        except ValidationError:
            raise Unauthorized("the caller token's `voice` claim is malformed") from None
        return Caller(sub=str(sub) if sub is not None else None, pins=pins)


def bearer(conn: HTTPConnection) -> str | None:
    """The credential of an ``Authorization: Bearer`` header (the scheme in any case)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


TOKEN_PARAM = "token"
"""The query parameter a browser's handshake carries its token in."""
_TOKEN_IN_QUERY = re.compile(rf"([?&]{TOKEN_PARAM}=)[^&\s\"']+")


def token_from(conn: HTTPConnection) -> str | None:
    """The token a request or handshake carries: the Authorization header, else ``?token=``."""
    return bearer(conn) or conn.query_params.get(TOKEN_PARAM) or None


class TokenRedactor(logging.Filter):
    """Masks ``?token=`` in log lines: uvicorn logs each request's and handshake's path with
    its query string, which would put a browser caller's token in the server's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


class Origins:
    """Browser origins allowed to open a session or post an offer (a CSRF and cross-site
    WebSocket defence: any page a browser shows can try ``ws://127.0.0.1:8080``).

    Allowed: ``allowed`` if given; otherwise the server's own origin and the public URL's.
    The server's own origin is the request's ``Host`` only when that names an IP address or
    ``localhost``: a DNS name there may be a rebinding attack's, and needs listing.
    ``null`` (sandboxed frames, files) is never an origin. A request without ``Origin`` is not
    from a browser page and is judged by its token or carrier signature alone.
    """

    def __init__(self, allowed: Iterable[str] | None, *, public_url: str | None) -> None:
        self._explicit = allowed is not None
        self._allowed = {_origin_of(o) for o in allowed or ()}
        if public_url is not None:
            self._allowed.add(_origin_of(public_url))

    def check(self, conn: HTTPConnection) -> None:
        origin = conn.headers.get("origin")
        if origin is None:
            return
        normal = origin.strip().rstrip("/").lower()
        if normal in self._allowed:
            return
        if not self._explicit and normal != "null" and _same_literal_host(normal, conn):
            return
        raise OriginNotAllowed(
            f"pages from origin {origin[:100]!r} may not call this server; the operator can "
            "allow it with VOICE_ALLOWED_ORIGINS"
        )


def _origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def _same_literal_host(origin: str, conn: HTTPConnection) -> bool:
    """The page came from this server itself, reached by an IP address or ``localhost``."""
    netloc = urlsplit(origin).netloc
    host = conn.headers.get("host", "").lower()
    if not netloc or netloc != host:
        return False
    name = urlsplit(f"//{netloc}").hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """``host`` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a network without caller authentication unless the operator said so.

    Raises :class:`~voice.errors.ConfigError` (``voice serve`` exits 2 with its message)."""
    auth, host = settings.auth, settings.server.host
    if is_loopback(host) or auth.secret is not None or auth.no_auth:
        return
    raise ConfigError(
        f"refusing to listen on {host} with no VOICE_AUTH_SECRET: anyone who reaches it "
        "could spend the gateway's budget. Set VOICE_AUTH_SECRET (32+ bytes; see "
        "docs/security.md), or pass --no-auth (VOICE_NO_AUTH=1) to serve without caller "
        "authentication"
    )


def carrier_routes_served(settings: Settings) -> dict[str, bool]:
    """Which carrier routes this server offers: on a non-loopback address, each needs its
    carrier's credential (Twilio's auth token, Telnyx's stream token), or anyone could
    open a "phone call" with no check at all."""
    local = is_loopback(settings.server.host) or settings.auth.no_auth
    telephony = settings.telephony
    return {
        "twilio": local or telephony.twilio_auth_token is not None,
        "telnyx": local or telephony.telnyx_stream_token is not None,
    }
