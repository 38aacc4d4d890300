"""When a failed gateway request is tried again: :class:`RetryPolicy` decides, sans-I/O, and
:func:`retried` makes the attempts and waits between them.

Only errors marked ``retryable`` are retried (so 402 never is), at most ``max_retries``
times, after ``backoff_s`` doubled at each retry with jitter (50-100 % of it). A
``Retry-After`` is the least wait; one over :data:`MAX_RETRY_AFTER_S` is raised instead of
waited out. Whether a request may be replayed at all is the caller's to know: :func:`retried`
never replays an attempt that yielded anything, and asks ``replayable(error)`` about the rest.

A 402 is not retried but, given a ``pay`` function, answered: once per request, never in a
loop. ``pay`` returns the headers every later attempt carries (a payment proof) or raises;
a second 402 is raised as it is. A paid request that then fails with a retryable error is
retried as any other, with the same proof: the gateway either did not take the payment or
answers 402, and nothing is paid twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from voice.errors import GatewayError, PaymentRequired, RateLimited
from voice.gateway.base import closing

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_AFTER_S = 5.0
"""A longer ``Retry-After`` is raised to the caller: a spoken reply cannot wait that long."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are retried, how often, and after how long."""

    max_retries: int
    backoff_s: float
    max_retry_after_s: float = MAX_RETRY_AFTER_S

    def delay(self, error: GatewayError, retry: int) -> float | None:
        """Seconds to wait before retry number ``retry`` (from 1) after ``error``, or None:
        raise ``error`` instead."""
        if not error.retryable or retry > self.max_retries:
            return None
        delay = self.backoff_s * 2.0 ** (retry - 1) * random.uniform(0.5, 1)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after_s:
                return None
            delay = max(delay, error.retry_after)
        return delay


def _any(error: GatewayError) -> bool:
    return True


Pay = Callable[[PaymentRequired], Awaitable[Mapping[str, str]]]
"""Answers a 402: the headers to send the request again with; raises to refuse."""
Attempt = Callable[[Mapping[str, str]], AsyncIterator[T]]
"""One attempt at a request, sent with these extra headers (a payment proof, or none)."""


async def retried(
    policy: RetryPolicy,
    attempt: Attempt[T],
    *,
    label: str,
    replayable: Callable[[GatewayError], bool] = _any,
    pay: Pay | None = None,
) -> AsyncGenerator[T, None]:
    """The items of ``attempt(headers)``. After a :class:`GatewayError`, the attempt is made
    again if it yielded nothing, ``replayable(error)`` holds and ``policy`` gives a delay;
    after the first 402, if ``pay`` gives headers to send; else the error is raised.
    ``label`` names the request in the log line of each retry."""
    retry = 0
    paid: Mapping[str, str] = {}
    answered = False
    while True:
        yielded = False
        try:
            async with closing(attempt(paid)) as items:
                async for item in items:
                    yielded = True
                    yield item
            return
        except PaymentRequired as error:
            if yielded or pay is None or answered:
                raise
            answered = True
            paid = await pay(error)
            log.debug("paid the %s request's 402 challenge; sending it once more", label)
            continue
        except GatewayError as error:
            retry += 1
            delay = None if yielded or not replayable(error) else policy.delay(error, retry)
            if delay is None:
                raise
            log.info(
                "retry %d of %d of the %s request in %.2f s after: %s",
                retry,
                policy.max_retries,
                label,
                delay,
                error,
            )
        await asyncio.sleep(delay)
