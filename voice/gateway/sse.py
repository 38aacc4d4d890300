"""Server-sent events, sans-I/O: feed response bytes in, get complete events out.

Follows the WHATWG HTML "event stream" parsing rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; ``:`` starts a comment; ``data:`` lines accumulate; an empty
line dispatches the event; an event with no data (a keep-alive) is not dispatched. Bytes may
be split anywhere, even inside a multibyte UTF-8 character or between the CR and LF of one
line break: lines are cut on bytes and decoded only once they are complete, which is safe
because CR and LF never occur inside a UTF-8 sequence.

The decoder never awaits and never times out; the I/O layer owns both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"

MAX_EVENT_BYTES = 1 << 20
"""Default bound on one pending line plus one event's data: a stream that never ends a line
must not grow memory without limit."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its ``data`` lines joined with LF."""

    data: str
    event: str = "message"
    id: str | None = None


class SseDecoder:
    """Incremental event-stream decoder; one instance per response.

    ``feed(bytes)`` returns the events completed by those bytes; ``end_of_stream()`` returns
    what the final bytes leave pending. Raises :class:`ValueError` when a line or an event
    grows past ``max_event_bytes``.
    """

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._at_start = True  # a UTF-8 BOM may open the stream, possibly split
        self._skip_lf = False  # the last feed ended on CR: an LF next belongs to it
        self._data: list[str] = []
        self._data_len = 0
        self._event = ""
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SseEvent]:
        if self._skip_lf and data:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        self._buffer += data
        if self._at_start:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
            self._at_start = False

        events: list[SseEvent] = []
        start = 0
        for match in _LINE_END.finditer(self._buffer):
            line = bytes(self._buffer[start : match.start()])
            start = match.end()
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        if start == len(self._buffer) and self._buffer.endswith(b"\r"):
            self._skip_lf = True
        del self._buffer[:start]
        if len(self._buffer) + self._data_len > self._max:
            raise ValueError(f"event stream line or event longer than {self._max} bytes")
        return events

    def end_of_stream(self) -> list[SseEvent]:
        """Flush at end of the response.

        The spec drops an event not closed by an empty line; we dispatch it instead,
        because some gateways end the body right after ``data: [DONE]`` with a single LF.
        """
        events = self.feed(b"\n") if self._buffer else []
        event = self._line("")
        return events + ([event] if event is not None else [])

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment, often a keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_len += len(value) + 1
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" only matters to a client that reconnects, and unknown fields are ignored.
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._data_len, self._event = [], 0, ""
        if not data:
            return None
        return SseEvent(data="\n".join(data), event=event or "message", id=self._last_id)
