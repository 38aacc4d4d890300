"""Connection hygiene below the app: a request must arrive whole, in time, and of a sane size.

uvicorn reads requests with httptools and leaves a connection open for as long as its peer
keeps it: a client that never sends a byte, or trickles its headers one byte a second, holds
a file descriptor and a protocol object for ever (uvicorn times out only idle keep-alive
connections, after a response). Nor does it bound a request head: httptools takes any number
of headers of any length, and a WebSocket handshake past the ``websockets`` package's limits
(128 headers, 8 KiB a line) is then dropped with no answer at all.

:class:`GuardedHttpProtocol` is uvicorn's own httptools protocol with those bounds added,
installed through ``uvicorn.Config(http=...)`` (see :class:`ServerConfig`):

- a request (its head, and its body if it has one) or a WebSocket handshake must be complete
  within ``request_timeout_s`` of the connection opening or the request starting, or it gets
  **408** and is closed; a connection that sent nothing is closed silently;
- a request target over :data:`MAX_LINE_BYTES` gets **414**; a header line over it, more
  than :data:`MAX_HEADERS` headers, or a head over :data:`MAX_HEAD_BYTES` gets **431**, each
  closed, so a WebSocket handshake is refused before the ``websockets`` package sees it.

Once a request has arrived the app answers it at its own pace; a WebSocket, once upgraded,
is the session's and its limits (docs/security.md) apply.

Subclassing relies on uvicorn's ``HttpToolsProtocol`` keeping httptools' callback names
(``on_message_begin``, ``on_url``, ``on_header``, ``on_headers_complete``,
``on_message_complete``) and its hooks ``handle_websocket_upgrade`` and
``send_400_response``: tests/test_http_guard.py breaks if they move.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voice.app.auth import TokenRedactor

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024 - 64
"""The longest request target or header line (name, ``: ``, value). Below the
``websockets`` package's 8 KiB a line, with room for ``GET `` and `` HTTP/1.1``, so a
handshake it would drop gets an answer here first. A caller token fits: even one that pins
4096 characters of instructions is under 6 KiB."""
MAX_HEADERS = 100
"""Headers in one request (``websockets`` allows 128; browsers send 10-20)."""
MAX_HEAD_BYTES = 32 * 1024
"""A request's line and headers together, counted as they arrive, so a head that never ends
is cut off after this much rather than buffered."""

STATUS_TEXT = {408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration with the guard's one setting. A class of its own, not an
    attribute set on uvicorn's, so that it travels with the config to each worker process."""

    def __init__(self, app: Any, *, request_timeout_s: float, **options: Any) -> None:
        super().__init__(app, http=GuardedHttpProtocol, **options)
        self.request_timeout_s = request_timeout_s

    def configure_logging(self) -> None:
        """uvicorn's logging (here, and again in each worker), with callers' tokens masked
        in the request lines it logs."""
        super().configure_logging()
        for name in ("uvicorn.access", "uvicorn.error"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, TokenRedactor) for f in logger.filters):
                logger.addFilter(TokenRedactor())


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request that is refused."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for each request and bounded heads."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._timeout_s = config.request_timeout_s if isinstance(config, ServerConfig) else 10.0
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes: int | None = 0  # None once the current request's head is read
        self._header_count = 0
        self._head_size = 0  # the current request's line and headers, as parsed
        self._refusal: tuple[int, str, str] | None = None

    # The deadline: from the connection, or the start of a request, to the request whole.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._head_size = 0
        if self._answered():
            self._arm()
        # else: queued behind a response not yet sent (uvicorn stops reading until it is);
        # its time starts when that response is done (on_response_complete).

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._head_bytes != 0 and not self.transport.is_closing():
            self._arm()  # a next request had begun arriving: its time starts now

    def on_message_complete(self) -> None:
        self._disarm()
        self._head_bytes = 0  # what follows on this connection is the next request's head
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The handshake has arrived whole; the app answers it, and the session's own
        # limits govern the connection from here.
        self._disarm()
        super().handle_websocket_upgrade()

    def _answered(self) -> bool:
        """No response is owed: every request so far has been answered whole."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and not self.cycle.response_complete
        if self._head_bytes == 0 and not started:
            self.transport.close()  # it never began a request: nothing to answer
            return
        log.info("%s: request not complete in %.0f s; closed", self._peer(), self._timeout_s)
        if self.cycle is None or not self.cycle.response_started:
            message = f"the request did not arrive whole within {self._timeout_s:g} s"
            self._answer(408, "request_timeout", message)
        self.transport.close()

    # Sizes: counted as the head arrives, refused before the app or `websockets` sees it.

    def data_received(self, data: bytes) -> None:
        # Counts what arrives while a head is incomplete, so that one that never ends (a
        # header line without its end, which httptools would buffer) is cut off too.
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        # Bytes on an idle kept-alive connection stop uvicorn's keep-alive timer; if they do
        # not begin a request (blank lines, which the parser skips), nothing else would end it.
        if self._deadline is None and self._answered():
            self._arm()
        super().data_received(data)
        if (
            self._head_bytes is not None
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._refuse(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)
        if len(self.url) > MAX_LINE_BYTES:
            self._stop(414, "uri_too_long", f"request target over {MAX_LINE_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._stop(431, "headers_too_large", f"more than {MAX_HEADERS} headers")
        if len(name) + len(value) + 2 > MAX_LINE_BYTES:
            self._stop(431, "headers_too_large", f"a header line over {MAX_LINE_BYTES} bytes")
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            self._stop(431, "headers_too_large", f"request head over {MAX_HEAD_BYTES} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def _stop(self, status: int, code: str, message: str) -> None:
        # httptools stops parsing and raises its own error, which uvicorn answers with
        # send_400_response: answered there with this status instead.
        self._refusal = (status, code, message)
        raise _Refused(message)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._refuse(*self._refusal)

    def _refuse(self, status: int, code: str, message: str) -> None:
        log.info("%s: refused with %d: %s", self._peer(), status, message)
        self._disarm()
        self._answer(status, code, message)
        self.transport.close()

    def _answer(self, status: int, code: str, message: str) -> None:
        """Write a whole response, the app's error shape, that closes the connection."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = [f"HTTP/1.1 {status} {STATUS_TEXT[status]}"]
        head += [f"{n.decode()}: {v.decode()}" for n, v in self.server_state.default_headers]
        head += [
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
