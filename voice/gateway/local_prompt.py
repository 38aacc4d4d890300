"""The system prompt the embedded chat model answers under.

The default instructions are written for a large gateway model. A 0.5B model needs them
plainer: it invents a clock time or a forecast, agrees to set reminders it cannot set, and
numbers its steps, unless told in so many words what it is and what it cannot do. So when a
session's system message is the default one, the embedded gateway sends
:data:`LOCAL_INSTRUCTIONS` instead; instructions an operator or a caller chose go through
unchanged. ``benchmarks/answers.json`` is what this prompt was tuned against
(``python -m benchmarks.local answers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from voice.config import PipelineSettings
from voice.core.dialog import ChatMessage

DEFAULT_INSTRUCTIONS: Final = PipelineSettings().instructions

LOCAL_INSTRUCTIONS: Final = (
    "You are a voice assistant running offline on this computer, with no internet. Reply in"
    " one or two short spoken sentences, with no lists or markdown. Answer questions about "
    "facts, words, maths, cooking, feelings or how to do something directly and correctly. "
    "But you cannot know the current time, date, weather or news, and you cannot do tasks: no "
    "reminders, bookings, calls, music or smart devices. Only when asked for one of those, "
    'start with "Sorry, I can\'t" and give one helpful tip. For anything else, give your best '
    "short answer."
)

LOCAL_EXAMPLES: Final[tuple[tuple[str, str], ...]] = (
    (
        "Are you a person?",
        "No, I'm a voice assistant running offline on this computer.",
    ),
    (
        "What's the time in Tokyo right now?",
        "Sorry, I can't check the time offline; a world clock on your phone or computer will "
        "show it.",
    ),
    (
        "Can you book me a hotel in Rome?",
        "Sorry, I can't book anything offline, but the hotel's website or phone line can.",
    ),
    (
        "Add milk to my shopping list.",
        "Sorry, I can't keep lists offline; a notes app on your phone can.",
    ),
    (
        "How do I change my email address?",
        "Usually you open your account settings, choose the email option, and confirm the "
        "change with the link they send you.",
    ),
    (
        "What is 9 plus 6?",
        "Nine plus six is fifteen.",
    ),
    (
        "What is the speed of light in kilometres per second?",
        "Light travels at about 300,000 kilometres per second.",
    ),
    (
        "What is the capital of Italy?",
        "The capital of Italy is Rome.",
    ),
    (
        "How do you say please in German?",
        'In German, please is "bitte".',
    ),
    (
        "How do I cook pasta?",
        "Boil a big pot of salted water, add the pasta, and cook it for eight to ten minutes, "
        "until it's tender.",
    ),
    (
        "My parcel was meant to arrive yesterday and it still hasn't come.",
        "Sorry, I can't track it offline; the delivery company's tracking page or customer "
        "service can tell you where it is.",
    ),
    (
        "I'm so tired of work.",
        "That sounds exhausting; I hope you get some rest tonight, and talking to someone you "
        "trust can help too.",
    ),
)
"""Exchanges shown to the model before the conversation, one of each kind of answer: a small
model follows examples better than rules, and is swayed by them: a temperature among them
and it guesses the one outside; the order of two of them flips an answer. None is a question
of the judged set or of the held-out probes in it. They cost ~560 tokens of prompt, which
llama.cpp computes once, at load, into every slot (engines.py)."""


def local_preamble() -> list[ChatMessage]:
    """The system message and examples the embedded model gets instead of the default one."""
    preamble = [ChatMessage("system", LOCAL_INSTRUCTIONS)]
    for question, answer in LOCAL_EXAMPLES:
        preamble += [ChatMessage("user", question), ChatMessage("assistant", answer)]
    return preamble


def for_local_model(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """``messages`` with the default system message swapped for :func:`local_preamble`."""
    out: list[ChatMessage] = []
    for m in messages:
        if m.role == "system" and m.content == DEFAULT_INSTRUCTIONS:
            out += local_preamble()
        else:
            out.append(m)
    return out
