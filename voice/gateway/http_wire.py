"""What an OpenAI-compatible gateway sends back to :mod:`voice.gateway.http`, parsed without I/O.

The chat-completions event stream (on top of :mod:`voice.gateway.sse`), the bodies of the
transcription, completion and model-list routes, OpenAI-style error objects, receipts, and
``Retry-After``. Parsers raise :class:`ValueError` for a body they cannot read;
``http.py`` turns that into a ``GatewayProtocolError`` carrying the route and request id.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from voice.audio.frames import SPEECH_RATE, PcmFrame
from voice.audio.wav import WavStreamParser
from voice.errors import (
    GatewayAuthError,
    GatewayBadRequest,
    GatewayError,
    GatewayTimeout,
    GatewayUnavailable,
    RateLimited,
)
from voice.gateway.sse import MAX_EVENT_BYTES, SseDecoder, SseEvent


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a gateway said about a failure: its error type and message and, in a streamed
    error, the HTTP status it names (if any)."""

    type: str | None
    message: str | None
    status: int | None = None


class ChatStreamError(Exception):
    """The chat stream carried an error object instead of a chunk."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message or info.type or "error in chat stream")
        self.info = info


class ChatStream:
    """Text deltas from a ``chat/completions`` event stream.

    ``feed`` returns the deltas the bytes complete. After ``data: [DONE]``, ``done`` is set
    and later bytes are ignored. A malformed event (:class:`ValueError`) or an error object
    (:class:`ChatStreamError`) is kept in ``failure`` rather than raised, so that deltas
    ahead of it in the same bytes are still delivered, in order; the caller raises it.
    """

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._sse = SseDecoder(max_event_bytes=max_event_bytes)
        self.done = False
        self.failure: ValueError | ChatStreamError | None = None
        self.completion_id: str | None = None
        """The first chunk's ``id``: the completion, as the gateway names it."""
        self.receipts: list[tuple[str, Any]] = []
        """Receipts the chunks carried (see :func:`json_receipts`), in order, once each."""

    def feed(self, data: bytes) -> list[str]:
        if self.done or self.failure is not None:
            return []
        try:
            return self._deltas(self._sse.feed(data))
        except ValueError as exc:
            self.failure = exc
            return []

    def end_of_stream(self) -> list[str]:
        if self.done or self.failure is not None:
            return []
        return self._deltas(self._sse.end_of_stream())

    def _deltas(self, events: list[SseEvent]) -> list[str]:
        deltas: list[str] = []
        for event in events:
            data = event.data.strip()
            if data == "[DONE]":
                self.done = True
                break
            try:
                payload = json.loads(data)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                self.failure = ValueError(f"chat event is not a JSON object: {data[:80]!r}")
                break
            if "error" in payload or event.event == "error":
                self.failure = ChatStreamError(parse_error(payload.get("error", payload)))
                break
            self._note(payload)
            text = chunk_text(payload)
            if text:
                deltas.append(text)
        return deltas

    def _note(self, payload: Mapping[str, Any]) -> None:
        if self.completion_id is None and isinstance(payload.get("id"), str):
            self.completion_id = payload["id"][:MAX_ID_CHARS]
        for receipt in json_receipts(payload):
            if receipt not in self.receipts and len(self.receipts) < MAX_RECEIPTS:
                self.receipts.append(receipt)


MAX_ID_CHARS = 200
"""An id or header receipt kept in a turn's record is cut to this length."""
MAX_RECEIPT_CHARS = 4096
"""A receipt whose JSON is longer is kept as its first characters, as text."""
MAX_RECEIPTS = 8
RECEIPT_KEYS = ("receipt", "receipt_id")


def json_receipts(payload: object) -> list[tuple[str, Any]]:
    """Receipts in a JSON response body: a ``receipt`` (or ``receipt_id``) field at the top,
    or in one of its objects (LucidLayer's ``lucid.receipt_id``), each as (its path, value).

    The path names the field (``body.receipt``); a value over :data:`MAX_RECEIPT_CHARS` of
    JSON is cut, as text.
    """
    if not isinstance(payload, Mapping):
        return []
    found: list[tuple[str, Any]] = []
    places: list[tuple[str, Mapping[str, Any]]] = [("body", payload)]
    places += [(f"body.{k}", v) for k, v in payload.items() if isinstance(v, Mapping)]
    for path, holder in places:
        for key in RECEIPT_KEYS:
            if key in holder and holder[key] is not None:
                found.append((f"{path}.{key}", _bounded(holder[key])))
    return found[:MAX_RECEIPTS]


def json_body_receipts(body: bytes) -> list[tuple[str, Any]]:
    """:func:`json_receipts` of a whole body; nothing if it is not a JSON object."""
    if not body.lstrip().startswith(b"{"):
        return []
    try:
        return json_receipts(json.loads(body))
    except ValueError:
        return []


