"""RetryPolicy decides without I/O; retried() replays only attempts that yielded nothing, and
answers a 402 once, when it is given a way to pay."""

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

    async def attempt(headers):
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

    async def attempt(headers):
        calls.append(1)
        raise GatewayUnavailable("down")
        yield  # an async generator

    policy = RetryPolicy(max_retries=5, backoff_s=0)
    with pytest.raises(GatewayUnavailable):
        async for _ in retried(policy, attempt, label="x", replayable=lambda error: False):
            pass
    assert len(calls) == 1


async def test_a_402_is_paid_once_and_the_resend_carries_the_headers():
    sent = []

    async def attempt(headers):
        sent.append(dict(headers))
        if not headers:
            raise PaymentRequired("pay")
        yield "paid answer"

    asked = []

    async def pay(error):
        asked.append(error)
        return {"X-Payment-Proof": "proof"}

    policy = RetryPolicy(max_retries=0, backoff_s=0)
    got = [item async for item in retried(policy, attempt, label="x", pay=pay)]
    assert got == ["paid answer"]
    assert sent == [{}, {"X-Payment-Proof": "proof"}] and len(asked) == 1


async def test_a_second_402_is_raised_and_never_paid_again():
    sent = []

    async def attempt(headers):
        sent.append(dict(headers))
        raise PaymentRequired("still unpaid")
        yield

    async def pay(error):
        return {}  # even an answer without headers is given one resend only

    policy = RetryPolicy(max_retries=5, backoff_s=0)
    with pytest.raises(PaymentRequired, match="still unpaid"):
        [item async for item in retried(policy, attempt, label="x", pay=pay)]
    assert len(sent) == 2


async def test_a_paid_request_is_retried_with_the_same_proof_and_paid_once():
    sent = []
    paid = []

    async def attempt(headers):
        sent.append(dict(headers))
        if len(sent) == 1:
            raise PaymentRequired("pay")
        if len(sent) == 2:
            raise GatewayUnavailable("503 after the payment")
        yield "ok"

    async def pay(error):
        paid.append(1)
        return {"X-Payment-Proof": "p"}

    policy = RetryPolicy(max_retries=1, backoff_s=0)
    assert [i async for i in retried(policy, attempt, label="x", pay=pay)] == ["ok"]
    assert len(paid) == 1 and sent[1] == sent[2] == {"X-Payment-Proof": "p"}


async def test_a_refusal_to_pay_is_raised_as_it_is():
    async def attempt(headers):
        raise PaymentRequired("pay")
        yield

    async def pay(error):
        raise PaymentRequired("pay; not paid: the payer refused")

    policy = RetryPolicy(max_retries=5, backoff_s=0)
    with pytest.raises(PaymentRequired, match="refused"):
        [item async for item in retried(policy, attempt, label="x", pay=pay)]
