"""Serve any :class:`~voice.gateway.base.Gateway` as OpenAI-compatible HTTP (``voice gateway``).

Routes: ``POST /v1/audio/transcriptions`` (multipart), ``POST /v1/chat/completions`` (JSON,
or SSE with ``stream: true``), ``POST /v1/audio/speech`` (streamed ``pcm`` or ``wav``),
``GET /v1/models`` and ``GET /health``; with a :class:`SimulatedGateway`, also
``GET``/``POST /v1/simulate`` to read or replace its settings while it runs, and its billing
(x402 challenges, receipts: :mod:`voice.gateway.sim_billing`). Speech takes a named
``voice`` or a reference-audio one (``ref_audio`` + ``ref_text``, ``task_type``), which the
gateway may refuse (400).

The wire rules a client can rely on:

- every response carries ``x-request-id`` (the caller's ``X-Request-ID`` echoed, or a new one);
- with an API key set, every route but ``/health`` needs ``Authorization: Bearer <key>``;
- errors are ``{"error": {"message", "type", "code"}}`` with ``code`` from :mod:`voice.errors`,
  except a 402, whose body is the gateway's payment challenge verbatim; a 429 sets
  ``Retry-After``;
- a stream answers with its status only once the gateway produced the first chunk, so an
  error up front is a proper error response; a failure after that aborts the connection
  mid-body, and the client sees a broken stream rather than a short but valid one;
- when the client goes away, the gateway request behind it is cancelled.

Nothing here knows how the gateway works: this module only moves data between HTTP and the
:class:`Gateway` protocol.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice.errors import (
    GatewayAuthError,
    GatewayBadRequest,
    GatewayError,
    GatewayProtocolError,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentRequired,
    RateLimited,
    VoiceError,
)
from voice.gateway.base import Gateway, closing
from voice.gateway.openai_format import (
    ChatRequest,
    SpeechRequest,
    chat_completion,
    error_body,
    pcm_bytes,
    sse_chunks,
    wav_bytes,
)
from voice.gateway.sim_billing import SimulatedBilling
from voice.gateway.simulated import SimulatedGateway, SimulationSettings

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest audio file a transcription request may carry (OpenAI's limit)."""

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A caller's request id is echoed only if it is a short run of visible ASCII."""

_T = TypeVar("_T")
_Model = TypeVar("_Model", bound=BaseModel)
_Handler = Callable[[Request], Awaitable[Response]]


def create_gateway_app(gateway: Gateway, *, api_key: str | None = None) -> Starlette:
    """An ASGI app serving ``gateway``; ``api_key`` (if set) is required as a Bearer token."""
    api = _Api(gateway)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", _guarded(api.models), methods=["GET"]),
        Route("/v1/audio/transcriptions", _guarded(api.transcribe), methods=["POST"]),
        Route("/v1/chat/completions", _guarded(api.chat), methods=["POST"]),
        Route("/v1/audio/speech", _guarded(api.speech), methods=["POST"]),
    ]
    # The request context first: a request without the key is refused before any billing.
    middleware = [Middleware(_RequestContext, api_key=api_key)]
    if isinstance(gateway, SimulatedGateway):
        routes.append(Route("/v1/simulate", _simulate_route(gateway), methods=["GET", "POST"]))
        routes.append(Route("/v1/simulate/stats", _stats_route(gateway)))
        middleware.append(Middleware(SimulatedBilling, gateway=gateway))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_exception},
    )


