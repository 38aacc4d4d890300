"""What the caller heard of a reply: played audio mapped back to the text it speaks.

On barge-in the dialog must keep only the part of the reply the caller heard, so the
model does not believe it said what was never played. Audio durations come in from the
I/O side; this module only does the arithmetic (sans-I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD_END = re.compile(r"\S+")
_SLACK_MS = 1e-6
"""Rounding slack, so a position summed from the same frame durations counts as the end."""


@dataclass(slots=True)
class _Segment:
    text: str
    start_ms: float
    audio_ms: float = 0.0


class HeardText:
    """Reply text in play order, each chunk with the duration of its synthesized audio.

    Call :meth:`add_text` when a chunk's speech starts arriving (chunks play in the order
    added), :meth:`add_audio` for each piece of its audio, and :meth:`heard` with the
    caller's play position on barge-in.

    Within a partly played chunk the speech rate is taken as even across its characters,
    the best guess without word timings from TTS. Only words whose estimated end has been
    played count as heard: claiming a word the caller never heard would make the model
    think it said something it did not, while dropping a half-heard word costs little.
    """

    def __init__(self) -> None:
        self._segments: list[_Segment] = []

    @property
    def total_ms(self) -> float:
        """Duration of all audio added so far."""
        if not self._segments:
            return 0.0
        last = self._segments[-1]
        return last.start_ms + last.audio_ms

    def add_text(self, text: str) -> None:
        """Start a new chunk; its audio follows all audio added before."""
        self._segments.append(_Segment(text.strip(), start_ms=self.total_ms))

    def add_audio(self, ms: float) -> None:
        """Add ``ms`` of audio to the latest chunk."""
        if not self._segments:
            raise ValueError("add_text() must come before add_audio()")
        if ms < 0:
            raise ValueError(f"audio duration must not be negative, got {ms}")
        self._segments[-1].audio_ms += ms

    def heard(self, played_ms: float) -> str:
        """The text the caller heard once ``played_ms`` of the reply audio has played."""
        parts: list[str] = []
        for segment in self._segments:
            end_ms = segment.start_ms + segment.audio_ms
            # A chunk with no audio yet (or none at all) counts as heard only once audio
            # after it has played.
            if played_ms > end_ms + _SLACK_MS or (
                segment.audio_ms > 0 and played_ms >= end_ms - _SLACK_MS
            ):
                parts.append(segment.text)
                continue
            elapsed = played_ms - segment.start_ms
            if elapsed > 0 and segment.audio_ms > 0:
                parts.append(_heard_words(segment.text, elapsed / segment.audio_ms))
            break
        return " ".join(part for part in parts if part)


def _heard_words(text: str, fraction: float) -> str:
    """The words of ``text`` that end within the first ``fraction`` of it."""
    played_chars = fraction * len(text)
    end = 0
    for word in _WORD_END.finditer(text):
        if word.end() > played_chars:
            break
        end = word.end()
    return text[:end]
