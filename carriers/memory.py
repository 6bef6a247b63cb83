"""The in-memory carrier: two links joined in one process, no socket, no pty.

:func:`memory_pair` returns two :class:`~carriers.stream.StreamLink` joined by
a pair of :class:`MemoryTransport`. Each link frames what it sends and decodes
what it reads exactly as on TCP: the same class, the same contract
(:class:`carriers.link.Link`), the same counters. Only the bytes travel
through memory, the way they would through a socket pair:

* each end has a receive buffer of ``capacity`` bytes (the kernel's, on TCP).
  A write goes there while there is room; the rest waits in the writer's
  transport buffer, which pauses the writing link (``pause_writing``) until
  the reader takes some;
* the reader gets its buffer on the next loop turn, at most ``max_size``
  bytes per read, and only while it reads (``pause_reading`` holds it back);
* ``close()`` delivers everything written before it, then end of file;
  ``abort()`` drops what is unread and the peer sees a reset
  (``ConnectionResetError``).

It is loop-driven: deliveries are ``loop.call_soon`` callbacks, so the links
behave on it as on a socket. Any object with asyncio's ``call_soon``,
``call_later`` and ``time`` will do as the loop (a test may turn one by hand).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from .stream import FrameHandler, StreamLink

A = TypeVar("A")
B = TypeVar("B")

#: Bytes an end holds for its reader before writes to it wait (a small socket buffer).
DEFAULT_CAPACITY = 64 << 10
#: Bytes one read hands the link (asyncio's sockets read 256 KiB).
DEFAULT_READ_SIZE = 256 << 10


class MemoryTransport(asyncio.Transport):
    """One end of an in-process byte pipe, with the flow control of a socket's end."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.Protocol,
        *,
        name: str,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        super().__init__({"peername": name, "socket": None})
        self._loop = loop
        self._protocol = protocol
        self.peer: MemoryTransport | None = None
        self.capacity = capacity
        #: Bytes one read delivers at most (a capped StreamLink lowers it).
        self.max_size = DEFAULT_READ_SIZE
        self._inbox = bytearray()  # written by the peer, not read yet (the "kernel's")
        self._buffer = bytearray()  # written here, no room at the peer yet
        self._high = 64 << 10
        self._low = self._high // 4
        self._reading = True
        self._write_paused = False
        self._closing = False
        self._lost = False
        self._eof_in = False  # the peer closed: end of file after the inbox
        self._eof_told = False
        self._delivery_scheduled = False

    # --- asyncio.Transport ---------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        self._buffer += data
        self._push()
        if len(self._buffer) > self._high and not self._write_paused:
            self._write_paused = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 << 10 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        self._schedule_delivery()

    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Deliver what was written, then end of file; ``connection_lost(None)`` here."""
        if self._closing or self._lost:
            return
        self._closing = True
        if not self._buffer:
            self._finish()

    def abort(self) -> None:
        """Drop everything; the peer sees a reset."""
        if self._lost:
            return
        self._closing = True
        self._buffer.clear()
        peer = self.peer
        if peer is not None and not peer._lost:
            peer._reset()
        self._lose(None)

    def can_write_eof(self) -> bool:
        return False

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    # --- the pipe ------------------------------------------------------------

    def _push(self) -> None:
        """Move what the peer has room for into its inbox; then close or resume if drained."""
        peer = self.peer
        if peer is None or peer._lost:
            self._buffer.clear()  # the peer is gone: what it would have read is lost
        elif self._buffer:
            peer._take(self._buffer)
        if self._lost:
            return
        if self._closing and not self._buffer:
            self._finish()
        elif self._write_paused and len(self._buffer) <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()

    def _take(self, buffer: bytearray) -> None:
        """Move what fits of the writer's ``buffer`` into this end's inbox."""
        room = self.capacity - len(self._inbox)
        if room > 0:
            self._inbox += buffer[:room]
            del buffer[:room]
            self._schedule_delivery()

    def _schedule_delivery(self) -> None:
        if self._delivery_scheduled or not self._reading or self._lost:
            return
        if self._inbox or (self._eof_in and not self._eof_told):
            self._delivery_scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        """One read: up to ``max_size`` bytes of the inbox, or end of file once it is empty."""
        self._delivery_scheduled = False
        if not self._reading or self._lost:
            return
        if self._inbox:
            data = bytes(self._inbox[: self.max_size])
            del self._inbox[: self.max_size]
            self._protocol.data_received(data)
            if self.peer is not None:
                self.peer._push()  # room again: the writer's buffer moves on
            self._schedule_delivery()
        elif self._eof_in and not self._eof_told:
            self._eof_told = True
            if not self._protocol.eof_received():
                self.close()

    def _finish(self) -> None:
        """Closed and drained: the peer reads end of file; this end is lost."""
        peer = self.peer
        if peer is not None and not peer._lost:
            peer._eof_in = True
            peer._schedule_delivery()
        self._lose(None)

    def _reset(self) -> None:
        """The peer aborted: unread bytes are gone, and this end is lost with a reset."""
        self._inbox.clear()
        self._buffer.clear()
        self._closing = True
        self._lose(ConnectionResetError("memory link reset by peer"))

    def _lose(self, exc: Exception | None) -> None:
        self._lost = True
        self._loop.call_soon(self._protocol.connection_lost, exc)


def memory_pair(
    handler_a: FrameHandler[A],
    handler_b: FrameHandler[B],
    *,
    name: str = "memory",
    loop: Any = None,
    capacity: int = DEFAULT_CAPACITY,
    options_a: dict[str, Any] | None = None,
    options_b: dict[str, Any] | None = None,
) -> tuple[StreamLink[A], StreamLink[B]]:
    """Two connected links, ``memory:NAME/a`` and ``memory:NAME/b``, up at once.

    ``loop`` is the running loop by default. Both handlers' ``link_up`` run
    before this returns (a first frame sent there is delivered, like any
    other, on a later loop turn). ``options_a`` / ``options_b`` are StreamLink
    options (``high_water``, ``max_queued``, ``persistent``, ...).
    """
    loop = loop or asyncio.get_running_loop()
    a = StreamLink(handler_a, name=f"memory:{name}/a", loop=loop, **(options_a or {}))
    b = StreamLink(handler_b, name=f"memory:{name}/b", loop=loop, **(options_b or {}))
    ta = MemoryTransport(loop, a, name=b.name, capacity=capacity)
    tb = MemoryTransport(loop, b, name=a.name, capacity=capacity)
    ta.peer, tb.peer = tb, ta
    a.connection_made(ta)
    b.connection_made(tb)
    return a, b