class _Api:
    """The route handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        ids = await _unless_disconnected(request.receive, self.gateway.models())
        if ids is None:
            return _GONE
        created = int(time.time())
        data = [{"id": i, "object": "model", "created": created, "owned_by": "voice"} for i in ids]
        return JSONResponse({"object": "list", "data": data})

    async def transcribe(self, request: Request) -> Response:
        async with request.form(max_files=1) as form:
            upload, model = form.get("file"), form.get("model")
            if not isinstance(upload, UploadFile):
                raise _bad_request("multipart field 'file' (the audio) is required")
            if not isinstance(model, str) or not model:
                raise _bad_request("multipart field 'model' is required")
            response_format = form.get("response_format") or "json"
            if response_format not in ("json", "text"):
                raise _bad_request(
                    f"response_format must be 'json' or 'text', not {response_format!r}"
                )
            prompt = form.get("prompt")
            prompt = prompt if isinstance(prompt, str) and prompt else None
            wav = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(wav) > MAX_UPLOAD_BYTES:
            raise GatewayBadRequest(f"audio file is over {MAX_UPLOAD_BYTES} bytes", status=413)
        transcript = self.gateway.transcribe(wav, prompt=prompt)
        text = await _unless_disconnected(request.receive, transcript)
        if text is None:
            return _GONE
        if response_format == "text":
            return PlainTextResponse(text)
        return JSONResponse({"text": text})

    async def chat(self, request: Request) -> Response:
        body = await _parse_json(request, ChatRequest)
        deltas = self.gateway.chat([m.to_chat() for m in body.messages])
        if body.stream:
            return _GatewayStream(sse_chunks(deltas, body.model), media_type="text/event-stream")
        text = await _unless_disconnected(request.receive, _join(deltas))
        if text is None:
            return _GONE
        return JSONResponse(chat_completion(body.model, text))

    async def speech(self, request: Request) -> Response:
        body = await _parse_json(request, SpeechRequest)
        frames = self.gateway.speak(body.input, voice=body.reference() or body.voice)
        if body.response_format == "wav":
            return _GatewayStream(wav_bytes(frames), media_type="audio/wav")
        return _GatewayStream(pcm_bytes(frames), media_type="audio/pcm")


def _simulate_route(gateway: SimulatedGateway) -> _Handler:
    async def simulate(request: Request) -> Response:
        """Read (GET) or replace (POST, a full SimulationSettings) the simulation."""
        if request.method == "POST":
            gateway.update(await _parse_json(request, SimulationSettings))
        return JSONResponse(gateway.settings.model_dump(mode="json"))

    return _guarded(simulate)


def _stats_route(gateway: SimulatedGateway) -> _Handler:
    async def stats(request: Request) -> Response:
        """Requests received and still open, per route: proof that cancellation closed them."""
        return JSONResponse({"requests": gateway.requests, "in_flight": gateway.in_flight})

    return _guarded(stats)


class _GatewayStream(Response):
    """A streamed body whose status waits for its first chunk.

    A :class:`GatewayError` before the first chunk becomes an error response. One after it is
    re-raised, and uvicorn, seeing an exception after the response started, closes the
    connection without finishing the chunked body: the client gets a broken stream. The
    source is always closed, and cancelled as soon as the client disconnects (uvicorn drops
    writes to a closed connection silently, so without that it would run to its end).
    """

    def __init__(self, chunks: AsyncIterator[bytes], *, media_type: str) -> None:
        self.chunks = chunks
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({"cache-control": "no-store"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with closing(self.chunks):
            await _unless_disconnected(receive, self._stream(scope, receive, send))

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await anext(self.chunks)
        except StopAsyncIteration:
            first = b""
        except GatewayError as exc:
            await _error_response(exc)(scope, receive, send)
            return
        except Exception:
            log.exception("stream failed before its first chunk")
            await _error_json(500, "internal error", "server_error", VoiceError.code)(
                scope, receive, send
            )
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


_GONE = Response(status_code=499)
"""Returned when the client left before the answer: nothing is sent, uvicorn drops it."""


async def _unless_disconnected(receive: Receive, work: Coroutine[Any, Any, _T]) -> _T | None:
    """Run ``work`` to its end, or cancel it when the client disconnects (then ``None``).

    Call only once the request body has been read, since this consumes ``receive``.
    """
    task = asyncio.create_task(work)
    watcher = asyncio.create_task(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also on our own cancellation (server shutdown): nothing is left running.
        task.cancel()
        watcher.cancel()
        await asyncio.wait((task, watcher))
    if task.cancelled():
        return None
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _join(deltas: AsyncIterator[str]) -> str:
    async with closing(deltas):
        return "".join([text async for text in deltas])


def _guarded(handler: _Handler) -> _Handler:
    """Turn errors from ``handler`` into OpenAI-style error responses."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            return _error_response(exc)
        except HTTPException:
            raise
        except ClientDisconnect:
            # The caller cancelled while still sending (a speculative transcription thrown
            # away mid-upload): nobody is left to answer, and nothing went wrong here.
            log.debug("%s %s: the client left during the upload", request.method, request.url.path)
            return Response(status_code=499)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _error_json(500, "internal error", "server_error", VoiceError.code)

    return run


async def _parse_json(request: Request, model: type[_Model]) -> _Model:
    try:
        raw = await request.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise _bad_request("request body is not valid JSON") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise _bad_request("invalid request: " + "; ".join(problems)) from None


def _bad_request(message: str) -> GatewayBadRequest:
    return GatewayBadRequest(message, status=400)


_DEFAULT_STATUS: tuple[tuple[type[GatewayError], int], ...] = (
    (PaymentRequired, 402),
    (RateLimited, 429),
    (GatewayTimeout, 504),
    (GatewayUnavailable, 503),
    (GatewayBadRequest, 400),
    # An auth failure without a status came from our own upstream credentials, not the caller's.
    (GatewayAuthError, 502),
    (GatewayProtocolError, 502),
)


def _error_response(exc: GatewayError) -> Response:
    status = exc.status or next((s for cls, s in _DEFAULT_STATUS if isinstance(exc, cls)), 502)
    if isinstance(exc, PaymentRequired) and exc.challenge:
        # x402 clients read the payment requirements from the body itself: pass it through.
        return Response(exc.challenge, status_code=status, media_type="application/json")
    headers = {}
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers["retry-after"] = str(math.ceil(exc.retry_after))  # RFC 9110: whole seconds
    if status == 401:
        headers["www-authenticate"] = "Bearer"
    return _error_json(
        status, exc.message, exc.error_type or _error_type(status), exc.code, headers
    )


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status == 402:
        return "payment_required"
    return "invalid_request_error" if status < 500 else "server_error"


def _error_json(
    status: int, message: str, type_: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code), status_code=status, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405, a broken multipart body) in the OpenAI shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    return _error_json(status, exc.detail, _error_type(status), "invalid_request", exc.headers)


class _RequestContext:
    """ASGI middleware: ``x-request-id`` on every response, and the Bearer key check."""

    def __init__(self, app: ASGIApp, *, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-request-id", request_id.encode())]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if (
            self.api_key is not None
            and scope["path"] != "/health"
            and not self._authorized(headers)
        ):
            denied = GatewayAuthError("invalid or missing API key", status=401)
            await _error_response(denied)(scope, receive, send_with_id)
            return
        await self.app(scope, receive, send_with_id)

    def _authorized(self, headers: Headers) -> bool:
        assert self.api_key is not None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # Constant-time comparison: response timing must not reveal how much of a guess matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key
        )
