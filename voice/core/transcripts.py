"""Joining a turn transcribed in parts (sans-I/O).

A later part is transcribed with the earlier words as its prompt, and an ASR given a prompt
can start its text by saying the prompt's end again (Whisper's "prompt leakage"): "... Friday
evening. But something came up." + "But something came up. So could you ...".
:func:`joined` drops such an echo, so the dialog does not hold the words twice.
"""

from __future__ import annotations

import re
from typing import Final

MIN_ECHO_WORDS: Final = 3
"""Fewer repeated words may be what the caller said twice ("no, no")."""

_WORD = re.compile(r"[\w']+")


def joined(before: str, after: str) -> str:
    """``before`` and ``after`` as one text, without ``after`` repeating the end of ``before``."""
    before, after = before.strip(), after.strip()
    tail = [w.lower() for w in _WORD.findall(before)]
    spans = list(_WORD.finditer(after))
    heads = [m.group(0).lower() for m in spans]
    for n in range(min(len(tail), len(heads)), MIN_ECHO_WORDS - 1, -1):
        if tail[-n:] == heads[:n]:
            rest = after[spans[n - 1].end() :].lstrip(" .,;:!?")
            return f"{before} {rest}".strip()
    return f"{before} {after}".strip()
