"""Masking credentials in whatever gateway text `voice` keeps or shows: sans-I/O.

:class:`Redactor` holds the client's secrets (the API key, the extra header values) and
masks them, and any per-request ones it is given (a payment proof), in text quoted in an
error message or a log line, in a 402 challenge, and in receipts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

MASK = "***"


class Redactor:
    """Masks ``secrets`` (longest first, so one that contains another is masked whole)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str, also: Sequence[str] = ()) -> str:
        """``text`` with the secrets and ``also`` masked."""
        for secret in (*sorted(also, key=len, reverse=True), *self._secrets):
            text = text.replace(secret, MASK)
        return text

    def value(self, value: Any, also: Sequence[str] = ()) -> Any:
        """A JSON value with every string in it (keys too) masked."""
        if isinstance(value, str):
            return self(value, also)
        if isinstance(value, list):
            return [self.value(item, also) for item in value]
        if isinstance(value, dict):
            return {self(str(k), also): self.value(v, also) for k, v in value.items()}
        return value
