"""Cut streamed LLM text into speakable chunks, one TTS request each (sans-I/O).

A boundary is decided once every character it depends on has arrived (or the stream has
ended), with one exception that saves a token's wait before each sentence's speech: a
delta that ends right after a sentence's final mark, where little but a closing quote or
a further mark could follow (``?``, ``!``, or ``.`` after a plain word that is no
abbreviation; LLM tokenizers put a domain's dot at the start of the next token), ends the
sentence there. So the words spoken never depend on how the text
was split into deltas; only where such a delta ends can a boundary differ, and what
follows it (a closing quote) is then left to the next chunk, which says nothing more.
"""

from __future__ import annotations

import re

SENTENCE_ENDS = ".!?…"
CJK_SENTENCE_ENDS = "。！？"
TERMINALS = SENTENCE_ENDS + CJK_SENTENCE_ENDS
CLAUSE_ENDS = ",;:"
DASHES = "—–"
CLOSERS = "\"')]}”’»」』）】"
OPENERS = "\"'([{“‘«「『（【"

ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "vs", "etc", "approx"}
)
"""Words that end in a period without ending a sentence (compared in lower case).

Dotted forms (e.g. i.e. a.m. p.m. U.S.) are caught by the acronym pattern below.
"""
_ACRONYM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")

_BLOCK_MARK = re.compile(r"^\s*(?:#{1,6}|[-*+•>]|```[\w+-]*)(?:\s+|$)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)\s]*\)")
_EMPHASIS = re.compile(r"\*+|_+")


class SentenceChunker:
    """Turn a stream of text deltas into chunks worth one TTS request each.

    The first chunk of a reply is eager: it ends at the first sentence end, or at a clause
    boundary (``, ; : — –``) once it has ``eager_min_words`` words, because time to first
    audio is what the caller notices. Later chunks end at sentence ends, where TTS prosody
    is best, and at a clause boundary only once longer than ``max_chars``; one still
    without any boundary at twice ``max_chars`` is cut at the next space, which bounds
    the request size and the buffer for text that never punctuates.

    Sentence ends are ``. ! ?`` followed by whitespace (closing quotes and brackets stay
    with the sentence), CJK ``。！？`` with no whitespace needed, and newlines. A period
    does not end a sentence inside a number (``3.5``), a domain or URL, after an
    abbreviation (``Dr.``, ``e.g.``, ``U.S.``), after an initial (``J. R. Tolkien``) or in
    an ellipsis. No sentence ends before the chunk has a letter, so a list number such as
    ``1.`` stays with its item.

    Chunks are made speakable: markdown heading, bullet, quote and fence marks, emphasis,
    backticks and link targets are dropped and whitespace collapsed. A chunk left with
    nothing to say is skipped, so every chunk returned is stripped and non-empty.
    After :meth:`flush` the chunker starts afresh and the next first chunk is eager again.
    """

    def __init__(self, *, eager_min_words: int = 6, max_chars: int = 250) -> None:
        if eager_min_words < 1:
            raise ValueError(f"eager_min_words must be at least 1, got {eager_min_words}")
        if max_chars < 20:
            raise ValueError(f"max_chars must be at least 20, got {max_chars}")
        self.eager_min_words = eager_min_words
        self.max_chars = max_chars
        self._buf = ""  # text of the chunk being built, and look-ahead
        self._scan = 0  # the next index of _buf that has not been ruled out as a boundary
        self._emitted = False  # a chunk of this reply has gone out: eagerness is over
        self._line_start = True  # _buf starts a line, so block marks apply

    def push(self, delta: str) -> list[str]:
        """Add text; return the chunks it completes."""
        self._buf += delta
        chunks: list[str] = []
        while (cut := self._next_cut()) is not None:
            self._emit(self._buf[:cut], chunks)
            self._buf = self._buf[cut:]
            self._scan = 0
        return chunks

    def flush(self) -> list[str]:
        """End of the reply: return what is left as a last chunk, if it says anything."""
        chunks: list[str] = []
        self._emit(self._buf, chunks)
        self._buf = ""
        self._scan = 0
        self._emitted = False
        self._line_start = True
        return chunks

    def _emit(self, raw: str, chunks: list[str]) -> None:
        text = speakable(raw, line_start=self._line_start)
        self._line_start = raw.endswith("\n")
        if text:
            chunks.append(text)
            self._emitted = True

    def _next_cut(self) -> int | None:
        """Where the current chunk ends, or ``None`` if that needs more text."""
        buf = self._buf
        i = self._scan
        while i < len(buf):
            c = buf[i]
            if c == "\n":
                return i + 1
            if c in TERMINALS or c in CLAUSE_ENDS:
                group = TERMINALS if c in TERMINALS else CLAUSE_ENDS
                end = _skip(buf, i, group)
                after = _skip(buf, end, CLOSERS)
                if after == len(buf):
                    if c in TERMINALS and _ends_at_delta(buf, i, end):
                        return after  # no wait for the next token (see the module doc)
                    break  # the decision needs the next character
                if c in TERMINALS and self._is_sentence_end(buf, i, end, after):
                    return after
                if c in CLAUSE_ENDS and buf[after].isspace() and self._clause_cut(buf[:after]):
                    return after
                i = after
                continue
            if c in DASHES:
                if i + 1 == len(buf):
                    break
                in_range = c == "–" and buf[i - 1 : i].isdigit() and buf[i + 1].isdigit()
                if not in_range and self._clause_cut(buf[: i + 1]):
                    return i + 1
            elif (
                c.isspace() and i > 2 * self.max_chars and len(buf[:i].strip()) > 2 * self.max_chars
            ):
                return i
            i += 1
        self._scan = i
        return None

    def _is_sentence_end(self, buf: str, i: int, end: int, after: int) -> bool:
        run = buf[i:end]
        if not _has_letter(buf[:i]):
            return False
        if any(c in CJK_SENTENCE_ENDS for c in run):
            return True
        if not buf[after].isspace():
            return False  # 3.5, example.com, "a.b"
        if "!" not in run and "?" not in run:
            if run != ".":
                return False  # an ellipsis: the thought goes on
            word = buf[:i].rsplit(None, 1)[-1].lstrip(OPENERS)
            if word.lower() in ABBREVIATIONS or _ACRONYM.fullmatch(word):
                return False
            if len(word) == 1 and word.isupper():
                return False  # an initial
        return True

    def _clause_cut(self, chunk: str) -> bool:
        if len(chunk.strip()) > self.max_chars:
            return True
        return not self._emitted and _count_words(chunk) >= self.eager_min_words


