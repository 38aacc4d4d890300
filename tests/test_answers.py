"""The judged answer set and its judge (voice/bench/answers.py, benchmarks/answers.json)."""

import json
import re
from pathlib import Path

import pytest

from voice.bench.answers import MAX_WORDS, Expected, load
from voice.core.dialog import ChatMessage
from voice.gateway.local_prompt import (
    DEFAULT_INSTRUCTIONS,
    LOCAL_EXAMPLES,
    LOCAL_INSTRUCTIONS,
    for_local_model,
)

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = load(ROOT / "benchmarks" / "answers.json")
BY_ID = {e.id: e for e in ANSWERS}


def test_the_set_covers_every_sample_question_and_names_real_recordings():
    manifest = json.loads((ROOT / "samples" / "manifest.json").read_text())["samples"]
    questions = {s["file"] for s in manifest if s["role"] == "question"}
    assert {e.sample for e in ANSWERS if e.sample} == questions
    assert len({e.id for e in ANSWERS}) == len(ANSWERS)
    for e in ANSWERS:
        for pattern in e.must_not:
            re.compile(pattern)


@pytest.mark.parametrize(
    ("reply", "wrong"),
    [
        ("It's 10:30 AM.", "says '10:30 AM"),
        ("The time is 7 pm right now.", "says '7 pm'"),
        ("It is about three o'clock.", 'says "o\'clock"'),
        ("Sure, here you go.", "says none of"),
    ],
)
def test_an_invented_time_is_wrong(reply, wrong):
    problems = BY_ID["time"].problems(reply)
    assert any(wrong in p for p in problems), problems


@pytest.mark.parametrize(
    "reply",
    [
        "Sorry, I can't check the time offline; your phone's clock will show it.",
        "I don\u2019t know the time, I run offline.",
        "I cannot tell the time.",
    ],
)
def test_an_honest_time_answer_passes(reply):
    assert BY_ID["time"].problems(reply) == []


def test_a_forecast_and_an_agreement_to_act_are_wrong():
    assert "says 'mild'" in BY_ID["rain"].problems("Sorry, I can't, but it will be mild.")
    assert BY_ID["remind"].problems("Sure, I'll remind you at eight.")
    assert BY_ID["lights"].problems("Sorry, I can't... oh wait, the lights are now on.")
    assert BY_ID["remind"].problems("Sorry, I can't set reminders offline.") == []


def test_a_reply_must_be_speech():
    steps = "To reset it:\n1. Open settings.\n2. Choose reset."
    assert "has a list" in BY_ID["password"].problems(steps)
    assert "has markdown" in BY_ID["password"].problems("Open **settings** and press reset.")
    long = "You reset it in settings. " * 20
    assert f"{len(long.split())} words, over {MAX_WORDS}" in BY_ID["password"].problems(long)
    assert "is empty" in BY_ID["joke"].problems("  ")


def test_every_group_of_a_must_needs_one_word():
    expected = Expected("egg", "How?", must=(("water",), ("minute", "min")))
    assert expected.problems("Boil water for nine minutes.") == []
    assert expected.problems("Boil it for nine minutes.") == ["says none of 'water'"]


def test_the_default_instructions_become_the_local_preamble():
    messages = [
        ChatMessage("system", DEFAULT_INSTRUCTIONS),
        ChatMessage("user", "What time is it?"),
    ]
    local = for_local_model(messages)
    assert local[0] == ChatMessage("system", LOCAL_INSTRUCTIONS)
    assert len(local) == 2 + 2 * len(LOCAL_EXAMPLES)
    assert [m.role for m in local[1:-1]] == ["user", "assistant"] * len(LOCAL_EXAMPLES)
    assert local[-1] == messages[-1]


def test_an_operators_own_instructions_are_left_alone():
    messages = [ChatMessage("system", "You are a pirate."), ChatMessage("user", "Hi")]
    assert for_local_model(messages) == messages


def test_no_example_is_a_question_of_the_judged_set():
    asked = {e.question.lower() for e in ANSWERS}
    assert not asked & {q.lower() for q, _ in LOCAL_EXAMPLES}


@pytest.mark.parametrize(
    ("reply", "ok"),
    [("Fifteen minus seven is 8.", True), ("18.", False)],
)
def test_a_number_is_found_whole(reply, ok):
    expected = Expected("minus", "What is fifteen minus seven?", must=(("eight", "8"),))
    assert (expected.problems(reply) == []) is ok
    assert BY_ID["sqrt"].problems("The square root of 144 is 120.")
    assert BY_ID["boiling"].problems("Water boils at 100 degrees Fahrenheit.")
