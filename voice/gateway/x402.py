"""Paying a gateway's x402 challenge: the challenge parsed without I/O, and the operator's
payment hook (``VOICE_X402_PAYER``) called with it.

A 402 body is read in the shapes the seeds' gateways send: x402's ``{"x402Version",
"accepts": [{"scheme", "network", "maxAmountRequired" | "amount", "asset", "payTo", ...}]}``
and LucidLayer's ``{"x402": {"payment": {"scheme", "chain", "amount", "tokenAddress",
"recipient", ...}, ...}}``. A price is an integer in the asset's smallest unit, as both state
it. Options priced over ``VOICE_X402_MAX_PRICE`` are dropped before the hook sees the
challenge; with none left, or a body that is no x402 challenge (RunInfra's 402 means
"out of credits"), the hook is not called and the request fails as unpaid.

The hook is ``def pay(challenge: PaymentChallenge) -> Mapping[str, str] | None`` (or an
``async def``): the headers to send the request again with (``X-Payment-Proof``,
``X-PAYMENT``, ...), or ``None`` to refuse. A plain function may block (a wallet, a network
call): it runs on a small thread pool of its own, never on the event loop. Either kind is
waited on for ``VOICE_X402_TIMEOUT_S`` at most. Its headers are never logged.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from voice.config import HEADER_NAME, GatewaySettings
from voice.errors import ConfigError, PaymentRequired

log = logging.getLogger(__name__)

PAYER_THREADS = 4
"""Blocking payments at once; more wait for a thread (within their bounded wait)."""
RESERVED_HEADERS = frozenset(
    {"authorization", "host", "content-length", "content-type", "idempotency-key", "x-request-id"}
)
"""Headers a payer may not set: the client's own, which a payment has no business changing."""


@dataclass(frozen=True, slots=True)
class PaymentOption:
    """One way to pay that the challenge accepts; ``raw`` is the option as the gateway sent
    it (a nonce, a deadline, the resource...)."""

    scheme: str
    price: int
    network: str | None = None
    asset: str | None = None
    pay_to: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class PaymentChallenge:
    """A 402 as the payment hook sees it: the route that asked (``/v1/chat/completions``),
    the options within ``VOICE_X402_MAX_PRICE`` (cheapest first), and the whole body."""

    route: str
    options: tuple[PaymentOption, ...]
    body: Mapping[str, Any] = field(repr=False)

    @property
    def price(self) -> int:
        """The lowest price asked."""
        return self.options[0].price

    @property
    def schemes(self) -> tuple[str, ...]:
        """The accepted schemes, once each, cheapest first."""
        return tuple(dict.fromkeys(option.scheme for option in self.options))


def parse_challenge(body: str, *, route: str) -> PaymentChallenge:
    """The x402 challenge in a 402 ``body``; :class:`ValueError` says why there is none."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValueError("its 402 body is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("its 402 body is not a JSON object")
    raw_options: list[Any]
    if isinstance(payload.get("accepts"), list):
        raw_options = payload["accepts"]
    elif isinstance(payload.get("x402"), dict) and isinstance(payload["x402"].get("payment"), dict):
        raw_options = [payload["x402"]["payment"]]
    else:
        raise ValueError("its 402 body holds no x402 payment options")
    options = [option for raw in raw_options if (option := _option(raw)) is not None]
    if not options:
        raise ValueError("none of its x402 payment options states a scheme and a price")
    options.sort(key=lambda option: option.price)
    return PaymentChallenge(route=route, options=tuple(options), body=payload)


def _option(raw: Any) -> PaymentOption | None:
    if not isinstance(raw, dict):
        return None
    scheme = raw.get("scheme")
    price = _integer(raw.get("maxAmountRequired", raw.get("amount")))
    if not isinstance(scheme, str) or price is None:
        return None
    return PaymentOption(
        scheme=scheme,
        price=price,
        network=_text(raw.get("network", raw.get("chain"))),
        asset=_text(raw.get("asset", raw.get("tokenAddress", raw.get("token")))),
        pay_to=_text(raw.get("payTo", raw.get("recipient"))),
        raw=raw,
    )


def _integer(value: Any) -> int | None:
    """A price in smallest units: a non-negative integer, or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


