"""Graceful drain: refuse new calls, let active ones finish, end the rest after a bound.

While draining, the B2BUA answers new INVITEs with 503 and ``Retry-After`` (RFC 3261 §21.5.4) so
that a peer's failover moves to another gateway; in-dialog requests (BYE, re-INVITE) still pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.ops.log import get_logger

log = get_logger("drain")


@dataclass(frozen=True, slots=True)
class DrainResult:
    waited: float  # seconds spent waiting for calls to end by themselves
    ended_by_us: int  # calls still up at the deadline, ended with BYE


class Drainer:
    """Holds the draining flag; ``drain()`` runs the wait-then-end sequence once."""

    def __init__(self, active_calls: Callable[[], int],
                 end_calls: Callable[[str], Awaitable[None]], timeout: float,
                 poll: float = 0.05) -> None:
        self._active = active_calls
        self._end = end_calls
        self.timeout = timeout
        self.poll = poll
        self.draining = False
        self._hurry = False

    def hurry(self) -> None:
        """Stop waiting: end the remaining calls now (a second SIGTERM/SIGINT)."""
        self._hurry = True

    async def drain(self) -> DrainResult:
        loop = asyncio.get_running_loop()
        self.draining = True
        start = loop.time()
        deadline = start + self.timeout
        log.info("drain.started", active_calls=self._active(), timeout=self.timeout)
        while self._active() > 0 and loop.time() < deadline and not self._hurry:
            await asyncio.sleep(min(self.poll, max(0.0, deadline - loop.time())))
        waited = loop.time() - start
        left = self._active()
        if left:
            log.warning("drain.timeout", active_calls=left, waited=round(waited, 3))
            await self._end("drain")
        log.info("drain.done", waited=round(waited, 3), ended_by_us=left)
        return DrainResult(waited, left)
