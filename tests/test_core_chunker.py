import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.core.chunker import CLOSERS, TERMINALS, SentenceChunker


def chunk(deltas, **kwargs) -> list[str]:
    chunker = SentenceChunker(**kwargs)
    chunks = []
    for delta in deltas:
        chunks += chunker.push(delta)
    return chunks + chunker.flush()


CASES = {
    "Hello there. How are you today? I am fine!": [
        "Hello there.",
        "How are you today?",
        "I am fine!",
    ],
    # Eager first chunk at the first clause with six words; later ones wait for sentences.
    "Well, I think that the answer, in short, is yes. And, well, more.": [
        "Well, I think that the answer,",
        "in short, is yes.",
        "And, well, more.",
    ],
    "Sure; here is what you asked for today: the list. Ok: done.": [
        "Sure; here is what you asked for today:",
        "the list.",
        "Ok: done.",
    ],
    "It went from one place to the other—quickly—home. Yes.": [
        "It went from one place to the other—",
        "quickly—home.",
        "Yes.",
    ],
    "Read the pages of that book from 10–20 twice – it helps. Ok.": [
        "Read the pages of that book from 10–20 twice –",
        "it helps.",
        "Ok.",
    ],
    "Pi is 3.14159, about. It costs $1,000.50 now. Done.": [
        "Pi is 3.14159, about.",
        "It costs $1,000.50 now.",
        "Done.",
    ],
    "Dr. Smith met Mr. and Mrs. Jones vs. Ms. Lee on Main St. at 5 p.m. today. Next.": [
        "Dr. Smith met Mr. and Mrs. Jones vs. Ms. Lee on Main St. at 5 p.m. today.",
        "Next.",
    ],
    "DR. Who, e.g. this, i.e. that, in the U.S. and so on etc. Fine.": [
        "DR. Who, e.g. this, i.e. that,",
        "in the U.S. and so on etc. Fine.",
    ],
    "J. R. R. Tolkien wrote it. Sure.": ["J. R. R. Tolkien wrote it.", "Sure."],
    "Visit example.com/a.b or mail me@example.org. Then rest.": [
        "Visit example.com/a.b or mail me@example.org.",
        "Then rest.",
    ],
    "See https://x.io/a.b?c=1. Ok.": ["See https://x.io/a.b?c=1.", "Ok."],
    "Wait... what? Hmm… maybe. Really?! Yes.": [
        "Wait... what?",
        "Hmm… maybe.",
        "Really?!",
        "Yes.",
    ],
    'He said "Hi." Then (quietly.) left.': ['He said "Hi."', "Then (quietly.)", "left."],
    "你好。我很好！谢谢？好的": ["你好。", "我很好！", "谢谢？", "好的"],
    "他说：「你好。」然后走了。": ["他说：「你好。」", "然后走了。"],
    "Line one\nLine two\n\n\nLine three": ["Line one", "Line two", "Line three"],
    "I counted to 3. Then I stopped.": ["I counted to 3.", "Then I stopped."],
    "Steps:\n1. Open it.\n2. Close it.": ["Steps:", "1. Open it.", "2. Close it."],
    "# Title\n- **Bold** item one.\n* _it_ item\n> quoted `code` here\n": [
        "Title",
        "Bold item one.",
        "it item",
        "quoted code here",
    ],
    "```python\nprint(x)\n```\nKeep snake_case and 2*3 and 5 * 3.": [
        "print(x)",
        "Keep snake_case and 2*3 and 5 * 3.",
    ],
    "**Note:** see [the docs](https://d.io/x) now.": ["Note: see the docs now."],
    "Spaces   and\ttabs  collapse.   Yes.": ["Spaces and tabs collapse.", "Yes."],
    "   \n\n ***\n---\n  ": [],
    "": [],
    "No ending at all": ["No ending at all"],
}


@pytest.mark.parametrize("text", CASES)
def test_chunks(text):
    assert chunk([text]) == CASES[text]


def after_a_mark(text: str, i: int) -> bool:
    """A delta ending at ``i`` ends right after a sentence mark (and closers): the one place
    where a boundary may depend on the split (see the chunker's module doc)."""
    return bool(text[:i].rstrip(CLOSERS)[-1:]) and text[:i].rstrip(CLOSERS)[-1] in TERMINALS


@pytest.mark.parametrize("text", CASES)
def test_chunks_do_not_depend_on_how_the_text_is_split(text):
    expected = CASES[text]
    for i in range(len(text) + 1):
        if after_a_mark(text, i):
            continue
        assert chunk([text[:i], text[i:]]) == expected, i
        assert chunk([text[:i], "", text[i:]]) == expected, i