PayHook = Callable[
    [PaymentChallenge], "Mapping[str, str] | None | Awaitable[Mapping[str, str] | None]"
]


class Payer:
    """The operator's payment hook, loaded at start, with its price cap and its bounded wait."""

    def __init__(self, hook: PayHook, *, max_price: int, timeout_s: float, name: str) -> None:
        self._hook = hook
        self._is_async = inspect.iscoroutinefunction(hook)
        self._max_price = max_price
        self._timeout_s = timeout_s
        self._name = name
        self._threads: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Payer | None:
        """The payer ``VOICE_X402_PAYER`` names, imported now; None when unset.

        Raises :class:`ConfigError` naming what cannot be imported.
        """
        spec = settings.x402_payer
        if spec is None:
            return None
        assert settings.x402_max_price is not None  # GatewaySettings requires it with a payer
        module_name, _, function_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # an import runs the module: any error can come out
            raise ConfigError(
                f"VOICE_X402_PAYER={spec}: cannot import {module_name} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        hook = getattr(module, function_name, None)
        if not callable(hook):
            raise ConfigError(
                f"VOICE_X402_PAYER={spec}: {module_name} has no function {function_name}"
            )
        return cls(
            hook, max_price=settings.x402_max_price, timeout_s=settings.x402_timeout_s, name=spec
        )

    async def pay(self, error: PaymentRequired) -> tuple[dict[str, str], int]:
        """The headers to resend the request with, and the price asked; or ``error`` raised
        again, saying why it was not paid."""
        try:
            challenge = parse_challenge(error.challenge, route=error.route or "")
        except ValueError as exc:
            raise _unpaid(error, f"{exc}") from error
        affordable = tuple(o for o in challenge.options if o.price <= self._max_price)
        if not affordable:
            raise _unpaid(
                error,
                f"its price {challenge.price} is over VOICE_X402_MAX_PRICE {self._max_price}",
            ) from error
        offered = PaymentChallenge(route=challenge.route, options=affordable, body=challenge.body)
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._call(offered)
        except TimeoutError:
            raise _unpaid(
                error, f"the payer {self._name} did not answer within {self._timeout_s:g} s"
            ) from error
        except Exception as exc:
            log.warning("the payer %s failed: %s: %s", self._name, type(exc).__name__, exc)
            raise _unpaid(error, f"the payer {self._name} failed ({type(exc).__name__})") from exc
        if answer is None:
            raise _unpaid(error, f"the payer {self._name} refused") from error
        headers = _checked_headers(answer)
        if isinstance(headers, str):
            raise _unpaid(error, f"the payer {self._name} answered {headers}") from error
        return headers, offered.price

    async def _call(self, challenge: PaymentChallenge) -> Mapping[str, str] | None:
        if self._is_async:
            result = self._hook(challenge)
            assert inspect.isawaitable(result)
            return await result
        if self._threads is None:
            self._threads = ThreadPoolExecutor(PAYER_THREADS, thread_name_prefix="voice-x402")
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._threads, self._hook, challenge)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            return await result
        return result

    def close(self) -> None:
        """Stop the payment threads; a payment still running is left to finish alone."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)


def _checked_headers(answer: object) -> dict[str, str] | str:
    """``answer`` as headers to send, or what is wrong with it (never quoting a value)."""
    if not isinstance(answer, Mapping) or not answer:
        return f"{type(answer).__name__}, not a mapping of headers"
    headers: dict[str, str] = {}
    for name, value in answer.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            return f"a header name that is not a token: {name!r}"
        if name.lower() in RESERVED_HEADERS:
            return f"the header {name}, which the client sets itself"
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
            return f"a value for {name} that is not one line of text"
        headers[name] = value
    return headers


def _unpaid(error: PaymentRequired, why: str) -> PaymentRequired:
    """``error`` again, its message saying why it was not paid."""
    return PaymentRequired(
        f"{error.message}; not paid: {why}",
        challenge=error.challenge,
        status=error.status,
        error_type=error.error_type,
        request_id=error.request_id,
        route=error.route,
    )
