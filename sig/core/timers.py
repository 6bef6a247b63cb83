"""The gateway core's timers: request deadlines, reservations, HELLO and keepalive (sans-I/O).

:meth:`Timers.poll` runs on the core's injected clock whenever the asyncio
layer calls :meth:`GatewayCore.poll` (about every 0.1 s): it expires requests
and name reservations, closes TCP links that never sent HELLO, PINGs idle
sessions and ends those silent for :data:`LINK_TIMEOUT_KEEPALIVES` intervals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sig.core.registrations import LINK_TIMEOUT_KEEPALIVES
from sig.core.session import Input, Session, State
from sig.protocol import messages as w

if TYPE_CHECKING:
    from sig.core.requests import Requests
    from sig.core.reservations import Reservations

logger = logging.getLogger(__name__)


class TimersCore(Protocol):
    """What :class:`Timers` uses of its gateway core (:class:`~sig.core.gateway.GatewayCore`).

    A type only: the core hands itself over, and this module never imports it.
    """

    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def hello_timeout(self) -> float: ...
    @property
    def sessions(self) -> set[Session]: ...
    @property
    def name_reservations(self) -> Reservations: ...
    @property
    def requests(self) -> Requests: ...
    def end_session(self, session: Session, reason: str) -> None: ...
    def _send(self, session: Session, msg: w.Message) -> None: ...


class Timers:
    """What the passing of time does to a gateway core's sessions and requests."""

    def __init__(self, core: TimersCore) -> None:
        self.core = core

    def poll(self) -> None:
        """Expire requests, ping idle links, end silent sessions. Call often (~0.1 s)."""
        core = self.core
        now = core.clock()
        core.name_reservations.expire(now)
        core.requests.expire(now)
        hello_by = now - core.hello_timeout if core.hello_timeout else None
        for session in list(core.sessions):
            if session.state is State.AWAIT_HELLO:
                if hello_by is not None and session.attached_at < hello_by:
                    self._hello_timeout(session)
            elif session.state is State.OPEN and session.keepalive_s:
                self._keepalive(session, now)

    def _keepalive(self, session: Session, now: float) -> None:
        """PING an idle open session; end one silent for LINK_TIMEOUT_KEEPALIVES intervals."""
        if getattr(session.link, "reading_paused", False):
            return  # the link is not reading this peer: its silence is ours
        ka = session.keepalive_s
        silent = now - session.last_rx
        if silent > LINK_TIMEOUT_KEEPALIVES * ka:
            logger.warning(
                "%s: no frame from %r for %.1f s, session ends",
                session.link.name,
                session.peer,
                silent,
            )
            self.core.end_session(session, "link timeout")
            if session.step(Input.TIMEOUT) is State.CLOSED:
                session.close_reason = "link_timeout"
                self.core.sessions.discard(session)
                session.link.close()
        elif now - session.last_tx >= ka:
            self.core._send(session, w.Ping(0))

    def _hello_timeout(self, session: Session) -> None:
        """A TCP link that never opened a session (silent, slow or not sig): close it."""
        if session.link.persistent:
            return  # a UART waits for its device as long as it takes
        logger.debug(
            "%s: no HELLO within %.1f s, closing", session.link.name, self.core.hello_timeout
        )
        session.close_reason = "hello_timeout"
        session.step(Input.TIMEOUT)
        self.core.sessions.discard(session)
        session.link.close()
