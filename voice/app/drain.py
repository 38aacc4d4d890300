"""Stopping without dropping a call: a deploy asks the server to stop (SIGTERM), and the
calls in progress go on until they end.

:meth:`Drain.run`, once the stop is asked for:

1. admission refuses every new call (503 ``server_draining``, before any WebSocket upgrade,
   so a load balancer can send it elsewhere) and ``/ready`` answers 503, while the listener
   stays open for health checks and the calls in progress;
2. the calls go on, turns, replies and barge-ins included, until each ends; every
   :data:`LOG_EVERY_S` the log says how many are left;
3. at ``timeout_s`` (``VOICE_DRAIN_TIMEOUT_S``), each call left finishes the reply it is
   playing (at most :data:`LAST_REPLY_S` more), then gets ``session.ended``
   (``going_away``) and its socket closes 1001;
4. it returns, and the server stops (voice/app/serving.py, voice/app/workers.py).
"""

from __future__ import annotations

import asyncio
import logging

from voice.app.admission import Admission
from voice.core.events import GOING_AWAY

log = logging.getLogger(__name__)

LOG_EVERY_S = 5.0
LAST_REPLY_S = 15.0
"""Past the drain's timeout, how long a call may take to finish the reply it is playing. A
deploy's grace period covers the drain's timeout plus this and :data:`CLOSE_S`
(deploy/kubernetes/deployment.yaml)."""
CLOSE_S = 5.0
"""After that, how long the calls' transports may take to close."""
POLL_S = 0.1


class Drain:
    def __init__(self, admission: Admission, *, timeout_s: float) -> None:
        self._admission = admission
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self._admission.draining

    def begin(self) -> asyncio.Task[None]:
        """Start draining (once; later calls return the same task), on the running loop."""
        if self._task is None:
            self._admission.draining = True  # now, not when the task first runs
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def run(self) -> None:
        admission = self._admission
        admission.draining = True
        log.info(
            "draining: refusing new calls; %d in progress may go on for up to %g s",
            len(admission.calls),
            self._timeout_s,
        )
        if not await self._until_no_calls(self._timeout_s, "in progress"):
            left = list(admission.calls)
            log.warning(
                "drain timeout (%g s): ending %d calls after their reply in flight",
                self._timeout_s,
                len(left),
            )
            message = "the server is restarting; please call again"
            ending = [
                asyncio.create_task(
                    call.session.end_after_reply(GOING_AWAY, message, within_s=LAST_REPLY_S)
                )
                for call in left
            ]
            await self._until_no_calls(LAST_REPLY_S + CLOSE_S, "closing")
            for task in ending:
                task.cancel()
            await asyncio.gather(*ending, return_exceptions=True)
        log.info("drained: %d calls left", len(admission.calls))

    async def _until_no_calls(self, within_s: float, what: str) -> bool:
        """Wait until this process has no call, logging the count; False at ``within_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        next_log = loop.time() + LOG_EVERY_S
        while self._admission.calls:
            now = loop.time()
            if now >= deadline:
                return False
            if now >= next_log:
                log.info("draining: %d calls %s", len(self._admission.calls), what)
                next_log = now + LOG_EVERY_S
            await asyncio.sleep(POLL_S)
        return True
