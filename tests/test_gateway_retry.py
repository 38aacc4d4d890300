"""RetryPolicy decides without I/O; retried() replays only attempts that yielded nothing."""

import pytest

from voice.errors import GatewayBadRequest, GatewayUnavailable, PaymentRequired, RateLimited
from voice.gateway.retry import MAX_RETRY_AFTER_S, RetryPolicy, retried


def test_only_retryable_errors_are_retried_and_402_never():
    policy = RetryPolicy(max_retries=5, backoff_s=0.2)
    assert policy.delay(GatewayUnavailable("down"), 1) is not None
    assert policy.delay(PaymentRequired("pay"), 1) is None
    assert policy.delay(GatewayBadRequest("no"), 1) is None


def test_retries_stop_after_max_retries():
    policy = RetryPolicy(max_retries=2, backoff_s=0.2)
    delays = [policy.delay(GatewayUnavailable("down"), n) for n in (1, 2, 3)]
    assert delays[0] is not None and delays[1] is not None and delays[2] is None


def test_backoff_doubles_with_jitter():
    policy = RetryPolicy(max_retries=3, backoff_s=0.2)
    for retry, full in ((1, 0.2), (2, 0.4), (3, 0.8)):
        delay = policy.delay(GatewayUnavailable("down"), retry)
        assert delay is not None and full / 2 <= delay <= full


def test_retry_after_is_the_least_wait_unless_too_long():
    policy = RetryPolicy(max_retries=2, backoff_s=0.0)
    assert policy.delay(RateLimited("slow", retry_after=1.5), 1) == 1.5
    assert policy.delay(RateLimited("slow", retry_after=MAX_RETRY_AFTER_S + 1), 1) is None


async def test_an_attempt_that_yielded_is_not_replayed():
    calls = []

    async def attempt():
        calls.append(1)
        if len(calls) == 1:
            raise GatewayUnavailable("before any item")  # replayed
        yield "a"
        raise GatewayUnavailable("after an item")  # raised

    got = []
    with pytest.raises(GatewayUnavailable, match="after an item"):
        async for item in retried(RetryPolicy(max_retries=5, backoff_s=0), attempt, label="x"):
            got.append(item)
    assert got == ["a"] and len(calls) == 2


async def test_replayable_can_refuse_a_replay():
    calls = []

    async def attempt():
        calls.append(1)
        raise GatewayUnavailable("down")
        yield  # an async generator

    policy = RetryPolicy(max_retries=5, backoff_s=0)
    with pytest.raises(GatewayUnavailable):
        async for _ in retried(policy, attempt, label="x", replayable=lambda error: False):
            pass
    assert len(calls) == 1
