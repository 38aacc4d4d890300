"""The simulated gateway's billing over HTTP: x402 challenges it can verify, and receipts.

ASGI middleware that :mod:`voice.gateway.server` puts in front of a
:class:`~voice.gateway.simulated.SimulatedGateway`, reading its settings per request (they
can change while it runs):

- ``x402``: a request to a paid route without a valid ``X-Payment-Proof`` header gets 402
  and a challenge in LucidLayer's shape, ``{"error": "Payment Required", "x402": {"version":
  "2", "payment": {"scheme": "exact", "amount", "chain", "token", "tokenAddress",
  "recipient", "nonce"}, "expires"}}`` (with a ``reason`` when a proof was refused). The
  proof for it is ``<nonce>.<hex HMAC-SHA256(secret, "<nonce>:<amount>")>``: an HMAC stands
  in for a payment on chain. Each nonce pays once; a paid answer says so in
  ``x-payment-response``.
- ``receipts``: every 2xx answer carries ``x-receipt: rcpt_<hex>``, an HMAC of its request
  id, and a JSON object body (a transcription, a whole completion) a ``receipt`` field too.

A challenge is issued and a proof checked without I/O in :class:`Ledger`; the middleware
only moves headers and bodies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice.gateway.simulated import ROUTE_PATHS, PaywallSettings, Route, SimulatedGateway

PROOF_HEADER = "x-payment-proof"
RECEIPT_HEADER = "x-receipt"
PAYMENT_RESPONSE_HEADER = "x-payment-response"
OPEN_CHALLENGES = 4096
"""Nonces issued and not yet paid, kept at most (the oldest are forgotten first)."""
CHALLENGE_TTL_S = 300
"""A challenge's ``expires``, from when it is issued."""
MAX_JSON_BODY = 1024 * 1024
"""A JSON body larger than this passes without a ``receipt`` field (headers still carry it)."""
RECEIPT_KEY = b"simulated-receipts"
"""Signs receipts when no x402 secret is set."""

_ROUTES: Mapping[str, Route] = {path: route for route, path in ROUTE_PATHS.items()}


class Ledger:
    """Challenges issued and proofs accepted; sans-I/O."""

    def __init__(self, *, capacity: int = OPEN_CHALLENGES) -> None:
        self._open: OrderedDict[str, int] = OrderedDict()  # nonce → price asked
        self._capacity = capacity

    def challenge(self, paywall: PaywallSettings, path: str, reason: str | None) -> bytes:
        """A 402 body for ``path``, with a fresh nonce."""
        nonce = secrets.token_hex(16)
        self._open[nonce] = paywall.price
        while len(self._open) > self._capacity:
            self._open.popitem(last=False)
        body: dict[str, Any] = {
            "error": "Payment Required",
            "x402": {
                "version": "2",
                "facilitator": "simulated",
                "description": f"simulated inference payment for {path}",
                "payment": {
                    "scheme": "exact",
                    "chain": "base-sepolia",
                    "token": "USDC",
                    "tokenAddress": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                    "amount": str(paywall.price),
                    "recipient": "0x0000000000000000000000000000000000000000",
                    "nonce": nonce,
                },
                "expires": int(time.time()) + CHALLENGE_TTL_S,
            },
        }
        if reason is not None:
            body["reason"] = reason
        return json.dumps(body).encode()

    def redeem(self, paywall: PaywallSettings, proof: str) -> str | None:
        """Accept ``proof`` (once): the nonce it paid for; None if it pays for nothing."""
        nonce, _, mac = proof.partition(".")
        price = self._open.get(nonce)
        if price is None or not hmac.compare_digest(mac, proof_mac(paywall.secret, nonce, price)):
            return None
        del self._open[nonce]
        return nonce


def proof_mac(secret: str, nonce: str, price: int) -> str:
    """The HMAC a proof for ``nonce`` carries: what a payer for this gateway computes."""
    message = f"{nonce}:{price}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def receipt_for(key: bytes, request_id: str, path: str) -> str:
    mac = hmac.new(key, f"{request_id}:{path}".encode(), hashlib.sha256).hexdigest()
    return f"rcpt_{mac[:32]}"


class SimulatedBilling:
    """ASGI middleware: x402 and receipts for a simulated gateway, as its settings say."""

    def __init__(self, app: ASGIApp, *, gateway: SimulatedGateway) -> None:
        self.app = app
        self.gateway = gateway
        self.ledger = Ledger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        settings = self.gateway.settings
        paywall = settings.x402
        paid: str | None = None
        if paywall is not None and route in paywall.routes:
            proof = Headers(scope=scope).get(PROOF_HEADER)
            paid = self.ledger.redeem(paywall, proof) if proof else None
            if paid is None:
                # Echoed, as real gateways do: the client must mask it wherever it shows it.
                reason = f"payment proof {proof} was not accepted" if proof else None
                await _send_402(send, self.ledger.challenge(paywall, scope["path"], reason))
                return
        if paid is None and not settings.receipts:
            await self.app(scope, receive, send)
            return
        key = paywall.secret.encode() if paywall is not None else RECEIPT_KEY
        request_id = str(scope.get("state", {}).get("request_id", ""))
        receipt = receipt_for(key, request_id, scope["path"]) if settings.receipts else None
        await self.app(scope, receive, _Stamp(send, receipt=receipt, paid=paid))


async def _send_402(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 402, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Stamp:
    """Wraps ``send``: a 2xx answer gets the receipt (header, and field of a JSON object
    body) and the payment response; other answers pass as they are."""

    def __init__(self, send: Send, *, receipt: str | None, paid: str | None) -> None:
        self.send = send
        self.receipt = receipt
        self.paid = paid
        self.start: Message | None = None  # held while a JSON body is gathered
        self.body = bytearray()
        self.passing = False

    async def __call__(self, message: Message) -> None:
        if self.passing:
            await self.send(message)
            return
        if message["type"] == "http.response.start":
            if not 200 <= message["status"] < 300:
                self.passing = True
                await self.send(message)
                return
            headers = MutableHeaders(scope=message)
            if self.receipt is not None:
                headers[RECEIPT_HEADER] = self.receipt
            if self.paid is not None:
                headers[PAYMENT_RESPONSE_HEADER] = f"settled nonce {self.paid}"
            if self.receipt is None or headers.get("content-type") != "application/json":
                self.passing = True
                await self.send(message)
                return
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        more = message.get("more_body", False)
        if more and len(self.body) <= MAX_JSON_BODY:
            return
        body = bytes(self.body)
        if not more:  # the whole body: small enough to stamp
            body = _with_receipt(body, self.receipt)
            MutableHeaders(scope=self.start)["content-length"] = str(len(body))
        self.passing = True
        await self.send(self.start)
        await self.send({**message, "body": body})


def _with_receipt(body: bytes, receipt: str | None) -> bytes:
    if receipt is None:
        return body
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict):
        return body
    payload["receipt"] = receipt
    return json.dumps(payload).encode()