def header_receipts(headers: Mapping[str, str], names: Sequence[str]) -> list[tuple[str, str]]:
    """The receipt headers ``names`` (lower case) that the response carries, with values.
    ``headers`` must look names up case-insensitively, as httpx's do."""
    found = []
    for name in names:
        value = headers.get(name)
        if value:
            found.append((name, value[:MAX_RECEIPT_CHARS]))
    return found


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_RECEIPT_CHARS]
    text = json.dumps(value, separators=(",", ":"))
    return value if len(text) <= MAX_RECEIPT_CHARS else text[:MAX_RECEIPT_CHARS]


def chunk_text(payload: Mapping[str, Any]) -> str | None:
    """The text in one chat-completions chunk, or None (role-only delta, usage chunk, ...).

    Also reads a whole completion (``message``) and legacy ``text`` choices, for gateways
    that ignore ``stream``.
    """
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    holder = choice.get("delta") or choice.get("message")
    content = holder.get("content") if isinstance(holder, dict) else choice.get("text")
    return content if isinstance(content, str) else None


def completion_text(body: bytes) -> str | None:
    """The reply in a non-streamed completion; raises :class:`ChatStreamError` for an error."""
    payload = json.loads(body)
    if not isinstance(payload, dict):
        raise ValueError("completion is not a JSON object")
    if "error" in payload:
        raise ChatStreamError(parse_error(payload["error"]))
    return chunk_text(payload)


def transcript(body: bytes, content_type: str) -> str:
    """Text of a transcription: ``{"text": ...}`` JSON, or a text/plain body."""
    if "json" in content_type or body.lstrip().startswith(b"{"):
        payload = json.loads(body)
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            raise ValueError("transcription JSON has no 'text' string")
        return text.strip()
    return body.decode("utf-8").strip()


def model_ids(body: bytes) -> list[str]:
    """Ids from a ``{"data": [{"id": ...}, ...]}`` model list."""
    payload = json.loads(body)
    items = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not all(
        isinstance(item, dict) and isinstance(item.get("id"), str) for item in items
    ):
        raise ValueError("model list is not {'data': [{'id': ...}, ...]}")
    return [item["id"] for item in items]


def parse_error(error: object) -> ErrorInfo:
    """Read an OpenAI-style error object (``{"message", "type", "code"}``) or a string."""
    if isinstance(error, str):
        return ErrorInfo(None, error.strip() or None)
    if not isinstance(error, dict):
        return ErrorInfo(None, None)
    code = error.get("code")
    kind = error.get("type") or (code if isinstance(code, str) and not _is_status(code) else None)
    detail = error.get("message") or error.get("detail")
    status = next((int(str(v)) for v in (error.get("status"), code) if _is_status(v)), None)
    return ErrorInfo(
        str(kind) if kind else None, str(detail) if detail is not None else None, status
    )


def error_body(text: str) -> ErrorInfo:
    """What a non-2xx body says: an error object if it holds one, else the text itself."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        info = parse_error(payload.get("error", payload))
        if info.type or info.message:
            return info
    return ErrorInfo(None, text.strip() or None)


def error_class_for_type(error_type: str | None) -> type[GatewayError]:
    """For a streamed error that names no HTTP status: the class its type suggests."""
    kind = (error_type or "").lower()
    if "rate_limit" in kind:
        return RateLimited
    if "auth" in kind or "permission" in kind:
        return GatewayAuthError
    if "timeout" in kind:
        return GatewayTimeout
    if "invalid_request" in kind or "bad_request" in kind:
        return GatewayBadRequest
    return GatewayUnavailable


class SpeechStream:
    """Speech response bytes → PCM16 frames of whole samples, for either ``tts_format``.

    Raises :class:`~voice.errors.AudioFormatError` for a WAV stream we cannot use.
    """

    def __init__(self, fmt: str) -> None:
        self._wav = WavStreamParser() if fmt == "wav" else None
        self._carry = b""  # raw pcm: a sample's first byte, waiting for its second

    def feed(self, data: bytes) -> PcmFrame | None:
        if self._wav is not None:
            pcm, rate = self._wav.feed(data), self._wav.sample_rate
            return PcmFrame(pcm, rate) if pcm and rate else None
        data = self._carry + data
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        return PcmFrame(data[:cut], SPEECH_RATE) if cut else None

    def end(self) -> bool:
        """Check the stream is complete; True if a dangling odd byte was dropped."""
        if self._wav is not None:
            self._wav.close()
        return bool(self._carry)


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI's) or ``Retry-After`` (RFC 9110
    section 10.2.3: delay-seconds or an HTTP-date). ``headers`` must look names up
    case-insensitively, as httpx's do."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _is_status(value: object) -> bool:
    return isinstance(value, int | str) and str(value).isdigit() and 400 <= int(value) < 600
