"""Paying x402 challenges: the challenge read without I/O, then the whole exchange over real
HTTP against the simulated gateway's paywall (challenge → payer → one paid resend).
"""

import asyncio
import json
import time
from contextlib import asynccontextmanager

import httpx
import pytest

from tests import payers
from tests.servers import serve_app
from tests.test_gateway_e2e import FAST as E2E_FAST
from tests.timing import MS
from voice.config import GatewaySettings
from voice.core.dialog import ChatMessage
from voice.core.record import GatewayCall
from voice.errors import ConfigError, PaymentRequired
from voice.gateway.http import HttpGateway
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import Fault, PaywallSettings, SimulatedGateway
from voice.gateway.x402 import parse_challenge

SECRET = "sim-shared-secret"
API_KEY = "sk-x402-test-key"
REPLY = "Paid for. Here is the answer."
FAST = E2E_FAST.model_copy(
    update={
        "replies": [REPLY],
        "x402": PaywallSettings(routes=["chat", "speak"], price=1000, secret=SECRET),
    }
)
MESSAGES = [ChatMessage("user", "what does it cost")]


@pytest.fixture(autouse=True)
def payer_env(monkeypatch):
    payers.prepare(monkeypatch, SECRET)
    yield
    payers.release.set()  # a blocked payer's thread ends with the test


@asynccontextmanager
async def paying_gateway(simulation=FAST, **settings):
    """The simulated gateway over HTTP, and an HttpGateway paying it as ``settings`` say."""
    simulated = SimulatedGateway(simulation)
    async with serve_app(create_gateway_app(simulated, api_key=API_KEY)) as url:
        options = {
            "api_key": API_KEY,
            "max_retries": 0,
            "x402_payer": "tests.payers:example",
            "x402_max_price": 5000,
            **settings,
        }
        async with HttpGateway(GatewaySettings(url=url, **options)) as gateway:
            yield gateway, simulated


async def chat(gateway, call=None):
    return "".join([delta async for delta in gateway.chat(MESSAGES, call=call)])


# -- the challenge, without I/O -----------------------------------------------------------


def test_an_x402_v1_challenge_lists_its_options_cheapest_first():
    body = {
        "x402Version": 1,
        "accepts": [
            {"scheme": "exact", "network": "base", "maxAmountRequired": "2500", "payTo": "0xa"},
            {"scheme": "upto", "network": "base", "maxAmountRequired": "900", "asset": "0xu"},
            {"scheme": "exact"},  # no price: not an option we can check against the cap
        ],
    }
    challenge = parse_challenge(json.dumps(body), route="/v1/chat/completions")
    assert challenge.price == 900 and challenge.schemes == ("upto", "exact")
    assert [(o.network, o.asset, o.pay_to) for o in challenge.options] == [
        ("base", "0xu", None),
        ("base", None, "0xa"),
    ]
    assert challenge.route == "/v1/chat/completions" and challenge.body == body


def test_lucids_challenge_is_read_too():
    body = {
        "error": "Payment Required",
        "x402": {
            "version": "2",
            "payment": {
                "chain": "base",
                "token": "USDC",
                "tokenAddress": "0xusdc",
                "amount": "10000",
                "recipient": "0xpay",
                "scheme": "exact",
            },
            "expires": 1,
        },
    }
    (option,) = parse_challenge(json.dumps(body), route="/v1/chat/completions").options
    assert (option.scheme, option.price, option.network) == ("exact", 10000, "base")
    assert (option.asset, option.pay_to) == ("0xusdc", "0xpay")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        # RunInfra's 402: out of credits, nothing to pay per request.
        ('{"error": {"type": "insufficient_credits", "required_cents": 5}}', "no x402"),
        ("<html>402</html>", "not JSON"),
        ('{"accepts": [{"scheme": "exact", "maxAmountRequired": "ten"}]}', "states a scheme"),
    ],
)
def test_a_402_that_is_no_payable_challenge_says_why(body, why):
    with pytest.raises(ValueError, match=why):
        parse_challenge(body, route="/v1/chat/completions")


# -- the exchange over HTTP -------------------------------------------------------------------


async def test_a_challenge_is_paid_and_the_request_sent_once_more():
    async with paying_gateway() as (gateway, simulated):
        call = GatewayCall()
        assert await chat(gateway, call) == REPLY
    (challenge,) = payers.challenges
    assert challenge.route == "/v1/chat/completions"
    assert challenge.price == 1000 and challenge.schemes == ("exact",)
    assert simulated.requests["chat"] == 1  # the 402 never reached the model
    assert call.attempts == 2 and call.price == "1000"
    (receipt,) = call.receipts
    assert receipt.source == "x-payment-response" and receipt.value.startswith("settled nonce")
    (headers,) = payers.given
    assert headers["X-Payment-Proof"] not in json.dumps(call.as_dict())


async def test_a_paid_speech_request_keeps_its_idempotency_key(monkeypatch):
    async with paying_gateway(x402_payer="tests.payers:example_async") as (gateway, simulated):
        call = GatewayCall()
        frames = [frame async for frame in gateway.speak("Paid speech.", call=call)]
    assert frames and call.attempts == 2 and call.price == "1000"
    assert call.idempotency_key is not None and len(payers.challenges) == 1


