"""Flow control for ``block`` listeners: pause the TCP senders that feed a link that is behind.

The core (:mod:`sig.core.delivery`) calls :meth:`FlowControl.block` with the
sender's session and the listener's when an EVENT for a ``block`` listener
finds that listener's link above its high-water mark. The sender's link then
stops being read (:meth:`carriers.stream.StreamLink.hold_reading`), so TCP
pushes back on the sender, until every listener link that holds it is back
under its low-water mark (``when_low``) or gone.

Why this cannot deadlock the gateway: a held link is only not *read*; what
is queued for it is still written, so a link that is both a held sender and
a blocked listener, or two links that each hold the other, drain as soon as
their peers read. A listener link that takes nothing at all is stuck, and its
own stall clock closes it after ``stall_timeout``; that releases every sender
it held (:meth:`link_down`). A held sender is never timed out for silence
(the core skips links whose reading is paused) and is not stuck itself.
"""

from __future__ import annotations

import logging
from typing import Any

from carriers.stream import StreamLink
from sig.core.gateway import GatewayCore
from sig.core.session import Session

logger = logging.getLogger(__name__)


class FlowControl:
    """Which sender links each blocked listener link holds, and the reverse."""

    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        #: Listener link -> the sender links it holds.
        self.holds: dict[StreamLink[Any], set[StreamLink[Any]]] = {}
        #: Sender link -> the listener links that hold it (read again once empty).
        self.held_by: dict[StreamLink[Any], set[StreamLink[Any]]] = {}
        core.delivery.blocker = self.block

    def block(self, origin: Session, listener: Session) -> None:
        """``listener``'s link is behind on an EVENT of ``origin``'s: stop reading ``origin``."""
        src: StreamLink[Any] = origin.link  # type: ignore[assignment]  # a gateway link
        dst: StreamLink[Any] = listener.link  # type: ignore[assignment]
        holders = self.held_by.setdefault(src, set())
        if dst in holders:
            return
        holders.add(dst)
        held = self.holds.get(dst)
        if held is None:
            held = self.holds[dst] = set()
            dst.when_low(lambda: self.release(dst))
        held.add(src)
        if len(holders) == 1 and src.hold_reading():
            self.core.counters["sender_pauses"] += 1
            logger.debug("%s: not read while %s catches up", src.name, dst.name)

    def release(self, dst: StreamLink[Any]) -> None:
        """``dst`` drained under its low-water mark (or went): read what it held again."""
        now = self.core.clock()
        for src in self.holds.pop(dst, ()):
            holders = self.held_by.get(src)
            if holders is None:
                continue
            holders.discard(dst)
            if holders:
                continue
            del self.held_by[src]
            session = src.session
            if session is not None:
                session.last_rx = now  # its silence was ours: no link timeout for it
            src.release_reading()

    def link_down(self, link: StreamLink[Any]) -> None:
        """A link went: release the senders it held, and forget it as a sender."""
        self.release(link)
        for dst in self.held_by.pop(link, ()):
            held = self.holds.get(dst)
            if held is not None:
                held.discard(link)
