import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.core.playout import HeardText


def reply(*segments: tuple[str, float]) -> HeardText:
    heard = HeardText()
    for text, ms in segments:
        heard.add_text(text)
        heard.add_audio(ms / 2)
        heard.add_audio(ms / 2)
    return heard


def test_nothing_played_means_nothing_heard():
    heard = reply(("Hello there.", 1000))
    assert heard.heard(0) == ""
    assert heard.heard(-5) == ""
    assert HeardText().heard(500) == ""


def test_fully_played_segments_are_heard_in_order():
    heard = reply(("Hello there.", 1000), ("How are you?", 1000), ("Bye.", 500))
    assert heard.total_ms == 2500
    assert heard.heard(1000) == "Hello there."
    assert heard.heard(2000) == "Hello there. How are you?"
    assert heard.heard(2500) == heard.heard(9999) == "Hello there. How are you? Bye."


def test_a_partly_played_segment_keeps_only_words_fully_played():
    # "abc def ghi" is 11 characters over 1100 ms: 100 ms a character.
    heard = reply(("Intro.", 600), ("abc def ghi", 1100), ("Later.", 600))
    assert heard.heard(600 + 299) == "Intro."
    assert heard.heard(600 + 300) == "Intro. abc"
    assert heard.heard(600 + 699) == "Intro. abc"
    assert heard.heard(600 + 700) == "Intro. abc def"
    assert heard.heard(600 + 1099) == "Intro. abc def"
    assert heard.heard(600 + 1100) == "Intro. abc def ghi"


def test_punctuation_belongs_to_its_word():
    heard = reply(("Yes, sure.", 1000))
    assert heard.heard(399) == ""
    assert heard.heard(400) == "Yes,"


def test_audio_goes_to_the_latest_segment_as_it_arrives():
    heard = HeardText()
    heard.add_text("One two")
    heard.add_audio(700)
    heard.add_text("Three")
    assert heard.total_ms == 700
    # The second segment has no audio yet: reaching the end of the first hears nothing more.
    assert heard.heard(700) == "One two"
    heard.add_audio(500)
    assert heard.total_ms == 1200
    assert heard.heard(1100) == "One two"
    assert heard.heard(1200) == "One two Three"


def test_a_segment_without_audio_counts_once_later_audio_has_played():
    heard = reply(("First.", 500), ("…", 0), ("Second.", 500))
    assert heard.heard(500) == "First."
    assert heard.heard(501) == "First. …"


def test_frame_sums_reach_the_end_despite_rounding():
    heard = HeardText()
    heard.add_text("Ten frames.")
    for _ in range(10):
        heard.add_audio(0.1)
    assert heard.heard(1.0) == "Ten frames."


def test_audio_needs_a_segment_and_a_non_negative_duration():
    heard = HeardText()
    with pytest.raises(ValueError):
        heard.add_audio(20)
    heard.add_text("x")
    with pytest.raises(ValueError):
        heard.add_audio(-1)


words = st.text(alphabet="abc,.", min_size=1, max_size=6)


@given(
    st.lists(st.tuples(st.lists(words, min_size=1, max_size=6), st.floats(1, 3000)), max_size=5),
    st.floats(-100, 20_000),
    st.floats(0, 5_000),
)
def test_heard_text_is_a_prefix_of_the_reply_that_grows_with_play(segments, played, more):
    heard = reply(*((" ".join(w), ms) for w, ms in segments))
    full = " ".join(" ".join(w) for w, _ in segments)
    now, later = heard.heard(played), heard.heard(played + more)
    assert full.startswith(now)
    assert later.startswith(now)
    assert now == full or played < heard.total_ms
