"""A worked VOICE_X402_PAYER: pays the simulated gateway's x402 challenges.

Run it with `voice gateway --simulate --x402-price 1000 --x402-secret s3cret` and
`VOICE_X402_PAYER=x402_payer:pay VOICE_X402_MAX_PRICE=5000 SIM_X402_SECRET=s3cret
PYTHONPATH=docs/examples voice serve ...` (docs/gateways.md walks through it). The simulated
gateway takes an HMAC as its proof of payment; a real payer would pay on chain here and
return the transaction's proof, in the header its gateway reads.
"""

import hashlib
import hmac
import os
from collections.abc import Mapping

from voice import PaymentChallenge


def pay(challenge: PaymentChallenge) -> Mapping[str, str] | None:
    """Headers that prove payment for ``challenge``, or None to refuse it.

    Called with the options priced within VOICE_X402_MAX_PRICE only, cheapest first. A
    plain function like this one runs on a thread of its own, so it may block (a wallet,
    an RPC call); it has VOICE_X402_TIMEOUT_S to answer.
    """
    option = next((o for o in challenge.options if o.scheme == "exact"), None)
    nonce = option.raw.get("nonce") if option is not None else None
    if option is None or not isinstance(nonce, str):
        return None  # nothing this payer knows how to pay: the request fails as unpaid
    secret = os.environ["SIM_X402_SECRET"].encode()
    mac = hmac.new(secret, f"{nonce}:{option.price}".encode(), hashlib.sha256).hexdigest()
    return {"X-Payment-Proof": f"{nonce}.{mac}"}
