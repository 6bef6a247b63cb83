"""The carrier contract: what every link offers the code that handles its frames.

A link carries frame bodies both ways over one byte transport (a TCP
connection, a UART, or the in-memory pair of :mod:`carriers.memory`). It
frames what it is given to send and decodes what it reads; whoever handles
its frames (a :class:`carriers.stream.FrameHandler`: the gateway, a client)
reads and sets only what :class:`Link` lists here, never a private field.
:class:`sig.core.session.Link` (what the sans-I/O gateway core needs) is a
subset of it.

Counters (never reset; all in :meth:`Link.stats`):

* ``dropped``: droppable frames (events) the link refused to queue, because
  more than ``high_water`` bytes waited for the peer or the link was closed.
  This is the link's one drop counter; the gateway core counts only what it
  decided not to send itself (an event too large for the peer);
* ``discarded_frames`` / ``discarded_bytes``: frames accepted by :meth:`Link.send`
  that never reached the kernel (the link was aborted, reset, or stalled);
* ``frames_out`` / ``bytes_out``: handed to the transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

#: ``Link.close_reason`` values a link sets itself ("" means its peer closed it).
#: Its owner may set others before it closes the link ("shutdown", "evicted", ...).
NOT_SIG = "not_sig"  #: a TCP peer sent bytes that are not sig frames
STALLED = "stalled"  #: the peer took nothing for ``stall_timeout`` seconds


@runtime_checkable
class Link(Protocol):
    """One link of any carrier, as its handler sees it."""

    #: Shown in ``sig links``: ``tcp:HOST:PORT``, ``serial:PORT``, ``memory:NAME``.
    name: str
    #: True on a UART: the link outlives sessions, and line noise is counted, not fatal.
    persistent: bool
    #: Bytes queued for the peer above which droppable frames are dropped.
    high_water: int
    #: Why the link closed: set by the link ("not_sig", "stalled") or by its owner
    #: before it closes it; "" when the peer closed it.
    close_reason: str
    #: Set once the link is down (the handler's ``link_down`` has run).
    closed: asyncio.Event
    #: True while the link does not read its peer (its output is over ``max_queued``).
    #: A handler stops handling frames when it sees this set.
    reading_paused: bool
    #: The common name (CN) of the certificate the peer showed over mutual TLS,
    #: once the TLS handshake is done; None without TLS or without a client
    #: certificate. The CA configured as ``client_ca`` vouched for it, so the
    #: gateway may take it as the peer's principal.
    peer_subject: str | None
    #: Droppable frames refused (the link's one drop counter).
    dropped: int
    #: Frames (and their bytes) accepted for sending that never reached the kernel.
    discarded_frames: int
    discarded_bytes: int

    @property
    def session(self) -> Any:
        """What the handler's ``link_up`` returned for this link (its session)."""
        ...

    @property
    def closing(self) -> bool:
        """True once the link was asked to close (or is down): it sends nothing more."""
        ...

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        """Frame ``body`` and queue it; False if it was not queued.

        A ``droppable`` frame (an event) is dropped, and counted in ``dropped``,
        while more than ``high_water`` bytes wait for the peer; nothing else is
        ever dropped while the link is open. An ``urgent`` frame (a request, a
        response) is written at once with what was queued before it; other
        frames go out together at the end of the loop turn.
        """
        ...

    def queued_bytes(self) -> int:
        """Bytes queued for the peer that the kernel has not taken yet."""
        ...

    def write_buffer_size(self) -> int:
        """The same as :meth:`queued_bytes`, named as asyncio's transports name it
        (a sender paces on it: a client waits while it is above some bound)."""
        ...

    def flush(self) -> None:
        """Write what is queued now instead of at the end of the loop turn."""
        ...

    def close(self) -> None:
        """Close once everything queued is written (within ``stall_timeout``)."""
        ...

    def abort(self) -> None:
        """Close now; what was still queued is counted as discarded."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters and state for ``sig links`` (see the module docstring)."""
        ...
