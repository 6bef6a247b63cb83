"""The reliable UART mode on a gateway serial port: the asyncio side of sig.core.reliable.

:class:`ReliableFrames` is the frame handler of a port with the mode on (the
default; ``reliable = false`` turns it off). It wraps the port's link in a
:class:`~sig.core.reliable.ReliableLink`, which the core sends through, hands
each received body to it before the core (on a keyed port after the
signature is checked: :class:`~sig.routers.serial.SignedFrames` calls this
handler with plain bodies), and runs its retransmission timer on the event
loop. Two things the sans-I/O link cannot do are done here:

* when the device has not acknowledged anything after 16 retransmissions, the
  session ends as on a link timeout (``#disconnect`` for its senders,
  ``SENDER_GONE`` for what it was handling), and the port sends INVITE;
* a REQUEST the link's full queue cannot take is answered ``BUSY`` to its
  requester (on the next loop turn, once the core has finished forwarding it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sig.core.reliable import ReliableLink, ReliablePort
from sig.core.session import Input, State
from sig.errors import ErrorCode, RemoteProtocolError
from sig.protocol import messages as w

logger = logging.getLogger(__name__)

__all__ = ["ReliableFrames"]

#: What a requester reads when the device's reliable queue is full.
BUSY_MESSAGE = "the device's serial link is busy (its reliable queue is full)"


class ReliableFrames:
    """The frame handler of a port with the reliable mode (see the module docstring)."""

    def __init__(self, router: Any, port: ReliablePort) -> None:
        self.router = router
        self.port = port
        self.link: ReliableLink | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def link_up(self, link: Any) -> Any:
        """The core attaches the ReliableLink, so all it sends is sequenced as the spec says."""
        reliable = ReliableLink(link, self.port, self.router.core.clock)
        reliable.wake = self._wake
        reliable.refused = self._refused
        self.link = reliable
        return self.router.link_up(reliable)

    def frames(self, link: Any, bodies: list[bytes]) -> int | None:
        """One body at a time through the reliable layer, then to the core."""
        reliable = self.link
        assert reliable is not None
        for done, body in enumerate(bodies, 1):
            try:
                plain = reliable.receive(body)
            except RemoteProtocolError as exc:  # a bad sequence header: MALFORMED, ref 0
                self.router.core._protocol_error(link.session, exc.code, 0, str(exc))
                plain = None
            if plain is not None:
                self.router.frames(link, [plain])
            if link.reading_paused:
                return done
        return None

    def link_down(self, link: Any, exc: BaseException | None) -> None:
        self._cancel()
        self.port.session = None
        self.router.link_down(self.link if self.link is not None else link, exc)

    # --- the retransmission timer -------------------------------------------

    def _wake(self) -> None:
        """(Re)arm the timer at the link's deadline (cancel it when there is none)."""
        reliable = self.link
        deadline = reliable.next_deadline() if reliable is not None else None
        if deadline == self._timer_at:
            return
        self._cancel()
        if deadline is None:
            return
        delay = max(0.0, deadline - self.router.core.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)
        self._timer_at = deadline

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        reliable = self.link
        if reliable is None or reliable.closed.is_set():
            return
        if reliable.poll():
            self._give_up(reliable)
        self._wake()

    def _give_up(self, reliable: ReliableLink) -> None:
        """16 retransmissions without progress: end the session as a link timeout does."""
        core = self.router.core
        session = reliable.session
        if session is None or session.state is not State.OPEN:
            return
        core.end_session(session, "reliable: no ACK after 16 retransmissions")
        session.step(Input.TIMEOUT)
        core._send(session, w.Invite())

    # --- a REQUEST the queue cannot take --------------------------------------

    def _refused(self, body: bytes) -> None:
        """Answer the REQUEST's requester BUSY once the core is done forwarding it."""
        msg = w.decode(body)
        assert isinstance(msg, w.Request)
        asyncio.get_running_loop().call_soon(self._busy, msg.request_id)

    def _busy(self, request_id: int) -> None:
        reliable = self.link
        session = reliable.session if reliable is not None else None
        if session is None:
            return
        answer = w.Response(request_id, ErrorCode.BUSY, BUSY_MESSAGE)
        self.router.core.requests.response(session, answer)