def _ends_at_delta(buf: str, i: int, end: int) -> bool:
    """Whether the terminal run ``buf[i:end]``, last in a delta, ends a sentence whatever
    comes next: ``?`` and ``!`` after a letter, a CJK mark, or one ``.`` after a word of two
    or more letters that is no abbreviation (not ``3.``, ``J.``, ``Dr.``, ``e.g.``)."""
    run = buf[i:end]
    if any(c in CJK_SENTENCE_ENDS for c in run):
        return _has_letter(buf[:i])
    words = buf[:i].rsplit(None, 1)
    word = words[-1].lstrip(OPENERS).replace("'", "").replace("’", "") if words else ""
    if not word.isalpha():
        return False  # a number, a path, a URL's query, an address: more may follow
    if set(run) <= {"?", "!"}:
        return True
    return (
        run == "."
        and len(word) >= 2
        and word.lower() not in ABBREVIATIONS
        and not _ACRONYM.fullmatch(word)
    )


def speakable(text: str, *, line_start: bool = True) -> str:
    """``text`` without markdown marks and with whitespace collapsed, ready for TTS."""
    if line_start:
        text = _BLOCK_MARK.sub("", text, count=1)
    text = _LINK.sub(r"\1", text).replace("`", "")
    text = _EMPHASIS.sub(_drop_emphasis, text)
    text = " ".join(text.split())
    return text if any(c.isalnum() for c in text) else ""


def _drop_emphasis(match: re.Match[str]) -> str:
    # A run of * or _ that touches a word on one side only is markdown emphasis
    # (**bold**, _it_); between two words (snake_case, 2*3) or two spaces it is text.
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() == after.isalnum() and before.isspace() == after.isspace():
        return match.group()
    return ""


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _has_letter(text: str) -> bool:
    return any(c.isalpha() for c in text)


def _count_words(text: str) -> int:
    return sum(1 for token in text.split() if any(c.isalnum() for c in token))
