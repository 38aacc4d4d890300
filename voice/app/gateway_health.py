"""Whether this process can reach its gateway: what ``/ready`` says about it.

A server whose gateway is gone answers every turn with an error; a load balancer reading
``/ready`` should send its calls elsewhere. :class:`GatewayHealth` decides, per process:

1. at start (the app's lifespan), one probe: ``GET {gateway}/models``, not retried, within
   ``VOICE_GATEWAY_PROBE_TIMEOUT_S``. No answer (connection refused, a timeout, a 5xx), or a
   refused API key, makes the gateway *unreachable*: ``/ready`` answers 503 with
   ``"status": "gateway_unreachable"`` and the reason. An answer lists the models: configured
   ids it lacks get one warning (not a failure: some gateways list only some models); a 4xx
   other than 401/403 (a gateway without ``/models``) is an answer too;
2. while serving, it watches the calls' own events: ``VOICE_GATEWAY_FAILURE_THRESHOLD`` turns
   in a row that failed for good with ``gateway_unavailable`` or ``gateway_timeout`` make it
   unreachable; a completed reply starts the count again;
3. while unreachable, a probe every ``VOICE_GATEWAY_PROBE_S`` until one gets an answer; while
   reachable, no probe at all: turns that succeed are the evidence, and cost nothing more.

Why the calls' events rather than the gateway client's errors: an event is a turn that failed
for good, after the client's retries, so a blip that a retry hid never counts and one dead
gateway counts once per turn, not once per attempt; the events already reach the app (the
metrics read them), so nothing is added to the gateway layer or to each streamed chunk; and
every :class:`~voice.gateway.base.Gateway` emits them the same way. What decides recovery is
a probe, so a gateway that answers ``/models`` but fails chat with 503 is back at the next
probe rather than kept out.

Sessions are not refused while the gateway is unreachable (admission is unchanged): a caller
who reaches this server anyway gets the turn's own error. With ``voice serve --workers N``
each worker probes and counts for itself, and its ``/ready`` says what that worker sees.

A gateway without :meth:`Probed.probe` (the embedded local engines, a simulated gateway in
the process) is not watched: it is always reachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, runtime_checkable

from voice.config import GatewaySettings
from voice.core.events import ErrorEvent, ResponseDone, SessionEvent
from voice.errors import GatewayAuthError, GatewayError, GatewayTimeout, GatewayUnavailable

log = logging.getLogger(__name__)

UNREACHABLE_CODES = frozenset({GatewayUnavailable.code, GatewayTimeout.code})
"""The error codes of a turn that failed because the gateway did not answer."""
UNREACHABLE = (GatewayUnavailable, GatewayTimeout, GatewayAuthError)
"""A probe that fails with one of these got no usable answer (a refused key will refuse
every turn as well: a deploy with a bad key is never ready)."""


@runtime_checkable
class Probed(Protocol):
    """A gateway that can be asked whether it answers (``HttpGateway``)."""

    async def probe(self, timeout_s: float) -> list[str]:
        """The model ids, from one request within ``timeout_s``; a GatewayError if none."""
        ...


class GatewayHealth:
    """One process's view of its gateway; :attr:`reason` is None while it is reachable.

    :meth:`start` and :meth:`aclose` bracket the app's life; :meth:`observe` gets every
    session event. The probe task, when one runs, is this object's, and ``aclose`` ends it.
    """

    def __init__(self, *, probe: Probed | None, settings: GatewaySettings) -> None:
        self._probed = probe
        self._settings = settings
        self._reason: str | None = None
        self._since = 0.0
        self._failures = 0
        self._models_checked = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def watched(self) -> bool:
        """Whether this gateway is probed and counted at all."""
        return self._probed is not None

    @property
    def reachable(self) -> bool:
        return self._reason is None

    @property
    def reason(self) -> str | None:
        """Why the gateway is unreachable, for ``/ready`` (no credential: the URL has none,
        and the gateway client masks the key in every message)."""
        return self._reason

    async def start(self) -> None:
        """Probe once; if that gets no answer, go on probing in the background."""
        if self._probed is None or self._closed:
            return
        await self._probe_once()
        if self._reason is not None:
            self._start_probing()

    def observe(self, event: SessionEvent) -> None:
        """Count turns that failed for want of the gateway; a completed reply resets."""
        if self._probed is None or self._reason is not None:
            return  # while unreachable, only a probe decides
        match event:
            case ErrorEvent(code=code, message=message) if code in UNREACHABLE_CODES:
                self._failures += 1
                if self._failures >= self._settings.failure_threshold:
                    self._unreachable(f"{self._failures} turns in a row failed: {message}")
                    self._start_probing()
            case ResponseDone(status="completed"):
                self._failures = 0
            case _:
                pass

    async def aclose(self) -> None:
        """Stop probing (the app is stopping)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _start_probing(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._probing())

    async def _probing(self) -> None:
        try:
            while self._reason is not None:
                await asyncio.sleep(self._settings.probe_s)
                await self._probe_once()
        finally:
            self._task = None

    async def _probe_once(self) -> None:
        assert self._probed is not None
        timeout_s = self._settings.probe_timeout_s
        try:
            # httpx bounds each phase; this bounds the whole (a body that trickles in).
            async with asyncio.timeout(timeout_s):
                ids = await self._probed.probe(timeout_s)
        except TimeoutError:
            self._unreachable(f"no answer to GET /models within {timeout_s:g} s")
        except UNREACHABLE as error:
            self._unreachable(error.message)
        except GatewayError as error:
            # It answered, but not with a list we can read: reachable, models unchecked.
            self._reachable()
            self._check_models(None, error.message)
        except Exception:
            log.exception("probing the gateway failed")
            self._unreachable("the gateway probe failed; the server log says why")
        else:
            self._reachable()
            self._check_models(ids, None)

    def _unreachable(self, why: str) -> None:
        was_reachable = self._reason is None
        self._reason = f"{self._settings.url}: {why}"
        if was_reachable:
            self._since = time.monotonic()
            log.warning(
                "gateway unreachable (%s); /ready answers 503 and it is probed every %g s "
                "until it answers",
                self._reason,
                self._settings.probe_s,
            )
        else:
            log.debug("gateway still unreachable: %s", self._reason)

    def _reachable(self) -> None:
        if self._reason is not None:
            log.info(
                "gateway %s answers again after %.1f s; /ready answers 200",
                self._settings.url,
                time.monotonic() - self._since,
            )
        self._reason = None
        self._since = 0.0
        self._failures = 0

    def _check_models(self, ids: list[str] | None, why_not: str | None) -> None:
        """Warn, once per process, about configured model ids the gateway does not list."""
        if self._models_checked:
            return
        self._models_checked = True
        s = self._settings
        if ids is None:
            log.warning("could not check the configured model ids: %s", why_not)
            return
        configured = {
            "VOICE_ASR_MODEL": s.asr_model,
            "VOICE_LLM_MODEL": s.llm_model,
            "VOICE_TTS_MODEL": s.tts_model,
        }
        missing = [f"{model} ({var})" for var, model in configured.items() if model not in ids]
        if missing:
            log.warning(
                "the gateway at %s does not list %s among its %d models; some gateways list "
                "only some of theirs, but if turns fail, check the model ids",
                s.url,
                ", ".join(missing),
                len(ids),
            )
