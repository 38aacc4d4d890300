"""A judged answer set: what a sensible spoken reply to each question must say, or must not.

Each entry of ``benchmarks/answers.json`` names a question (and, for the sample recordings,
the file that asks it), groups of words of which the reply must contain at least one per
group, and patterns it must not match: a clock time or a forecast the model cannot know,
a claim to have done what it cannot do. Every reply is also held to being speech: no lists,
no markdown, and short (:data:`MAX_WORDS`).

``python -m benchmarks.local answers`` asks the embedded chat model every question;
``python -m benchmarks.local latency`` judges the replies heard through the whole pipeline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

MAX_WORDS: Final = 70
"""About 25 s of speech: a reply longer than that is a lecture, not an answer."""

_NOT_SPEECH: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"(^|\n)\s*(\d+[.)]|[-*•])\s"), "a list"),
    (re.compile(r"[*#`]|\]\("), "markdown"),
)


@dataclass(frozen=True)
class Expected:
    """What one question's reply must and must not say."""

    id: str
    question: str
    must: tuple[tuple[str, ...], ...] = ()
    """Groups of alternatives (lower case): the reply holds one alternative of every group,
    starting a word ("minute" is in "minutes", "8" is not in "18"), and a number whole ("12"
    is not in "120")."""
    must_not: tuple[str, ...] = ()
    """Regular expressions (case-insensitive) the reply must not match."""
    why: str = ""
    sample: str | None = None
    """The recording in ``samples/`` that asks this question, if any."""
    probe: bool = False
    """A harder question, reported apart: the set passes without it."""

    def problems(self, reply: str) -> list[str]:
        """What is wrong with ``reply``; empty when it is a sensible answer."""
        found = []
        reply = reply.replace("\u2019", "'")  # a curly apostrophe reads as a straight one
        lower = reply.lower()
        for group in self.must:
            if not any(re.search(_whole(word), lower) for word in group):
                found.append("says none of " + " / ".join(repr(w) for w in group))
        for pattern in self.must_not:
            match = re.search(pattern, reply, re.IGNORECASE)
            if match:
                found.append(f"says {match.group(0)!r}")
        for shape, what in _NOT_SPEECH:
            if shape.search(reply):
                found.append(f"has {what}")
        count = len(reply.split())
        if count > MAX_WORDS:
            found.append(f"{count} words, over {MAX_WORDS}")
        if not reply.strip():
            found.append("is empty")
        return found


def _whole(word: str) -> str:
    """The pattern that finds ``word`` as :attr:`Expected.must` reads it."""
    return r"(?<!\w)" + re.escape(word) + (r"(?!\d)" if word[-1:].isdigit() else "")


def load(path: Path) -> list[Expected]:
    """The answer set in ``path`` (``benchmarks/answers.json``)."""
    entries: list[dict[str, Any]] = json.loads(path.read_text())["questions"]
    return [
        Expected(
            id=e["id"],
            question=e["question"],
            must=tuple(tuple(w.lower() for w in group) for group in e.get("must", [])),
            must_not=tuple(e.get("must_not", [])),
            why=e.get("why", ""),
            sample=e.get("sample"),
            probe=bool(e.get("probe", False)),
        )
        for e in entries
    ]
