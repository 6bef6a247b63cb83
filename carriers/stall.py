"""The stall clock of a link: how long it has been stuck, and when to give up on it.

A link is stuck while its transport cannot take a byte, while it does not
read its peer, or while it drains before a close. One timer per link at
most: progress only clears the start time, and the timer, when it fires,
waits again for what is left if the link got stuck anew in the meantime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEFAULT_STALL_TIMEOUT = 30.0  #: seconds a link may stay stuck before it is aborted


class StallClock:
    """Calls ``on_stall`` once the link has stayed stuck for ``timeout`` seconds."""

    __slots__ = ("_on_stall", "_since", "_timer", "timeout")

    def __init__(self, timeout: float, on_stall: Callable[[], None]) -> None:
        self.timeout = timeout
        self._on_stall = on_stall
        self._since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def stuck(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The link cannot make progress: start the clock (no-op if it runs)."""
        if self._since is not None or loop is None:
            return
        self._since = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._check, loop)

    def unstuck(self) -> None:
        """Progress: stop the clock (the timer notices when it fires)."""
        self._since = None

    def cancel(self) -> None:
        """The link is gone: no timer left behind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        since = self._since
        if since is None:
            return
        left = since + self.timeout - loop.time()
        if left > 0:  # unstuck and stuck again since the timer was set
            self._timer = loop.call_later(left, self._check, loop)
            return
        self._on_stall()
