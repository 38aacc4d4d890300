"""A turn's record of its gateway requests, for reconciling a call against the gateway's bill.

Per stage (``asr``, ``llm``, ``tts``), one :class:`GatewayCall` per request the pipeline
made: the gateway's request id, the idempotency key sent, how many HTTP attempts it took,
the receipts the gateway returned, and the price paid if an x402 challenge was answered.
The gateway client fills a call in as its request goes; ``response.done`` carries the
record (docs/protocol.md). Nothing secret goes in: no API key, no payment proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Stage = Literal["asr", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("asr", "llm", "tts")

MAX_CALLS_PER_STAGE = 64
"""Calls listed per stage; later ones are counted in ``omitted``. A reply's sentences are
bounded by its token cap, so this is only reached by a runaway reply."""
MAX_RECEIPTS_PER_CALL = 8
"""Receipts kept per call (a retried request may collect one per attempt)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a gateway returned to prove an inference: ``source`` is the response header's
    name (lower case) or ``body``; ``value`` the header's text or the body's JSON value."""

    source: str
    value: Any

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "value": self.value}


@dataclass(slots=True)
class GatewayCall:
    """One gateway request of a turn, filled in by the gateway client as it goes."""

    request_id: str | None = None
    """The gateway's id for the last attempt (ours, ``X-Request-ID``, if it sent none)."""
    idempotency_key: str | None = None
    """Sent on every attempt (transcription and speech); None for chat."""
    attempts: int = 0
    """HTTP requests made: retries and a paid resend each count one."""
    receipts: list[Receipt] = field(default_factory=list)
    price: str | None = None
    """Set when an x402 challenge was paid: its price, in the units the gateway stated."""
    completion_id: str | None = None
    """A chat completion's own ``id``, as the gateway named it (some gateways' receipt id)."""

    def add_receipt(self, receipt: Receipt) -> None:
        if len(self.receipts) < MAX_RECEIPTS_PER_CALL and receipt not in self.receipts:
            self.receipts.append(receipt)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "receipts": [r.as_dict() for r in self.receipts],
            "price": self.price,
            "completion_id": self.completion_id,
        }


@dataclass(slots=True)
class TurnRecord:
    """The gateway calls of one reply, per stage, in the order they were made."""

    calls: dict[Stage, list[GatewayCall]] = field(
        default_factory=lambda: {stage: [] for stage in STAGES}
    )
    omitted: int = 0
    """Calls made past :data:`MAX_CALLS_PER_STAGE`, counted but not listed."""

    def add(self, stage: Stage, call: GatewayCall | None = None) -> GatewayCall:
        """Note a call of ``stage`` (a new one unless ``call`` is given) and return it."""
        call = call if call is not None else GatewayCall()
        listed = self.calls[stage]
        if len(listed) < MAX_CALLS_PER_STAGE:
            listed.append(call)
        else:
            self.omitted += 1
        return call

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            stage: [call.as_dict() for call in self.calls[stage]] for stage in STAGES
        }
        record["omitted"] = self.omitted
        return record


def _per_stage() -> dict[Stage, int]:
    return {stage: 0 for stage in STAGES}


@dataclass(slots=True)
class SpeculationTally:
    """What speculation cost for the turns one reply answers (``VOICE_SPECULATION``).

    ``pauses``: speculations started (one per pause long enough to speculate on). Per
    stage, speculative requests whose result the reply used (``committed``) and those
    thrown away because the caller went on (``cancelled``): a cancelled request was made,
    and a gateway may bill what it did before it was cancelled.
    """

    pauses: int = 0
    committed: dict[Stage, int] = field(default_factory=_per_stage)
    cancelled: dict[Stage, int] = field(default_factory=_per_stage)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pauses": self.pauses,
            "committed": dict(self.committed),
            "cancelled": dict(self.cancelled),
        }
