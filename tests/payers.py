"""Payment hooks for the x402 tests, named in VOICE_X402_PAYER as an operator names theirs.

Each notes the challenges it was asked to pay in ``challenges`` and the headers it gave in
``given`` (cleared by the tests' fixture); the worked example in docs/examples is the payer
that really pays the simulated gateway.
"""

import asyncio
import threading
from pathlib import Path

from voice.gateway.x402 import PaymentChallenge

challenges: list[PaymentChallenge] = []
given: list[dict[str, str]] = []
release = threading.Event()
"""Lets :func:`blocking` return; set by the test that made it block."""
EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def prepare(monkeypatch, secret: str) -> None:
    """For one test: the documented payer importable, paying with the simulated gateway's
    ``secret``, and nothing noted yet."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("SIM_X402_SECRET", secret)
    challenges.clear()
    given.clear()
    release.clear()


def _example(challenge: PaymentChallenge) -> dict[str, str] | None:
    from x402_payer import pay  # docs/examples, put on sys.path by the tests that use it

    headers = pay(challenge)
    return None if headers is None else dict(headers)


def example(challenge: PaymentChallenge) -> dict[str, str] | None:
    """The documented payer, noting what it was asked and what it answered."""
    challenges.append(challenge)
    headers = _example(challenge)
    if headers is not None:
        given.append(headers)
    return headers


async def example_async(challenge: PaymentChallenge) -> dict[str, str] | None:
    await asyncio.sleep(0)
    return example(challenge)


def refuse(challenge: PaymentChallenge) -> None:
    challenges.append(challenge)
    return None


def forged(challenge: PaymentChallenge) -> dict[str, str]:
    """A proof that names the challenge's nonce but was never paid."""
    challenges.append(challenge)
    nonce = challenge.options[0].raw["nonce"]
    headers = {"X-Payment-Proof": f"{nonce}.{'0' * 64}"}
    given.append(headers)
    return headers


def blocking(challenge: PaymentChallenge) -> None:
    """A wallet that hangs: blocks its thread until released (or 10 s)."""
    challenges.append(challenge)
    release.wait(timeout=10)
    return None


def fails(challenge: PaymentChallenge) -> None:
    raise RuntimeError("wallet locked")


def clobbers_auth(challenge: PaymentChallenge) -> dict[str, str]:
    return {"Authorization": "Bearer someone-else"}