@pytest.mark.parametrize("text", CASES)
def test_the_words_spoken_do_not_depend_on_how_the_text_is_split(text):
    expected = _alnum("".join(CASES[text]))
    assert _alnum("".join(chunk(list(text)))) == expected
    for i in range(len(text) + 1):
        assert _alnum("".join(chunk([text[:i], text[i:]]))) == expected, i


def test_a_delta_that_ends_a_sentence_cuts_it_without_waiting_for_the_next():
    chunker = SentenceChunker()
    assert chunker.push("Sure, I can help with that.") == ["Sure, I can help with that."]
    assert chunker.push(" Is it") == []
    assert chunker.push(" today?") == ["Is it today?"]
    assert chunker.push(" Wow!") == ["Wow!"]
    assert chunker.push(' He said "stop."') == ['He said "stop."']


@pytest.mark.parametrize(
    "delta", ["Pi is 3.", "See Dr.", "Use e.g.", "J.", "Visit x.io/a.b?", "It is 5!", "Hmm..."]
)
def test_a_delta_ending_in_an_ambiguous_mark_waits_for_the_next_character(delta):
    chunker = SentenceChunker()
    assert chunker.push(delta) == []


def test_a_boundary_waits_for_the_next_character():
    chunker = SentenceChunker()
    assert chunker.push("Pi is 3.") == []
    assert chunker.push("14 roughly, a") == []
    assert chunker.push(" number") == []
    assert chunker.push(" we") == []
    assert chunker.push(" know") == []
    assert chunker.push(". And") == ["Pi is 3.14 roughly, a number we know."]
    assert chunker.push(", so,") == []
    assert chunker.flush() == ["And, so,"]


def test_a_chunk_goes_out_as_soon_as_its_boundary_is_known():
    chunker = SentenceChunker()
    assert chunker.push("Hi. Yes") == ["Hi."]
    assert chunker.push("。") == ["Yes。"]


def test_later_chunks_split_at_a_clause_once_longer_than_max_chars():
    clause = "one two three four five six seven"  # 33 characters
    text = f"Hi. {clause}, {clause}, {clause}, {clause}. Bye."
    assert chunk([text], max_chars=60) == [
        "Hi.",
        f"{clause}, {clause},",
        f"{clause}, {clause}.",
        "Bye.",
    ]


def test_text_without_any_boundary_is_cut_at_a_space_past_twice_max_chars():
    words = " ".join(["word"] * 60)  # 299 characters, no punctuation
    chunks = chunk([words], max_chars=50)
    assert all(100 < len(c) <= 105 for c in chunks[:-1])
    assert " ".join(chunks) == words


def test_flush_starts_a_new_reply_with_an_eager_first_chunk_again():
    chunker = SentenceChunker(eager_min_words=2)
    assert chunker.push("One two, three four, five. ") == ["One two,", "three four, five."]
    assert chunker.push("Six seven, eight") == []
    assert chunker.flush() == ["Six seven, eight"]
    assert chunker.push("Nine ten, eleven") == ["Nine ten,"]


def test_a_skipped_chunk_does_not_use_up_eagerness():
    assert chunk(["---\nOne two three four five six, seven. Eight."]) == [
        "One two three four five six,",
        "seven.",
        "Eight.",
    ]


@pytest.mark.parametrize("kwargs", [{"eager_min_words": 0}, {"max_chars": 5}])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SentenceChunker(**kwargs)


# Backticks only come in pairs around a word, so no ``` fence (whose info string is
# dropped on purpose) can form and the property below holds.
TRICKY = list("ab Zx.,;:!?…—–\"')(*_#-\n。」3 ") + [
    "`code` ",
    "Dr.",
    "e.g.",
    "U.S.",
    "J.",
    "...",
    "3.5",
    "1,000",
    "x.com/a.b",
    "- ",
    "**",
    "word ",
    "1. ",
]


def _alnum(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


@given(
    st.lists(st.sampled_from(TRICKY), max_size=80).map("".join),
    st.lists(st.integers(0, 400), max_size=12),
    st.integers(1, 8),
)
def test_randomized_splits_give_the_same_chunks(text, cuts, eager_min_words):
    expected = chunk([text], eager_min_words=eager_min_words, max_chars=20)
    points = sorted({min(c, len(text)) for c in cuts if not after_a_mark(text, min(c, len(text)))})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert chunk(pieces, eager_min_words=eager_min_words, max_chars=20) == expected
    assert all(c and c == c.strip() and "  " not in c for c in expected)
    # Markdown cleanup drops only marks: every letter and digit is spoken exactly once,
    # however the text was split (after a sentence mark too).
    assert _alnum("".join(expected)) == _alnum(text)
    anywhere = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *anywhere], [*anywhere, len(text)], strict=True)]
    assert _alnum("".join(chunk(pieces, eager_min_words=eager_min_words, max_chars=20))) == (
        _alnum(text)
    )
