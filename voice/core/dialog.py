"""Conversation history: system prompt, bounded turns, truncation to what was heard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


class Dialog:
    """One session's conversation, ready to send as chat ``messages``.

    The history keeps at most ``max_messages`` user and assistant messages (the system
    message is extra); the oldest go first, and an assistant message left at the front is
    dropped too, since a reply without its question only confuses the model. Roles
    alternate: a second user message in a row (the caller spoke again before hearing any
    reply) is merged into the first, and so is a second assistant message, because some
    chat templates reject two messages of one role in a row. Text is stripped; empty text
    adds nothing. Blank ``instructions`` mean no system message.
    """

    def __init__(self, *, instructions: str, max_messages: int = 24) -> None:
        if max_messages < 2:
            raise ValueError(f"max_messages must be at least 2, got {max_messages}")
        self.instructions = instructions
        self.max_messages = max_messages
        self._history: list[ChatMessage] = []

    def messages(self) -> list[ChatMessage]:
        system = self.instructions.strip()
        head = [ChatMessage("system", system)] if system else []
        return head + self._history

    @property
    def awaiting_reply(self) -> bool:
        """The caller has the last word: a user message no reply has answered yet."""
        return bool(self._history) and self._history[-1].role == "user"

    def add_user(self, text: str) -> None:
        self._add("user", text)

    def add_assistant(self, text: str) -> None:
        """Add a reply; after a barge-in, pass only the part the caller heard."""
        self._add("assistant", text)

    def messages_with_user(self, text: str) -> list[ChatMessage]:
        """What :meth:`messages` would be after ``add_user(text)``, changing nothing: the
        request a speculative reply makes before the caller's turn is committed."""
        system = self.instructions.strip()
        head = [ChatMessage("system", system)] if system else []
        return head + self._added("user", text)

    def _add(self, role: Role, text: str) -> None:
        self._history = self._added(role, text)

    def _added(self, role: Role, text: str) -> list[ChatMessage]:
        history = list(self._history)
        text = text.strip()
        if not text:
            return history
        if history and history[-1].role == role:
            text = f"{history[-1].content} {text}"
            history.pop()
        history.append(ChatMessage(role, text))
        del history[: max(0, len(history) - self.max_messages)]
        while history and history[0].role == "assistant":
            history.pop(0)
        return history
