"""HttpGateway: the :class:`~voice.gateway.base.Gateway` protocol over any OpenAI-compatible
HTTP gateway. The only module in `voice` that imports httpx.

An HTTP/1.1 keep-alive pool per gateway: one ``httpx.AsyncClient``, or several when the pool
is large (:data:`SHARD_CONNECTIONS`), each request sent by the least busy. Every httpx
exception and every non-2xx status is translated here into the :mod:`voice.errors` tree with
``raise ... from exc``; nothing above this module sees httpx. Body parsing is sans-I/O, in
:mod:`voice.gateway.sse` and :mod:`voice.gateway.http_wire`.

Retries: a call is replayed only while that cannot duplicate anything its caller saw:
transcription, model listing, and speech before its first audio byte (ASR and TTS keep one
``Idempotency-Key`` across attempts), and chat only when the connection failed before the
request was sent. How often and after how long is :class:`~voice.gateway.retry.RetryPolicy`'s:
only ``retryable`` errors, at most ``max_retries`` times, with exponential backoff and jitter;
a long ``Retry-After`` is raised instead of waited out; 402 is never retried blindly: with a
payer set (``VOICE_X402_PAYER``, :mod:`voice.gateway.x402`), the request is sent once more
with the payer's headers, and a second 402 is raised.

Each call may carry a :class:`~voice.core.record.GatewayCall`, filled in here: the
idempotency key, every attempt, the gateway's request id, the receipts (the configured
response headers, a ``receipt`` in a JSON body), the price paid, a completion's id.

The API key and the extra headers sit only in the client's default headers: we log no
headers, and any gateway text quoted in an error message or a log line, kept as a 402
challenge or as a receipt, has the key and every header value (of :data:`MIN_MASKED`
characters or more) masked, and a payment proof too.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx

from voice.audio.frames import PcmFrame
from voice.config import GatewaySettings
from voice.core.dialog import ChatMessage
from voice.core.record import GatewayCall, Receipt
from voice.errors import (
    AudioFormatError,
    ConfigError,
    GatewayAuthError,
    GatewayError,
    GatewayProtocolError,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentRequired,
    RateLimited,
    error_class_for_status,
)
from voice.gateway import http_wire as wire
from voice.gateway.base import ReferenceVoice, Voice, closing
from voice.gateway.redact import Redactor
from voice.gateway.ref_audio import configured_voice
from voice.gateway.retry import Pay, RetryPolicy, retried
from voice.gateway.x402 import Payer

log = logging.getLogger(__name__)

T = TypeVar("T")

WARM_INTERVAL_S = 30.0
"""``warm()`` does real work at most this often, so callers may call it per session."""
KEEPALIVE_EXPIRY_S = 60.0
"""Idle pooled connections live this long: longer than :data:`WARM_INTERVAL_S`, so warming
between sessions keeps the pool open."""
DRAIN_S = 0.02
"""After ``[DONE]``, how long we read on to the end of the body before ending the chat
stream (the reply's last sentence goes to speech only then). A body read to its end hands
its connection back to the pool; the end normally follows ``[DONE]`` at once, so this only
bounds the wait for a gateway that holds the body open, whose connection is then closed."""
MIN_MASKED = 4
"""Extra header values shorter than this are not masked: no credential is that short, and
masking ``1`` or ``v1`` would garble ``HTTP 401`` or ``/v1/models``."""
ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of a non-2xx body we read (and keep as a 402 challenge)."""
SHARD_CONNECTIONS = 16
"""A pool of more connections than this is split over several clients. httpcore's pool walks
every connection it holds (and asks the kernel whether each idle one's socket has closed)
whenever a request starts or a response ends: with hundreds of sessions streaming at once,
that walk cost more of the server's CPU than the requests themselves (16 % at 100 Twilio
calls). Split, each walk covers one client's share."""
MAX_SHARDS = 64
"""Clients at most: a larger pool gets larger shares."""

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before any byte of the request left: the only ones after which chat is replayed."""
_IDENTITY = {"Accept-Encoding": "identity"}
"""For streamed bodies: a compressor upstream may hold back tokens or audio to fill a block."""
_CLOSED = httpx.ByteStream(b"")
"""Put in place of a closed response's stream. httpx 0.28's stream refers back to its response
(encode/httpx#3733), a cycle that keeps the response, its request and httpcore's objects, ~40
in all, until the collector's next pass; at 100 calls, those passes freed ~10,000 objects each
and paused the loop 20-35 ms. Without the cycle, reference counting frees them at once."""

try:
    _VERSION = importlib.metadata.version("voice")
except importlib.metadata.PackageNotFoundError:  # running from an uninstalled source tree
    _VERSION = "0+unknown"


@dataclass(slots=True)
class _Shard:
    """One client of the split pool, and how many of our requests it has open."""

    client: httpx.AsyncClient
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    path: str  # relative to the base URL, which ends in /v1
    label: str  # how messages name it: "the <label> request"
    timeout: httpx.Timeout
    first_s: float
    """From sending the request to the response's first body byte (for a whole-body route,
    its last)."""
    stall_s: float
    """Between two body chunks, once the first has come."""


@dataclass(slots=True)
class _Clock:
    """When a response's first byte is due, on the event loop's clock (set by ``_open``)."""

    due: float = 0.0


class HttpGateway:
    """Talks to the OpenAI-compatible gateway at ``settings.url`` (which includes ``/v1``).

    ``transport`` replaces the network, e.g. with ``httpx.MockTransport`` in tests.
    """

    def __init__(
        self, settings: GatewaySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if settings.url is None:
            raise ConfigError("HttpGateway needs a gateway URL (VOICE_GATEWAY_URL)")
        self._settings = settings
        self._voice = configured_voice(settings)  # reads a reference recording once
        self._payer = Payer.from_settings(settings)  # imports the payment hook now
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        headers = {"User-Agent": f"voice/{_VERSION}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(settings.extra_headers)
        masked = {v for v in settings.extra_headers.values() if len(v) >= MIN_MASKED}
        if isinstance(self._voice, ReferenceVoice) and "?" in self._voice.audio:
            masked.add(self._voice.audio)  # a pre-signed URL: its query is a credential
        self._redact = Redactor(masked | {key})
        self._shards = [
            _Shard(
                httpx.AsyncClient(
                    base_url=settings.url,
                    headers=headers,
                    transport=shard_transport,
                    follow_redirects=False,
                    trust_env=False,  # only cli.py reads the environment
                )
            )
            for shard_transport in _transports(settings.max_connections, transport)
        ]

        def route(method: str, path: str, label: str, first_s: float, stall_s: float) -> _Route:
            # httpx's connect and pool bound the wait for a connection; the first byte and
            # each stall are timed here (voice/gateway/http.py's _body), httpx's read only
            # as a backstop.
            connect = settings.connect_timeout_s
            read = max(first_s, stall_s) + 1.0
            timeout = httpx.Timeout(connect=connect, read=read, write=first_s, pool=connect)
            return _Route(method, path, label, timeout, first_s, stall_s)

        s = settings
        self._asr = route(
            "POST", "audio/transcriptions", "transcription", s.asr_timeout_s, s.asr_timeout_s
        )
        self._chat = route(
            "POST", "chat/completions", "chat", s.llm_first_token_timeout_s, s.llm_stall_timeout_s
        )
        self._tts = route(
            "POST", "audio/speech", "speech", s.tts_first_byte_timeout_s, s.tts_stall_timeout_s
        )
        self._models = route("GET", "models", "models", s.connect_timeout_s, s.connect_timeout_s)
        self._retry = RetryPolicy(
            max_retries=settings.max_retries, backoff_s=settings.retry_backoff_s
        )
        self._warmed_at: float | None = None

    def __repr__(self) -> str:
        return f"HttpGateway(url={self._settings.url!r})"

    async def __aenter__(self) -> HttpGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.client.aclose()
        if self._payer is not None:
            self._payer.close()

    # -- the Gateway protocol -------------------------------------------------------------

    async def transcribe(
        self, wav: bytes, *, prompt: str | None = None, call: GatewayCall | None = None
    ) -> str:
        form = {"model": self._settings.asr_model, "response_format": "json"}
        if self._settings.asr_language:
            form["language"] = self._settings.asr_language
        if prompt:
            form["prompt"] = prompt
        return await self._call(
            self._asr,
            lambda r: wire.transcript(r.content, _content_type(r)),
            call=_keyed(call, str(uuid.uuid4())),
            data=form,
            files={"file": ("audio.wav", wav, "audio/wav")},
        )

    def chat(
        self, messages: Sequence[ChatMessage], *, call: GatewayCall | None = None
    ) -> AsyncGenerator[str, None]:
        s = self._settings
        body: dict[str, Any] = {
            "model": s.llm_model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
        }
        if s.llm_max_tokens is not None:
            body["max_tokens"] = s.llm_max_tokens
        if s.llm_temperature is not None:
            body["temperature"] = s.llm_temperature
        # Replayed only if the request never left: else the gateway may be generating already.
        call = call or GatewayCall()
        attempt = partial(self._chat_once, body, call)
        return retried(
            self._retry,
            attempt,
            label=self._chat.label,
            replayable=_unsent,
            pay=self._pay_for(call),
        )

    def speak(
        self, text: str, *, voice: Voice = None, call: GatewayCall | None = None
    ) -> AsyncGenerator[PcmFrame, None]:
        s = self._settings
        body = {"model": s.tts_model, "input": text} | _voice_fields(voice or self._voice)
        body["response_format"] = s.tts_format
        # One key for every attempt, so the gateway can tell a replay from a new request.
        call = _keyed(call, str(uuid.uuid4()))
        attempt = partial(self._speech_once, body, call)
        return retried(self._retry, attempt, label=self._tts.label, pay=self._pay_for(call))

    async def models(self) -> list[str]:
        return await self._call(self._models, lambda r: wire.model_ids(r.content), call=None)

    async def warm(self) -> None:
        now = time.monotonic()
        if self._warmed_at is not None and now - self._warmed_at < WARM_INTERVAL_S:
            return
        self._warmed_at = now  # set before awaiting, so concurrent callers do not pile on
        try:
            with self._least_busy() as client:
                response = await client.get(
                    self._models.path, headers=_call_headers(None), timeout=self._models.timeout
                )
            log.debug("warmed the gateway connection (models: HTTP %d)", response.status_code)
        except httpx.HTTPError as exc:
            log.debug("warming the gateway connection failed: %s", self._redact(repr(exc)))

    async def probe(self, timeout_s: float) -> list[str]:
        """Is the gateway answering now? Its model ids from one ``GET models``, not retried,
        each phase within ``timeout_s`` (voice/app/gateway_health.py asks). Errors are those
        of :meth:`models`; an answer also warms the pool, as :meth:`warm` would."""
        m = self._models
        route = _Route(m.method, m.path, m.label, httpx.Timeout(timeout_s), timeout_s, timeout_s)
        clock = _Clock()
        async with self._open(route, clock=clock) as response:
            try:
                async with asyncio.timeout_at(clock.due):
                    await response.aread()
            except TimeoutError:
                raise self._timeout(route, _request_id(response), first=True) from None
            ids = self._parse(route, response, lambda: wire.model_ids(response.content))
        self._warmed_at = time.monotonic()
        return ids

    # -- one request ------------------------------------------------------------------------

    @asynccontextmanager
    async def _open(
        self,
        route: _Route,
        *,
        clock: _Clock,
        call: GatewayCall | None = None,
        paid: Mapping[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **content: Any,
    ) -> AsyncGenerator[httpx.Response, None]:
        """Send one request; yield its 2xx response with the body unread; always close it.

        Its head must have arrived within the route's first-byte time of the request going
        out (once connected: connecting is bounded by httpx's connect and pool timeouts),
        else it is a :class:`GatewayTimeout`; ``clock.due`` is then when the body's first
        byte is due, for :meth:`_body`.

        ``call`` (if any) notes the attempt, the gateway's request id and the receipt
        headers; ``paid`` are a payer's headers, masked wherever the gateway echoes them.
        An httpx error raised while sending, or in the caller's block while it reads the
        body, leaves as a :class:`GatewayError`; so does a non-2xx status.
        """
        key = call.idempotency_key if call is not None else None
        call_headers = _call_headers(key) | (headers or {}) | dict(paid or {})
        request_id = call_headers["X-Request-ID"]
        proofs = _proofs(paid)
        if call is not None:
            call.attempts += 1
            call.request_id = request_id
        loop = asyncio.get_running_loop()
        # Until the request goes out, httpx's pool and connect timeouts bound the wait (and a
        # request that never left stays replayable); the first-byte clock starts then.
        clock.due = math.inf
        limit = asyncio.timeout(None)

        async def trace(event: str, info: object) -> None:
            if event == "http11.send_request_headers.started":  # connected: the clock starts
                clock.due = loop.time() + route.first_s
                limit.reschedule(clock.due)

        with self._least_busy() as client:
            request = client.build_request(
                route.method,
                route.path,
                headers=call_headers,
                timeout=route.timeout,
                extensions={"trace": trace},
                **content,
            )
            started = time.monotonic()
            try:
                async with limit:
                    response = await client.send(request, stream=True)
                if clock.due == math.inf:  # a transport that reports no progress (tests')
                    clock.due = loop.time() + route.first_s
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, route, request_id) from exc
            except TimeoutError:
                raise self._timeout(route, request_id, first=True) from None
            try:
                ms, rid = 1000 * (time.monotonic() - started), _request_id(response)
                log.debug(
                    "%s: HTTP %d in %.0f ms (request id %s)",
                    route.path,
                    response.status_code,
                    ms,
                    rid,
                )
                if call is not None:
                    call.request_id = rid
                    receipts = wire.header_receipts(
                        response.headers, self._settings.receipt_headers
                    )
                    self._note_receipts(call, receipts, proofs)
                if not response.is_success:
                    error_body = await _some(response, clock.due + route.stall_s)
                    raise self._status_error(response, error_body, route, also=proofs)
                yield response
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, route, request_id) from exc
            finally:
                await response.aclose()
                response.stream = _CLOSED

    @contextmanager
    def _least_busy(self) -> Iterator[httpx.AsyncClient]:
        """The client with the fewest of our requests open, counting this one until it ends
        (its response closed, which returns the connection to that client's pool)."""
        shard = min(self._shards, key=_in_flight)
        shard.in_flight += 1
        try:
            yield shard.client
        finally:
            shard.in_flight -= 1

    async def _call(
        self,
        route: _Route,
        parse: Callable[[httpx.Response], T],
        *,
        call: GatewayCall | None,
        **content: Any,
    ) -> T:
        """A whole-body request, retried (and paid for) as the module docstring says."""

        async def attempt(paid: Mapping[str, str]) -> AsyncGenerator[T, None]:
            clock = _Clock()
            async with self._open(route, clock=clock, call=call, paid=paid, **content) as resp:
                try:
                    async with asyncio.timeout_at(clock.due):
                        await resp.aread()
                except TimeoutError:
                    raise self._timeout(route, _request_id(resp), first=True) from None
                result = self._parse(route, resp, lambda: parse(resp))
                if call is not None:
                    found = wire.json_body_receipts(resp.content)
                    self._note_receipts(call, found, _proofs(paid))
            yield result

        pay = self._pay_for(call) if call is not None else None
        calls = retried(self._retry, attempt, label=route.label, pay=pay)
        async with closing(calls) as results:
            return await anext(results)

    def _pay_for(self, call: GatewayCall) -> Pay | None:
        """What answers a 402 for ``call``: the payer, noting the price; None without one."""
        payer = self._payer
        if payer is None:
            return None

        async def pay(error: PaymentRequired) -> Mapping[str, str]:
            headers, price = await payer.pay(error)
            call.price = str(price)
            return headers

        return pay

    def _note_receipts(
        self, call: GatewayCall, found: Sequence[tuple[str, Any]], also: Sequence[str]
    ) -> None:
        for source, value in found:
            call.add_receipt(Receipt(source, self._redact.value(value, also)))

    async def _chat_once(
        self, body: dict[str, Any], call: GatewayCall, paid: Mapping[str, str]
    ) -> AsyncGenerator[str, None]:
        """One chat request's text deltas."""
        headers = {"Accept": "text/event-stream", **_IDENTITY}
        clock = _Clock()
        async with self._open(
            self._chat, clock=clock, call=call, paid=paid, json=body, headers=headers
        ) as response:
            if _content_type(response) == "application/json":
                # The gateway ignored stream=true and sent the whole completion.
                try:
                    async with asyncio.timeout_at(clock.due + self._chat.stall_s):
                        whole = await response.aread()
                except TimeoutError:
                    raise self._timeout(self._chat, _request_id(response), first=True) from None
                text = self._parse(self._chat, response, partial(wire.completion_text, whole))
                self._note_receipts(call, wire.json_body_receipts(whole), _proofs(paid))
                if text:
                    yield text
                return
            stream = wire.ChatStream()
            chunks = self._body(response, self._chat, clock.due)
            try:
                async for chunk in chunks:
                    for delta in stream.feed(chunk):
                        yield delta
                    if stream.done or stream.failure:
                        break
                else:
                    for delta in stream.end_of_stream():
                        yield delta
            finally:  # a reply cut short by the caller still records what came
                call.completion_id = stream.completion_id
                self._note_receipts(call, stream.receipts, _proofs(paid))
            if stream.failure is not None:
                raise self._stream_error(stream.failure, response) from stream.failure
            if stream.done:
                await _drain(chunks)

    async def _speech_once(
        self, body: dict[str, str], call: GatewayCall, paid: Mapping[str, str]
    ) -> AsyncGenerator[PcmFrame, None]:
        """One speech request's audio; blank text sends no request."""
        if not body["input"].strip():
            return
        clock = _Clock()
        async with self._open(
            self._tts, clock=clock, call=call, paid=paid, json=body, headers=_IDENTITY
        ) as response:
            ctype = _content_type(response)
            if ctype == "application/json" or ctype.startswith("text/"):
                detail = (await _some(response, clock.due)).decode("utf-8", "replace")
                raise self._protocol_error(self._tts, response, f"{ctype}: {detail}")
            pcm = wire.SpeechStream(self._settings.tts_format)
            try:
                async for chunk in self._body(response, self._tts, clock.due):
                    if (frame := pcm.feed(chunk)) is not None:
                        yield frame
                if pcm.end():
                    log.debug("speech ended half way through a sample; dropped a byte")
            except AudioFormatError as exc:
                raise self._protocol_error(self._tts, response, str(exc)) from exc

    async def _body(
        self, response: httpx.Response, route: _Route, deadline: float
    ) -> AsyncGenerator[bytes, None]:
        """``response``'s body: the first chunk by ``deadline``, each next one within the
        route's stall time; a :class:`GatewayTimeout` past either. Only the wait for the
        gateway is timed, not the time the reader takes between chunks."""
        chunks = response.aiter_bytes()
        limit: asyncio.Timeout = asyncio.timeout_at(deadline)
        first = True
        while True:
            try:
                async with limit:
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self._timeout(route, _request_id(response), first=first) from None
            first = False
            yield chunk
            limit = asyncio.timeout(route.stall_s)

    def _timeout(self, route: _Route, request_id: str, *, first: bool) -> GatewayTimeout:
        if first:
            what = f"the gateway sent no {route.label} response within {route.first_s:g} s"
        else:
            what = f"the gateway's {route.label} response stalled for {route.stall_s:g} s"
        return GatewayTimeout(
            self._redact(f"{what} (request id {request_id})"),
            request_id=request_id,
            route=self._shards[0].client.base_url.path + route.path,
        )

    # -- errors, all built here -------------------------------------------------------------

    def _parse(self, route: _Route, response: httpx.Response, parse: Callable[[], T]) -> T:
        """``parse()``, with its failures turned into gateway errors."""
        try:
            return parse()
        except wire.ChatStreamError as exc:
            raise self._stream_error(exc, response) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise self._protocol_error(route, response, str(exc)) from exc

    def _status_error(
        self, response: httpx.Response, body: bytes, route: _Route, *, also: Sequence[str] = ()
    ) -> GatewayError:
        status = response.status_code
        cls = error_class_for_status(status)
        text = body.decode("utf-8", "replace")
        info = wire.error_body(text)
        retry_after = wire.retry_after(response.headers) if cls is RateLimited else None
        verb = {
            PaymentRequired: "asked for payment for",
            RateLimited: "rate limited",
            GatewayAuthError: "refused our API key for",
            GatewayTimeout: "timed out on",
            GatewayUnavailable: "failed",
        }.get(cls, "rejected")
        message = f"gateway {verb} the {route.label} request: HTTP {status}"
        message += _describe(info)
        if retry_after is not None:
            message += f"; retry after {round(retry_after, 1):g} s"
        error = self._error(cls, message, response, status=status, error_type=info.type, also=also)
        if isinstance(error, RateLimited):
            error.retry_after = retry_after
        if isinstance(error, PaymentRequired):
            # Verbatim but for our secrets: the caller may need to answer it, and may not be
            # the party that configured the headers (a rejected payment proof is echoed).
            error.challenge = self._redact(text, also)
        return error

    def _stream_error(
        self, failure: ValueError | wire.ChatStreamError, response: httpx.Response
    ) -> GatewayError:
        if not isinstance(failure, wire.ChatStreamError):
            return self._protocol_error(self._chat, response, str(failure))
        info = failure.info
        cls = error_class_for_status(info.status) if info.status else None
        message = "gateway sent an error in the middle of the chat reply:"
        message += _describe(info) or " (no details)"
        return self._error(
            cls or wire.error_class_for_type(info.type),
            message,
            response,
            status=info.status,
            error_type=info.type,
        )

    def _protocol_error(self, route: _Route, response: httpx.Response, detail: str) -> GatewayError:
        message = f"gateway sent an unreadable {route.label} response: {_trim(detail)}"
        return self._error(GatewayProtocolError, message, response, status=response.status_code)

    def _error(
        self,
        cls: type[GatewayError],
        message: str,
        response: httpx.Response,
        *,
        status: int | None = None,
        error_type: str | None = None,
        also: Sequence[str] = (),
    ) -> GatewayError:
        request_id = _request_id(response)
        return cls(
            self._redact(f"{message} (request id {request_id})", also),
            status=status,
            error_type=self._redact(error_type, also) if error_type else None,
            request_id=request_id,
            route=response.request.url.path,
        )

    def _transport_error(
        self, exc: httpx.HTTPError, route: _Route, request_id: str
    ) -> GatewayError:
        t = route.timeout
        cls: type[GatewayError] = GatewayTimeout
        if isinstance(exc, httpx.ConnectTimeout):
            what = f"could not connect to the gateway within {t.connect:g} s"
        elif isinstance(exc, httpx.PoolTimeout):
            what = f"no gateway connection came free within {t.pool:g} s"
        elif isinstance(exc, httpx.WriteTimeout):
            what = f"could not send the request within {t.write:g} s"
        elif isinstance(exc, httpx.TimeoutException):
            what = f"the gateway sent nothing for {t.read:g} s"
        elif isinstance(exc, httpx.DecodingError):
            cls, what = GatewayProtocolError, f"could not decode the response ({exc})"
        elif isinstance(exc, httpx.ConnectError):
            cls, what = GatewayUnavailable, f"could not connect to the gateway ({_why(exc)})"
        else:
            cls, what = GatewayUnavailable, f"the gateway connection failed ({_why(exc)})"
        return cls(
            self._redact(f"{what} during the {route.label} request (request id {request_id})"),
            request_id=request_id,
            route=self._shards[0].client.base_url.path + route.path,
        )


def _transports(
    max_connections: int, given: httpx.AsyncBaseTransport | None
) -> list[httpx.AsyncBaseTransport]:
    """One transport (pool) per client: ``max_connections`` shared out in pools of at most
    about :data:`SHARD_CONNECTIONS`. A transport given (tests' ``MockTransport``) is used alone."""
    if given is not None:
        return [given]
    count = min(MAX_SHARDS, -(-max_connections // SHARD_CONNECTIONS))
    ssl_context = httpx.create_ssl_context()  # built once (it reads the CA bundle), shared
    transports: list[httpx.AsyncBaseTransport] = []
    for index in range(count):
        size = max_connections // count + (index < max_connections % count)
        limits = httpx.Limits(
            max_connections=size,
            max_keepalive_connections=size,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        transports.append(httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, http1=True))
    return transports


def _in_flight(shard: _Shard) -> int:
    return shard.in_flight


def _unsent(error: GatewayError) -> bool:
    """Whether ``error`` came before any byte of the request left."""
    return isinstance(error.__cause__, _NOT_SENT)


async def _some(response: httpx.Response, deadline: float) -> bytes:
    """The start of an error's body: what came by ``deadline``, at most
    :data:`ERROR_BODY_LIMIT` bytes (what it says is in its first bytes)."""
    body = bytearray()
    with suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= ERROR_BODY_LIMIT:
                    break
    return bytes(body[:ERROR_BODY_LIMIT])


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    with suppress(httpx.HTTPError, GatewayError, TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in chunks:
                pass


def _call_headers(idempotency_key: str | None) -> dict[str, str]:
    # A fresh request id per HTTP request, so each attempt can be found in the gateway's
    # logs; the idempotency key stays the same across attempts so the gateway can dedupe.
    # RunInfra reads the client's id from X-Client-Request-Id; others from X-Request-ID.
    request_id = str(uuid.uuid4())
    headers = {"X-Request-ID": request_id, "X-Client-Request-Id": request_id}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _proofs(paid: Mapping[str, str] | None) -> tuple[str, ...]:
    """A payer's header values, to mask wherever the gateway might echo them."""
    return tuple(v for v in (paid or {}).values() if len(v) >= MIN_MASKED)


def _keyed(call: GatewayCall | None, idempotency_key: str) -> GatewayCall:
    """``call`` (or a new one, unrecorded) carrying the key every attempt will send."""
    call = call if call is not None else GatewayCall()
    call.idempotency_key = idempotency_key
    return call


def _voice_fields(voice: str | ReferenceVoice) -> dict[str, str]:
    """A speech body's voice: ``voice``, or RunInfra's reference-audio fields in its place."""
    if isinstance(voice, ReferenceVoice):
        return {"ref_audio": voice.audio, "ref_text": voice.text, "task_type": voice.task_type}
    return {"voice": voice}


def _describe(info: wire.ErrorInfo) -> str:
    """`` type: message`` (either part may be missing), to append to a message."""
    return (f" {info.type}" if info.type else "") + (
        f": {_trim(info.message)}" if info.message else ""
    )


def _trim(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _why(exc: Exception) -> str:
    """What went wrong, in words: the system's for the socket error under ``exc`` (anyio
    reports a refused connection as "All connection attempts failed", the cause's cause)."""
    cause: BaseException | None = exc
    for _ in range(8):  # a chain is a few links; a bound in case one loops
        if cause is None:
            break
        if isinstance(cause, socket.gaierror) and cause.strerror:
            return cause.strerror
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _request_id(response: httpx.Response) -> str:
    headers = response.headers
    return str(
        headers.get("x-request-id")
        or headers.get("request-id")
        or response.request.headers["X-Request-ID"]
    )


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip().lower()