async def test_a_refusal_fails_the_request_after_one_attempt():
    async with paying_gateway(x402_payer="tests.payers:refuse") as (gateway, simulated):
        call = GatewayCall()
        with pytest.raises(PaymentRequired, match="not paid: the payer tests.payers:refuse"):
            await chat(gateway, call)
    assert len(payers.challenges) == 1 and call.attempts == 1 and call.price is None


async def test_a_price_over_the_cap_is_never_offered_to_the_payer():
    dear = FAST.model_copy(update={"x402": PaywallSettings(price=5001, secret=SECRET)})
    async with paying_gateway(dear) as (gateway, simulated):
        call = GatewayCall()
        with pytest.raises(PaymentRequired, match="5001 is over VOICE_X402_MAX_PRICE 5000"):
            await chat(gateway, call)
    assert payers.challenges == [] and call.attempts == 1


async def test_a_second_402_fails_the_request_and_the_echoed_proof_is_masked():
    async with paying_gateway(x402_payer="tests.payers:forged") as (gateway, simulated):
        call = GatewayCall()
        with pytest.raises(PaymentRequired) as err:
            await chat(gateway, call)
    assert call.attempts == 2 and len(payers.challenges) == 1  # paid once, never again
    proof = payers.given[0]["X-Payment-Proof"]
    challenge = json.loads(err.value.challenge)
    assert "was not accepted" in challenge["reason"] and "***" in challenge["reason"]
    assert proof not in repr(err.value) and proof not in err.value.challenge
    assert simulated.requests["chat"] == 0


async def test_a_challenge_in_x402s_own_shape_is_checked_against_the_cap():
    # The simulated 402 fault answers with an x402 v1 body (maxAmountRequired 1000).
    fault = FAST.model_copy(
        update={"x402": None, "faults": [Fault(route="chat", kind="status", status=402)]}
    )
    async with paying_gateway(fault, x402_max_price=999) as (gateway, _):
        with pytest.raises(PaymentRequired, match="1000 is over VOICE_X402_MAX_PRICE 999"):
            await chat(gateway)
    async with paying_gateway(fault, x402_payer="tests.payers:refuse") as (gateway, _):
        with pytest.raises(PaymentRequired, match="refused"):
            await chat(gateway)
    (challenge,) = payers.challenges
    assert challenge.price == 1000 and challenge.options[0].network == "base-sepolia"


async def test_a_blocking_payer_runs_off_the_event_loop_and_is_waited_on_only_so_long():
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(10 * MS)
            ticks += 1

    settings = {"x402_payer": "tests.payers:blocking", "x402_timeout_s": 300 * MS}
    async with paying_gateway(**settings) as (gateway, _):
        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        with pytest.raises(PaymentRequired, match=r"did not answer within 0\.3 s"):
            await chat(gateway)
        waited = time.monotonic() - started
        ticker.cancel()
    assert len(payers.challenges) == 1
    assert 300 * MS <= waited < 5  # bounded, well before the payer would have given up
    assert ticks >= 10  # the loop went on while the payer's thread blocked


@pytest.mark.parametrize(
    ("payer", "why"),
    [
        ("tests.payers:fails", r"failed \(RuntimeError\)"),
        ("tests.payers:clobbers_auth", "the header Authorization, which the client sets itself"),
    ],
)
async def test_a_payer_that_fails_or_answers_wrongly_leaves_the_request_unpaid(payer, why):
    async with paying_gateway(x402_payer=payer) as (gateway, simulated):
        with pytest.raises(PaymentRequired, match=why) as err:
            await chat(gateway)
    assert "someone-else" not in repr(err.value) and simulated.requests["chat"] == 0


def test_a_payer_that_cannot_be_imported_is_a_start_up_error():
    for spec, why in (
        ("no_such_module_here:pay", "cannot import no_such_module_here"),
        ("tests.payers:no_such_function", "has no function no_such_function"),
    ):
        settings = GatewaySettings(url="http://127.0.0.1:9/v1", x402_payer=spec, x402_max_price=1)
        with pytest.raises(ConfigError, match=why):
            HttpGateway(settings)


async def test_without_a_payer_a_402_fails_as_before():
    async with paying_gateway(x402_payer=None, x402_max_price=None) as (gateway, simulated):
        call = GatewayCall()
        with pytest.raises(PaymentRequired) as err:
            await chat(gateway, call)
    assert call.attempts == 1 and "not paid" not in err.value.message
    assert json.loads(err.value.challenge)["x402"]["payment"]["amount"] == "1000"


async def test_a_402_that_is_no_x402_challenge_never_reaches_the_payer():
    # RunInfra answers 402 when the workspace is out of credits: nothing a payment hook pays.
    body = {"error": {"message": "Insufficient credits", "type": "insufficient_credits"}}
    transport = httpx.MockTransport(lambda request: httpx.Response(402, json=body))
    settings = GatewaySettings(
        url="http://gateway.test/v1",
        max_retries=0,
        x402_payer="tests.payers:refuse",
        x402_max_price=10,
    )
    async with HttpGateway(settings, transport=transport) as gateway:
        with pytest.raises(PaymentRequired, match="not paid: its 402 body holds no x402"):
            await chat(gateway)
    assert payers.challenges == []
