"""Settings: read once (from ``VOICE_*`` environment variables, then CLI flags), validated,
frozen, and passed down. Nothing else in `voice` reads the environment.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from voice.errors import ConfigError

log = logging.getLogger(__name__)

PCM_RATES = (8_000, 16_000, 24_000, 48_000)
"""Sample rates a caller may choose for PCM16 in and out."""

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110 section 5.1: a token)."""
PAYER_SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
"""``package.module:function``."""


class _Frozen(BaseModel):
    # hide_input_in_errors: a rejected value may be a credential (a URL with a password).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class GatewaySettings(_Frozen):
    """Where inference happens and how we talk to it."""

    url: str | None = None
    """Base URL including ``/v1``; ``None`` selects the embedded offline engines."""
    api_key: SecretStr | None = None
    asr_model: str = "whisper-1"
    llm_model: str = "gpt-4o-mini"
    tts_model: str = "tts-1"
    tts_voice: str = "alloy"
    tts_format: Literal["pcm", "wav"] = "pcm"
    """``pcm`` is raw 24 kHz s16le (OpenAI's format); ``wav`` is parsed for its rate."""
    asr_language: str | None = None
    llm_max_tokens: int | None = Field(default=300, gt=0)
    llm_temperature: float | None = Field(default=None, ge=0, le=2)
    extra_headers: dict[str, str] = Field(default_factory=dict)
    """Sent on every request (a pipeline id, a payment proof, ...); the repr shows only
    their names, as values may be credentials."""
    # Timeouts bound a caller's dead air: with a gateway that hangs on any one route, the
    # caller hears the failure notice within 8 s of the end of their speech, the one retry
    # a hung request gets included (docs/gateways.md#timeouts; benchmarks/dead_air.py).
    connect_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait for a connection to the gateway (co-located: milliseconds)."""
    asr_timeout_s: float = Field(default=2.5, gt=0)
    """Longest wait for a whole transcription."""
    llm_first_token_timeout_s: float = Field(default=4.0, gt=0)
    """Longest wait from the chat request to the first bytes of its stream."""
    llm_stall_timeout_s: float = Field(default=3.0, gt=0)
    """Longest wait between two chunks of the chat stream."""
    tts_first_byte_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait from a speech request to its first audio bytes."""
    tts_stall_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait between two chunks of speech audio."""
    max_retries: int = Field(default=2, ge=0, le=5)
    retry_backoff_s: float = Field(default=0.2, ge=0)
    max_connections: int = Field(
        default_factory=lambda: pool_size(ServerSettings(), PipelineSettings()), gt=0
    )
    """Size of the HTTP connection pool. Unless set, :class:`Settings` sizes it with
    :func:`pool_size` for its own server and pipeline sections."""
    # -- reference-audio voices (RunInfra: a cloned voice instead of a named one) ----------
    tts_ref_audio: str | None = None
    """A WAV file the gateway client reads once at start and sends as a ``data:`` URL, or an
    ``http(s)://`` URL the gateway fetches; with ``tts_ref_text``, replaces ``tts_voice``.
    Masked in the repr: a pre-signed URL is a credential."""
    tts_ref_text: str | None = Field(default=None, max_length=2000)
    """What is said in ``tts_ref_audio``."""
    tts_task_type: str = Field(default="Base", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
    """Sent with a reference voice (Qwen3-TTS's voice-cloning task is ``Base``)."""
    tts_ref_from_callers: bool = False
    """Whether a caller's ``session.update`` may set its own reference-audio voice."""
    # -- what the gateway returns for the record, and paying it (x402) ----------------------
    receipt_headers: tuple[str, ...] = ("x-payment-response", "payment-response")
    """Response headers kept as receipts in each turn's record (x402's settlement header by
    default); ``VOICE_GATEWAY_RECEIPT_HEADERS=none`` keeps none."""
    x402_payer: str | None = None
    """``package.module:function`` answering a 402 payment challenge (docs/gateways.md)."""
    x402_max_price: int | None = Field(default=None, ge=0)
    """The most one request may be paid, in the units the gateway's challenge prices in (the
    asset's smallest unit: for USDC, millionths of a dollar). Needed with ``x402_payer``."""
    x402_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Longest wait for the payer's answer; past it, the request fails as unpaid."""
    # -- health: what /ready says about the gateway (voice/app/gateway_health.py) ------------
    probe_s: float = Field(default=5.0, gt=0)
    """While the gateway is unreachable, how often it is asked for its models (``GET
    models``) until it answers; never while it is reachable (voice/app/gateway_health.py)."""
    probe_timeout_s: float = Field(default=3.0, gt=0, le=60)
    """How long one such probe waits for the answer."""
    failure_threshold: int = Field(default=3, ge=1)
    """Turns in a row that fail because the gateway could not be reached or timed out, after
    which ``/ready`` answers 503 until a probe gets an answer."""

    @field_validator("url")
    @classmethod
    def _normalise_url(cls, url: str | None) -> str | None:
        return None if url is None or not url.strip() else normalise_gateway_url(url)

    @field_validator("x402_payer")
    @classmethod
    def _check_payer(cls, spec: str | None) -> str | None:
        if spec is None or not spec.strip():
            return None
        spec = spec.strip()
        if not PAYER_SPEC.fullmatch(spec):
            raise ValueError(
                f"VOICE_X402_PAYER must name a function as package.module:function, got {spec!r}"
            )
        return spec

    @field_validator("receipt_headers", mode="before")
    @classmethod
    def _split_headers(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() == "none":
                return ()
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("receipt_headers")
    @classmethod
    def _check_header_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"receipt header names are HTTP header names, got {name!r}")
        return tuple(name.lower() for name in names)

    @model_validator(mode="after")
    def _check_pairs(self) -> GatewaySettings:
        if (self.tts_ref_audio is None) != (self.tts_ref_text is None):
            given, missing = (
                ("VOICE_TTS_REF_AUDIO", "VOICE_TTS_REF_TEXT")
                if self.tts_ref_text is None
                else ("VOICE_TTS_REF_TEXT", "VOICE_TTS_REF_AUDIO")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: a reference-audio voice needs both, "
                "the recording and the words said in it"
            )
        if self.x402_payer is not None and self.x402_max_price is None:
            raise ValueError(
                "VOICE_X402_PAYER is set but VOICE_X402_MAX_PRICE is not: set the most one "
                "request may be paid, in the gateway's price units"
            )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "extra_headers":
                yield name, {k: "***" for k in value}
            elif name == "tts_ref_audio" and value is not None:
                yield name, "***"
            else:
                yield name, value


MIN_TAIL_GATE_DB = 20.0
"""Below this the tail gate would unvoice plain speech (syllables vary by 20-30 dB)."""


class TurnSettings(_Frozen):
    """Speech detection; every duration is rounded to whole 20 ms frames."""

    vad_aggressiveness: int = Field(default=2, ge=0, le=3)
    """webrtcvad mode: 0 lets most sound through as speech, 3 is the strictest."""
    vad_tail_gate_db: float = Field(default=40.0, ge=0, le=80)
    """A frame webrtcvad calls speech is unvoiced once this far below the speech's level,
    so the pause counts from the last audible frame (voice/vad.py ``TailGate``); 0 is off."""
    start_ms: int = Field(default=100, ge=20)
    """Voiced audio needed before speech is declared started (and a reply interrupted)."""
    hangover_ms: int = Field(default=500, ge=100)
    """Unvoiced audio after speech that ends the turn."""
    preroll_ms: int = Field(default=300, ge=200)
    """Audio kept from before the onset so the first syllable reaches ASR."""
    min_speech_ms: int = Field(default=200, ge=20)
    """Turns with less voiced audio than this are dropped (coughs, clicks)."""
    max_turn_s: float = Field(default=30.0, gt=1)
    """A turn is cut and sent to ASR at this length."""
    speculation: Literal["off", "asr", "llm", "full"] = "full"
    """Work started when the caller pauses, before the turn is over (pipeline/speculation.py):
    ``asr`` transcribes the utterance so far, ``llm`` also starts the chat request, ``full``
    also the first sentence's speech. All is cancelled if the caller goes on; nothing plays
    before the turn ends. With it, the pause that ends a turn adapts to the words so far
    (``hangover_min_ms`` / ``hangover_max_ms``); ``off`` waits ``hangover_ms`` every time."""
    pause_ms: int = Field(default=60, ge=60)
    """Pause inside a turn after which speculation starts. With ``full`` at 60 ms the reply
    starts ~760 ms after the caller's last sound against the simulated gateway (~860 at
    150 ms with ``llm``), for ~0.3 more transcriptions a question, thrown away when the
    caller goes on (docs/bench.md)."""
    split_ms: int = Field(default=200, ge=0)
    """A pause the caller goes on after keeps the words before it (the turn is then heard in
    parts) only if it lasted this long. A shorter gap is inside a phrase (a stop's closure,
    a breath, 60-140 ms in samples/, against 260 ms and more at a clause or a hesitation):
    what was started at it is thrown away, and the turn is heard from the last part kept,
    so a word is never cut between two transcriptions (benchmarks/pause_split.py)."""
    hangover_min_ms: int = Field(default=250, ge=100)
    """With speculation: the pause that ends a turn whose words read finished."""
    hangover_max_ms: int = Field(default=900, ge=100)
    """With speculation: the pause that ends a turn whose words read unfinished (or not
    transcribed yet)."""
    hold_until_ready: bool = True
    """With ``llm`` or ``full`` speculation: the pause ends the turn no sooner than its reply
    is ready to play (``llm``: its first sentence has been written; ``full``: its first
    audio has arrived), nor later than ``hangover_max_ms``. The caller could not hear the
    reply sooner anyway, and the longer wait lets a caller who had more to say go on."""

    @model_validator(mode="after")
    def _check_pauses(self) -> TurnSettings:
        if not self.pause_ms < self.hangover_min_ms <= self.hangover_max_ms:
            raise ValueError(
                "need VOICE_TURN_PAUSE_MS < VOICE_TURN_HANGOVER_MIN_MS <= "
                f"VOICE_TURN_HANGOVER_MAX_MS, got {self.pause_ms}, {self.hangover_min_ms}, "
                f"{self.hangover_max_ms}"
            )
        return self

    @field_validator("vad_tail_gate_db")
    @classmethod
    def _check_tail_gate(cls, db: float) -> float:
        if 0 < db < MIN_TAIL_GATE_DB:
            raise ValueError(
                f"a tail gate of {db:g} dB would cut speech: use {MIN_TAIL_GATE_DB:g} dB or "
                "more (40 is the measured default), or 0 to turn it off"
            )
        return db


class PipelineSettings(_Frozen):
    instructions: str = (
        "You are a helpful voice assistant. Answer in one to three short spoken sentences, "
        "with no lists, markdown or emoji."
    )
    max_history_messages: int = Field(default=24, ge=2)
    tts_lookahead: int = Field(default=2, ge=1, le=8)
    """Sentences whose speech is requested while an earlier one still plays."""
    eager_min_words: int = Field(default=6, ge=1)
    """The first chunk may end at a clause boundary once it has this many words."""
    playout_lead_ms: int = Field(default=200, ge=20, le=2000)
    """Reply audio sent ahead of real time; what is cleared on barge-in, at most."""
    audio_queue_ms: int = Field(default=10_000, ge=500)
    """Reply audio buffered per session before the producer waits."""
    failure_audio: str = "default"
    """What a caller hears when a turn fails for good: ``default`` (the shipped notice),
    ``off``, or a WAV file's path (voice/pipeline/notices.py)."""
    closing_audio: str = "default"
    """What a caller hears before the session ends after too many failed turns."""
    max_consecutive_failures: int = Field(default=3, ge=1)
    """Failed turns in a row after which the session says the closing notice and ends."""


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_sessions: int = Field(default=200, gt=0)
    """Sessions at once, over all workers."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the port (``voice serve --workers``); one event loop uses
    one core, so up to one per core the gateway leaves free."""
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest binary frame a caller may send (1 s of 16 kHz PCM16 is 32 KiB)."""
    drain_timeout_s: float = Field(default=300.0, ge=0)
    """On SIGTERM, how long calls in progress may go on while new ones are refused
    (voice/app/drain.py); a deploy's grace period must be longer."""
    request_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A request or WebSocket handshake not whole this long after it began (or after its
    connection opened) is answered 408 and closed (voice/app/http_guard.py)."""


MIN_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key at least as long as its hash, 256 bits."""


def check_auth_secret(secret: str) -> None:
    """Raise ValueError naming the fix if ``secret`` is too short to sign caller tokens."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ValueError(
            f"VOICE_AUTH_SECRET is {size} bytes; it must be at least {MIN_SECRET_BYTES}: "
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )


class AuthSettings(_Frozen):
    """Who may call (docs/security.md)."""

    secret: SecretStr | None = None
    """HS256 secret for caller tokens (``VOICE_AUTH_SECRET``, at least 32 bytes). Set, every
    caller needs a token; unset, the server listens on loopback only unless ``no_auth``."""
    no_auth: bool = False
    """The operator's explicit opt-out (``voice serve --no-auth``): no caller tokens even on
    a non-loopback address. Logged as a warning at start."""
    allowed_origins: tuple[str, ...] | None = None
    """Browser origins allowed to open a session or post an offer. ``None``: the server's own
    origin and ``VOICE_PUBLIC_URL``'s. Requests without an ``Origin`` are judged by their
    token (or carrier signature) alone."""
    metrics_token: SecretStr | None = None
    """When set, ``/metrics`` needs ``Authorization: Bearer`` with it."""

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None or not secret.get_secret_value():
            return None
        check_auth_secret(secret.get_secret_value())
        return secret

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip()) or None
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for origin in value or ():
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"an origin is scheme://host[:port], got {origin!r}")
        return value


class LimitsSettings(_Frozen):
    """What one caller may use; each refusal has a stable error code (docs/protocol.md)."""

    max_turns_per_min: int = Field(default=20, ge=1)
    """Turns a session may send to transcription in any minute; more are dropped."""
    idle_timeout_s: float = Field(default=120.0, gt=0)
    """A session with no voiced audio this long is ended (close 1000, reason ``idle``)."""
    max_session_s: float = Field(default=3600.0, gt=0)
    """Longest session; a caller token may lower it."""
    max_instructions_chars: int = Field(default=4096, ge=1)
    """Longest system prompt a caller may set (``session.update``, a stream parameter)."""
    offers_per_min: int = Field(default=10, ge=1)
    """WebRTC offers one client address may post in any minute."""
    connecting_share: float = Field(default=0.25, gt=0, le=1)
    """Share of ``max_sessions`` that WebRTC calls not yet connected may hold: junk offers
    cannot fill the server."""


DTMF_DIGITS = "0123456789*#ABCD"


class TelephonySettings(_Frozen):
    """Carrier media streams (Twilio at ``/v1/twilio``, Telnyx at ``/v1/telnyx``)."""

    public_url: str | None = None
    """Base URL callers' carriers reach this service at (``https://voice.example.com``),
    for TwiML stream URLs and signature checks behind a proxy; ``None`` uses the request's
    own Host header."""
    twilio_auth_token: SecretStr | None = None
    """When set, ``X-Twilio-Signature`` is checked on the TwiML request and the stream
    handshake, and what does not match is refused with 403."""
    telnyx_stream_token: SecretStr | None = None
    """When set, the Telnyx handshake must carry it in ``x-telnyx-streaming-auth-token``."""
    lead_ms: int = Field(default=300, ge=40, le=5000)
    """Reply audio sent to the carrier and not yet played there (its mark not echoed), at
    most. Covers the network round trip; a barge-in's ``clear`` drops it at the far end."""
    chunk_ms: int = Field(default=60, ge=20, le=1000)
    """Reply audio per outbound media message; a mark follows each, so this is also the
    granularity of the played position. 60 ms (a TTS engine's usual chunk) sends a third of
    the messages 20 ms would and still places the cut well inside a word."""
    jitter_frames: int = Field(default=3, ge=0, le=25)
    """Early frames held while waiting for a missing one before it is filled with silence."""
    interrupt_digit: str | None = "*"
    """A DTMF key that stops the reply as a barge-in would; ``none`` disables it."""

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"public URL must be http(s)://host[:port][/prefix], got {url!r}")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("public URL must not carry credentials, a query or a fragment")
        return url

    @field_validator("interrupt_digit")
    @classmethod
    def _check_digit(cls, digit: str | None) -> str | None:
        if digit is None or digit.strip().lower() in ("", "none"):
            return None
        digit = digit.strip().upper()
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"interrupt digit must be one of {DTMF_DIGITS} or 'none'")
        return digit


