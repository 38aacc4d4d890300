"""Pauses inside a turn (speculation's trigger), their per-pause hangover, and the rules
that judge from the words so far how long a pause must last."""

import pytest

from tests.test_core_turns import Feeder, frames
from voice.core.endpoint import EndOfTurnRules, reads_finished
from voice.core.events import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped
from voice.core.turns import TurnDetector, TurnState


def make(**kwargs) -> Feeder:
    options = {"pause_ms": 200, "hangover_ms": 500, "start_ms": 100, "min_speech_ms": 200}
    return Feeder(TurnDetector(**options | kwargs))


def test_a_pause_is_announced_once_with_the_utterance_so_far():
    f = make()
    f.feed("." * 10)
    f.feed("v" * 20)  # frames 10-29
    assert f.feed("." * 9) == []
    [paused] = f.feed(".")
    assert isinstance(paused, SpeechPaused)
    assert paused.at_ms == 40 * 20
    assert paused.speech_end_ms == 30 * 20
    # pre-roll (300 ms: frames 0-9) + the speech + the 10 pause frames so far
    assert paused.audio == frames(0, 40)
    assert f.feed("." * 14) == []  # no second announcement of the same pause
    [done] = f.feed(".")
    assert isinstance(done, SpeechStopped) and done.at_ms == 55 * 20


def test_speaking_again_resumes_the_turn_and_the_next_pause_is_announced_again():
    f = make()
    f.feed("v" * 20 + "." * 10)
    [resumed] = f.feed("v")
    assert resumed == SpeechResumed(at_ms=30 * 20)
    assert f.state() is TurnState.SPEECH
    f.feed("v" * 9 + "." * 9)
    [paused] = f.feed(".")
    assert isinstance(paused, SpeechPaused) and paused.speech_end_ms == 40 * 20
    [done] = f.feed("." * 15)
    assert isinstance(done, SpeechStopped)
    assert done.audio.startswith(frames(0, 20))  # one turn: the whole utterance


def test_no_pause_is_announced_for_a_turn_too_short_to_answer():
    f = make(min_speech_ms=400)
    events = f.feed("v" * 10 + "." * 30)
    assert not any(isinstance(e, SpeechPaused) for e in events)


def test_without_pause_ms_no_pauses_are_announced():
    f = Feeder(TurnDetector(hangover_ms=500))
    events = f.feed("v" * 20 + "." * 10 + "v" * 5 + "." * 25)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_end_after_shortens_this_pause_and_ends_the_turn_at_once_if_it_is_long_enough():
    f = make()
    f.feed("v" * 20)
    [paused] = f.feed("." * 10)
    f.feed("." * 5)  # 300 ms of pause
    [done] = f.detector.end_after(250, pause_at_ms=paused.at_ms)
    assert isinstance(done, SpeechStopped) and done.at_ms == 35 * 20
    assert f.state() is TurnState.SILENCE


def test_end_after_lengthens_this_pause_only():
    f = make()
    f.feed("v" * 20)
    [paused] = f.feed("." * 10)
    assert f.detector.end_after(900, pause_at_ms=paused.at_ms) == []
    assert f.feed("." * 34) == []  # 880 ms: past the usual 500
    [done] = f.feed(".")
    assert isinstance(done, SpeechStopped)
    # the next turn's pauses have the usual hangover again
    f.feed("v" * 20)
    assert not any(isinstance(e, SpeechStopped) for e in f.feed("." * 24))
    [done] = f.feed(".")
    assert isinstance(done, SpeechStopped)


def test_end_after_is_ignored_once_its_pause_is_over():
    f = make()
    f.feed("v" * 20)
    [paused] = f.feed("." * 10)
    f.feed("v")  # resumed: the verdict on the old pause is stale
    assert f.detector.end_after(100, pause_at_ms=paused.at_ms) == []
    assert f.state() is TurnState.SPEECH
    [paused_again, done] = [e for e in f.feed("." * 25)]
    assert isinstance(paused_again, SpeechPaused) and isinstance(done, SpeechStopped)


@pytest.mark.parametrize(
    "text",
    [
        "What time is it?",
        "Is it going to rain?",
        "Book a table for four people tonight.",
        "Thanks, that's all",
        "Call my mother.",
        "I'd like it",
        "Wait!",
        '"Stop."',
    ],
)
def test_finished_words_read_finished(text):
    assert reads_finished(text)


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book a table for",
        "I'd like to book a table for...",
        "Can you remind me to call my mother and",
        "My flight to Chicago was cancelled this morning, and",
        "So the problem is",
        "What's the weather like in",
        "I want, um",
        "Um.",
        "I need the",
        "Could you tell me whether",
        "Let me think,",
        "",
        "  ",
        "...",
    ],
)
def test_unfinished_words_read_unfinished(text):
    assert not reads_finished(text)


def test_rules_give_the_floor_or_the_ceiling():
    rules = EndOfTurnRules(floor_ms=250, ceiling_ms=900)
    assert rules.hangover_ms("What time is it?") == 250
    assert rules.hangover_ms("I'd like to book a table for") == 900
    with pytest.raises(ValueError, match="floor_ms"):
        EndOfTurnRules(floor_ms=900, ceiling_ms=250)
