import pytest

from voice.core.dialog import ChatMessage, Dialog


def roles(dialog: Dialog) -> str:
    return "".join(m.role[0] for m in dialog.messages())


def test_system_message_comes_first_then_the_turns():
    dialog = Dialog(instructions="Be brief.")
    dialog.add_user(" Hi there ")
    dialog.add_assistant("Hello!")
    assert dialog.messages() == [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi there"),
        ChatMessage("assistant", "Hello!"),
    ]


def test_empty_text_adds_nothing():
    dialog = Dialog(instructions="x")
    dialog.add_user("")
    dialog.add_user("  \n")
    dialog.add_assistant(" ")
    assert roles(dialog) == "s"


def test_instructions_can_change_mid_session():
    dialog = Dialog(instructions="Be brief.")
    dialog.add_user("Hi")
    dialog.instructions = "Speak French."
    assert dialog.messages()[0] == ChatMessage("system", "Speak French.")
    assert dialog.messages()[1] == ChatMessage("user", "Hi")


def test_blank_instructions_mean_no_system_message():
    dialog = Dialog(instructions=" ")
    dialog.add_user("Hi")
    assert dialog.messages() == [ChatMessage("user", "Hi")]


def test_consecutive_user_messages_are_merged():
    dialog = Dialog(instructions="x")
    dialog.add_user("What is")
    dialog.add_assistant("")  # the reply was interrupted before anything was heard
    dialog.add_user("the time?")
    assert dialog.messages()[1:] == [ChatMessage("user", "What is the time?")]


def test_consecutive_assistant_messages_are_merged():
    dialog = Dialog(instructions="x")
    dialog.add_user("Hi")
    dialog.add_assistant("Hello.")
    dialog.add_assistant("How can I help?")
    assert dialog.messages()[-1] == ChatMessage("assistant", "Hello. How can I help?")


def test_history_is_bounded_and_drops_the_oldest():
    dialog = Dialog(instructions="x", max_messages=4)
    for n in range(10):
        dialog.add_user(f"q{n}")
        dialog.add_assistant(f"a{n}")
    assert [m.content for m in dialog.messages()] == ["x", "q8", "a8", "q9", "a9"]


def test_trimmed_history_never_starts_with_an_assistant_message():
    dialog = Dialog(instructions="x", max_messages=4)
    dialog.add_user("q0")
    for n in range(1, 4):
        dialog.add_assistant(f"a{n - 1}")
        dialog.add_user(f"q{n}")
    assert [m.content for m in dialog.messages()] == ["x", "q2", "a2", "q3"]
    dialog = Dialog(instructions="x", max_messages=2)
    dialog.add_user("q0")
    dialog.add_assistant("a0")
    dialog.add_user("q1")
    assert roles(dialog) == "su"
    assert dialog.messages()[1].content == "q1"


def test_max_messages_must_hold_a_question_and_its_answer():
    with pytest.raises(ValueError):
        Dialog(instructions="x", max_messages=1)


def test_awaiting_reply_follows_who_spoke_last():
    dialog = Dialog(instructions="be brief")
    assert not dialog.awaiting_reply
    dialog.add_user("hello")
    assert dialog.awaiting_reply
    dialog.add_assistant("")  # nothing heard: still unanswered
    assert dialog.awaiting_reply
    dialog.add_assistant("hi")
    assert not dialog.awaiting_reply
