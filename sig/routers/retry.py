"""Backoff and the one reopen loop: the client's connection, a serial port, the emulator.

Each of them keeps one connection up for as long as it runs: open it, serve it
until it closes, wait, open it again. Only what "open" and "serve" mean
differs, so the loop is written once, here, and each caller passes its two
steps. A failed open waits ``backoff.delay(attempt)`` (growing); a connection
that was up and closed waits ``backoff.delay(0)`` before the next open, so a
peer that resets at once is not hammered.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``maximum``, +/- ``jitter`` (a fraction)."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (0: after a clean close)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


DEFAULT_BACKOFF = Backoff()


async def keep_open(
    open_once: Callable[[], Awaitable[T | None]],
    serve: Callable[[T], Awaitable[bool]],
    backoff: Backoff,
    *,
    waiting: Callable[[float], None] | None = None,
) -> None:
    """Open, serve, reopen with ``backoff``, until ``serve`` says stop or the task is cancelled.

    ``open_once()`` returns the open connection, or None when this attempt
    failed (it counts the failure itself; raising ends the loop with that
    error). ``serve(conn)`` returns when the connection is over: True to open
    again, False to stop. ``waiting(delay)``, if given, is told the delay
    before each wait after a failed attempt (to log "retrying in ... s").
    """
    attempt = 0
    while True:
        conn = await open_once()
        if conn is None:
            delay = backoff.delay(attempt)
            if waiting is not None:
                waiting(delay)
            await asyncio.sleep(delay)
            attempt += 1
            continue
        attempt = 0
        if not await serve(conn):
            return
        await asyncio.sleep(backoff.delay(0))