ICE_URL = re.compile(r"(stun|stuns|turn|turns):[^\s/@]+")
"""A STUN or TURN URI (RFC 7064, RFC 7065): scheme, host, optional port and ``?transport=``."""


class IceServer(_Frozen):
    """One STUN or TURN server, as the browser's ``RTCIceServer`` names it."""

    urls: tuple[str, ...] = Field(min_length=1)
    username: str | None = None
    credential: SecretStr | None = None
    """A TURN password; never logged (the repr masks it)."""

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, urls: Any) -> Any:
        return (urls,) if isinstance(urls, str) else urls

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not ICE_URL.fullmatch(url):
                raise ValueError(
                    "ICE server URL must look like stun:host[:port] or turn:host[:port]"
                    f"[?transport=udp|tcp], got {url!r}"
                )
        return urls


class WebRtcSettings(_Frozen):
    """Browsers over WebRTC (``POST /v1/webrtc/offer``)."""

    ice_servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers the server gathers candidates through. None by default: no request
    ever leaves for a public STUN server unless one is configured here. aiortc uses the
    first STUN and the first TURN server of the list."""
    host_addresses: tuple[str, ...] | None = None
    """Local IP addresses to offer as ICE host candidates. ``None``: every interface's
    address except loopback (aioice's choice), plus ``127.0.0.1`` (or ``::1``) when
    ``server.host`` is a loopback address, so a browser on this machine can always connect."""
    max_offer_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    """Largest offer request body; a browser's audio + data channel offer is 2-6 KiB."""
    connect_timeout_s: float = Field(default=15.0, gt=0)
    """A peer that has not connected this long after its answer is closed and forgotten."""

    @field_validator("host_addresses", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            return tuple(items) or None
        return value

    @field_validator("host_addresses")
    @classmethod
    def _check_addresses(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("host addresses must name at least one IP address")
        for item in value:
            try:
                address = ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"host address must be an IP address, got {item!r}") from None
            if address.is_unspecified or address.is_multicast:
                raise ValueError(f"host address must be one interface's address, got {item!r}")
        return value


def pool_size(server: ServerSettings, pipeline: PipelineSettings) -> int:
    """Gateway connections for ``max_sessions`` sessions replying at once: each holds one
    chat stream and up to ``tts_lookahead + 1`` speech streams."""
    return server.max_sessions * (pipeline.tts_lookahead + 2)


class Settings(_Frozen):
    gateway: GatewaySettings = GatewaySettings()
    turn: TurnSettings = TurnSettings()
    pipeline: PipelineSettings = PipelineSettings()
    server: ServerSettings = ServerSettings()
    telephony: TelephonySettings = TelephonySettings()
    webrtc: WebRtcSettings = WebRtcSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()

    @model_validator(mode="before")
    @classmethod
    def _size_the_pool(cls, data: Any) -> Any:
        """Fill in ``gateway.max_connections`` from the other sections unless it was given."""
        if not isinstance(data, Mapping):
            return data
        gateway = data.get("gateway", {})
        if isinstance(gateway, GatewaySettings):
            gateway = {name: getattr(gateway, name) for name in gateway.model_fields_set}
        if not isinstance(gateway, Mapping) or "max_connections" in gateway:
            return data
        try:
            server = ServerSettings.model_validate(data.get("server", {}))
            pipeline = PipelineSettings.model_validate(data.get("pipeline", {}))
        except ValidationError:
            return data  # validating the sections themselves reports it, with its location
        gateway = {**gateway, "max_connections": pool_size(server, pipeline)}
        return {**data, "gateway": gateway}

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: dict[str, Any]) -> Settings:
        """Build settings from ``VOICE_*`` variables, then ``overrides`` per section.

        ``overrides`` maps a section name to field values (CLI flags), e.g.
        ``server={"port": 9000}``; ``None`` values are ignored.
        """
        sections: dict[str, dict[str, Any]] = {name: {} for name in cls.model_fields}
        for var, (section, field) in ENV_VARS.items():
            if var in env and env[var] != "":
                sections[section][field] = env[var]
        if "VOICE_GATEWAY_HEADERS" in env:
            sections["gateway"]["extra_headers"] = parse_headers(env["VOICE_GATEWAY_HEADERS"])
        if env.get("VOICE_WEBRTC_ICE_SERVERS", "").strip():
            sections["webrtc"]["ice_servers"] = parse_ice_servers(env["VOICE_WEBRTC_ICE_SERVERS"])
        for section, values in overrides.items():
            sections[section].update({k: v for k, v in values.items() if v is not None})
        try:
            return cls.model_validate(sections)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


ENV_VARS: dict[str, tuple[str, str]] = {
    "VOICE_GATEWAY_URL": ("gateway", "url"),
    "VOICE_GATEWAY_API_KEY": ("gateway", "api_key"),
    "VOICE_ASR_MODEL": ("gateway", "asr_model"),
    "VOICE_LLM_MODEL": ("gateway", "llm_model"),
    "VOICE_TTS_MODEL": ("gateway", "tts_model"),
    "VOICE_TTS_VOICE": ("gateway", "tts_voice"),
    "VOICE_TTS_FORMAT": ("gateway", "tts_format"),
    "VOICE_ASR_LANGUAGE": ("gateway", "asr_language"),
    "VOICE_LLM_MAX_TOKENS": ("gateway", "llm_max_tokens"),
    "VOICE_GATEWAY_MAX_RETRIES": ("gateway", "max_retries"),
    "VOICE_GATEWAY_CONNECT_TIMEOUT_S": ("gateway", "connect_timeout_s"),
    "VOICE_ASR_TIMEOUT_S": ("gateway", "asr_timeout_s"),
    "VOICE_LLM_FIRST_TOKEN_TIMEOUT_S": ("gateway", "llm_first_token_timeout_s"),
    "VOICE_LLM_STALL_TIMEOUT_S": ("gateway", "llm_stall_timeout_s"),
    "VOICE_TTS_FIRST_BYTE_TIMEOUT_S": ("gateway", "tts_first_byte_timeout_s"),
    "VOICE_TTS_STALL_TIMEOUT_S": ("gateway", "tts_stall_timeout_s"),
    "VOICE_GATEWAY_MAX_CONNECTIONS": ("gateway", "max_connections"),
    "VOICE_GATEWAY_RECEIPT_HEADERS": ("gateway", "receipt_headers"),
    "VOICE_TTS_REF_AUDIO": ("gateway", "tts_ref_audio"),
    "VOICE_TTS_REF_TEXT": ("gateway", "tts_ref_text"),
    "VOICE_TTS_TASK_TYPE": ("gateway", "tts_task_type"),
    "VOICE_TTS_REF_FROM_CALLERS": ("gateway", "tts_ref_from_callers"),
    "VOICE_X402_PAYER": ("gateway", "x402_payer"),
    "VOICE_X402_MAX_PRICE": ("gateway", "x402_max_price"),
    "VOICE_X402_TIMEOUT_S": ("gateway", "x402_timeout_s"),
    "VOICE_GATEWAY_PROBE_S": ("gateway", "probe_s"),
    "VOICE_GATEWAY_PROBE_TIMEOUT_S": ("gateway", "probe_timeout_s"),
    "VOICE_GATEWAY_FAILURE_THRESHOLD": ("gateway", "failure_threshold"),
    "VOICE_VAD_AGGRESSIVENESS": ("turn", "vad_aggressiveness"),
    "VOICE_VAD_TAIL_GATE_DB": ("turn", "vad_tail_gate_db"),
    "VOICE_TURN_HANGOVER_MS": ("turn", "hangover_ms"),
    "VOICE_SPECULATION": ("turn", "speculation"),
    "VOICE_TURN_PAUSE_MS": ("turn", "pause_ms"),
    "VOICE_TURN_SPLIT_MS": ("turn", "split_ms"),
    "VOICE_TURN_HANGOVER_MIN_MS": ("turn", "hangover_min_ms"),
    "VOICE_TURN_HANGOVER_MAX_MS": ("turn", "hangover_max_ms"),
    "VOICE_TURN_HOLD_UNTIL_READY": ("turn", "hold_until_ready"),
    "VOICE_INSTRUCTIONS": ("pipeline", "instructions"),
    "VOICE_TTS_LOOKAHEAD": ("pipeline", "tts_lookahead"),
    "VOICE_PLAYOUT_LEAD_MS": ("pipeline", "playout_lead_ms"),
    "VOICE_FAILURE_AUDIO": ("pipeline", "failure_audio"),
    "VOICE_CLOSING_AUDIO": ("pipeline", "closing_audio"),
    "VOICE_MAX_CONSECUTIVE_FAILURES": ("pipeline", "max_consecutive_failures"),
    "VOICE_HOST": ("server", "host"),
    "VOICE_PORT": ("server", "port"),
    "VOICE_MAX_SESSIONS": ("server", "max_sessions"),
    "VOICE_WORKERS": ("server", "workers"),
    "VOICE_REQUEST_TIMEOUT_S": ("server", "request_timeout_s"),
    "VOICE_DRAIN_TIMEOUT_S": ("server", "drain_timeout_s"),
    "VOICE_PUBLIC_URL": ("telephony", "public_url"),
    "VOICE_TWILIO_AUTH_TOKEN": ("telephony", "twilio_auth_token"),
    "VOICE_TELNYX_STREAM_TOKEN": ("telephony", "telnyx_stream_token"),
    "VOICE_TELEPHONY_LEAD_MS": ("telephony", "lead_ms"),
    "VOICE_TELEPHONY_CHUNK_MS": ("telephony", "chunk_ms"),
    "VOICE_TELEPHONY_JITTER_FRAMES": ("telephony", "jitter_frames"),
    "VOICE_DTMF_INTERRUPT_DIGIT": ("telephony", "interrupt_digit"),
    "VOICE_WEBRTC_HOST_ADDRESSES": ("webrtc", "host_addresses"),
    "VOICE_WEBRTC_MAX_OFFER_BYTES": ("webrtc", "max_offer_bytes"),
    "VOICE_WEBRTC_CONNECT_TIMEOUT_S": ("webrtc", "connect_timeout_s"),
    "VOICE_AUTH_SECRET": ("auth", "secret"),
    "VOICE_ALLOWED_ORIGINS": ("auth", "allowed_origins"),
    "VOICE_METRICS_TOKEN": ("auth", "metrics_token"),
    "VOICE_NO_AUTH": ("auth", "no_auth"),
    "VOICE_MAX_TURNS_PER_MIN": ("limits", "max_turns_per_min"),
    "VOICE_IDLE_TIMEOUT_S": ("limits", "idle_timeout_s"),
    "VOICE_MAX_SESSION_S": ("limits", "max_session_s"),
    "VOICE_MAX_INSTRUCTIONS_CHARS": ("limits", "max_instructions_chars"),
    "VOICE_WEBRTC_OFFERS_PER_MIN": ("limits", "offers_per_min"),
    "VOICE_WEBRTC_CONNECTING_SHARE": ("limits", "connecting_share"),
}
"""Every environment variable `voice` reads, and the setting it fills."""


def normalise_gateway_url(url: str) -> str:
    """``https://gw.example/`` → ``https://gw.example/v1``; logs what it changed. A path that
    already has a ``/v1`` segment (``/v1/<pipeline id>``) is kept.

    Refuses credentials in the URL (``user:pass@``): a URL is logged, and shown in reprs.
    """
    original = url
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if "@" in parts.netloc or ("@" in url and not parts.netloc):
        raise ValueError(
            "gateway URL must not carry credentials (user:password@): "
            "put an API key in VOICE_GATEWAY_API_KEY, other credentials in VOICE_GATEWAY_HEADERS"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"gateway URL must be http(s)://host[:port]/v1, got {original!r}")
    if parts.query or parts.fragment:
        raise ValueError("gateway URL must not carry a query string or fragment")
    # A path with a /v1 segment is kept as it is: RunInfra's pipeline-scoped base URL is
    # https://api.runinfra.ai/v1/<pipeline id>, and the routes follow the pipeline id.
    if "v1" not in parts.path.split("/"):
        url += "/v1"
    if url != original:
        log.info("gateway URL %s normalised to %s", original, url)
    return url


def parse_headers(spec: str) -> dict[str, str]:
    """``"X-A: 1; X-B: two"`` → ``{"X-A": "1", "X-B": "two"}`` (newlines work as ``;``)."""
    headers: dict[str, str] = {}
    for item in spec.replace("\n", ";").split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"VOICE_GATEWAY_HEADERS: expected 'Name: value', got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


def parse_ice_servers(spec: str) -> list[Any]:
    """``VOICE_WEBRTC_ICE_SERVERS``: comma-separated URLs, or a JSON list as a browser takes.

    ``"stun:stun.example:3478, turn:turn.example?transport=tcp"`` or
    ``'[{"urls": "turn:turn.example", "username": "u", "credential": "p"}]'``. TURN
    credentials only fit the JSON form. The items are validated as :class:`IceServer`.
    """
    spec = spec.strip()
    if not spec.startswith("["):
        return [{"urls": url.strip()} for url in spec.split(",") if url.strip()]
    try:
        servers = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"VOICE_WEBRTC_ICE_SERVERS is not valid JSON: {exc.msg}") from None
    if not isinstance(servers, list):
        raise ConfigError("VOICE_WEBRTC_ICE_SERVERS: expected a JSON list of servers")
    return [{"urls": item} if isinstance(item, str) else item for item in servers]


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        lines.append(f"{where}: {err['msg']}")
    return "invalid settings: " + "; ".join(lines)
