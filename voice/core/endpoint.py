"""How long a pause must last to end the caller's turn, judged from the words so far (sans-I/O).

When the caller pauses, the session transcribes what they said so far (speculation) and
asks an :class:`EndOfTurn` how long this pause has to last before the turn is over. Words
that read finished ("What time is it?") end it after a short pause; words that trail off
("I'd like to book a table for") get a long one, since the caller is probably looking for
the next word. :class:`EndOfTurnRules` is a handful of rules about the last word and the
final punctuation; a turn-end model can replace it behind the same protocol.
"""

from __future__ import annotations

import re
from typing import Protocol

TRAILING_WORDS = frozenset(
    """
    and or but nor so yet because since although though unless until whereas if than whether
    to of for from in on at by with about into onto over under between through during
    without within against among toward towards like as per via
    a an the my your his her its our their these those some every each
    is are was were be been am will would can could should may might must shall
    i we he she they
    um uh er erm hmm mm ah eh
    """.split()
)
"""Words a finished sentence rarely ends on: conjunctions, prepositions, articles and
determiners, the copula and modals, subject pronouns, fillers. Compared in lower case.
Words as likely to end a sentence as not (``it``, ``that``, ``do``, ``have``, ``before``)
are left out: a finished turn read as unfinished only waits longer, but the opposite
answers a caller who had more to say."""

TRAILING_MARKS = (",", ";", ":", "-", "—", "–", "...", "…")
"""Punctuation that says the thought goes on (an ASR writes ``…`` for speech cut short)."""

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


class EndOfTurn(Protocol):
    def hangover_ms(self, transcript: str) -> int:
        """How long the pause after ``transcript`` must last before the turn ends."""
        ...


class EndOfTurnRules:
    """``floor_ms`` after words that read finished, ``ceiling_ms`` after words that do not.

    Finished: ends in ``?`` or ``!``; or in ``.`` or no punctuation, after a last word that
    is not in :data:`TRAILING_WORDS`. Unfinished: ends in a :data:`TRAILING_MARKS` mark or
    a trailing word, or has no words at all (noise, or nothing recognised yet).
    """

    def __init__(self, *, floor_ms: int, ceiling_ms: int) -> None:
        if not 0 < floor_ms <= ceiling_ms:
            raise ValueError(f"need 0 < floor_ms <= ceiling_ms, got {floor_ms}, {ceiling_ms}")
        self.floor_ms = floor_ms
        self.ceiling_ms = ceiling_ms

    def hangover_ms(self, transcript: str) -> int:
        return self.floor_ms if reads_finished(transcript) else self.ceiling_ms


def reads_finished(transcript: str) -> bool:
    """Whether ``transcript`` reads as a finished turn (see :class:`EndOfTurnRules`)."""
    text = transcript.strip().rstrip("\"'”’)]»")
    words = _WORD.findall(text)
    if not words:
        return False
    if text.endswith(("?", "!")):
        return True
    if text.endswith(TRAILING_MARKS):
        return False
    return words[-1].lower() not in TRAILING_WORDS
