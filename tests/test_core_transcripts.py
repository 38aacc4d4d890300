"""Joining a turn's transcribed parts (voice/core/transcripts.py)."""

import pytest

from voice.core.transcripts import joined


@pytest.mark.parametrize(
    ("before", "after", "text"),
    [
        # Whisper says the prompt's last sentence again before the new words.
        (
            "I booked a table for Friday evening. But something came up.",
            "But something came up. So could you help me move it?",
            "I booked a table for Friday evening. But something came up. So could you help "
            "me move it?",
        ),
        ("Book a table for", "four people tonight.", "Book a table for four people tonight."),
        # Only the echo: nothing new.
        ("Call my mother tonight.", "call my mother tonight", "Call my mother tonight."),
        # Fewer than three words may really have been said twice.
        ("I said no.", "No, no, I meant Tuesday.", "I said no. No, no, I meant Tuesday."),
        ("", "What time is it?", "What time is it?"),
        ("What time is it?", "", "What time is it?"),
    ],
)
def test_parts_join_without_an_echo(before, after, text):
    assert joined(before, after) == text
