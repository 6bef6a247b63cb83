"""A frame link over any asyncio byte-stream transport (TCP socket, serial port).

The link turns received bytes into frame bodies through the sans-I/O decoder,
and coalesces the frames queued during one event-loop turn into one write.
It knows nothing of routing: it hands bodies to a :class:`FrameHandler`.

Slow consumers: frames marked droppable (events) are dropped and counted while
more than ``high_water`` bytes wait to be written; other frames (requests,
responses, control) are always queued. A link whose transport stays paused
(peer not reading) for longer than ``stall_timeout`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

from sig._frame import DEFAULT_MAX_BODY, FrameDecoder

logger = logging.getLogger(f"sig.{__name__}")  # under "sig": setup_logger covers it

DEFAULT_HIGH_WATER = 1 << 20  #: bytes queued before events to this link are dropped
DEFAULT_STALL_TIMEOUT = 30.0  #: seconds a link may stay unwritable before it is closed


class FrameHandler(Protocol):
    """Who receives what a link decodes."""

    def link_up(self, link: StreamLink) -> None: ...
    def frames(self, link: StreamLink, bodies: list[bytes]) -> None: ...
    def link_down(self, link: StreamLink, exc: BaseException | None) -> None: ...


class StreamLink(asyncio.Protocol):
    """asyncio Protocol carrying sig frames in both directions."""

    def __init__(
        self,
        handler: FrameHandler,
        *,
        name: str = "",
        persistent: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        high_water: int = DEFAULT_HIGH_WATER,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.name = name
        self.persistent = persistent
        self.high_water = high_water
        self.stall_timeout = stall_timeout
        self.decoder = FrameDecoder(max_body)
        self.transport: asyncio.WriteTransport | None = None
        self.closed = asyncio.Event()
        self.session: Any = None  # set by the handler
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffered: Callable[[], int] = self._nothing_buffered
        self.frames_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self.stalled_closes = 0

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: asyncio's, uvloop's and pyserial-asyncio's transports all write,
        # but not all of them subclass asyncio.WriteTransport.
        transport = cast(asyncio.WriteTransport, transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffered = transport.get_write_buffer_size  # looked up once, asked per event
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self.name:
                peer = transport.get_extra_info("peername")
                self.name = f"tcp:{peer[0]}:{peer[1]}" if peer else "tcp:?"
        # The stall timer starts on pause_writing, so the transport must pause
        # below our high-water mark: above it events are dropped and its buffer
        # would never grow enough to pause (asyncio's default pause is 64 KiB).
        try:
            low, high = transport.get_write_buffer_limits()
        except NotImplementedError:  # pyserial-asyncio's transport has only the setter
            low, high = self.high_water // 8, self.high_water
        if high >= self.high_water:
            high = max(1, self.high_water // 2)
            transport.set_write_buffer_limits(high, min(low, high // 4))
        self.handler.link_up(self)

    def data_received(self, data: bytes) -> None:
        bodies = self.decoder.feed(data)
        if bodies:
            self.handler.frames(self, bodies)
        if not self.persistent and self.decoder.stats.errors:
            stats = self.decoder.stats
            logger.warning(
                "%s: not speaking sig (crc %d, framing %d, oversize %d): closing",
                self.name,
                stats.crc_errors,
                stats.framing_errors,
                stats.oversize,
            )
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._out.clear()
        self.closed.set()
        self.handler.link_down(self, exc)

    def pause_writing(self) -> None:
        if self._loop is not None and self._stall_timer is None:
            self._stall_timer = self._loop.call_later(self.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    # --- sending ----------------------------------------------------------

    def send(self, frame: bytes, droppable: bool = False, urgent: bool = False) -> bool:
        """Queue a frame for the next flush; False if dropped (and counted).

        ``urgent`` frames (requests, responses) are written at once, with
        whatever is queued before them: a round trip then waits for no loop
        turn at any hop. Everything else is coalesced into one write per turn.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            if droppable:
                self.dropped += 1
            return False
        if droppable and self._out_bytes + self._buffered() > self.high_water:
            self.dropped += 1
            return False
        self._out.append(frame)
        self._out_bytes += len(frame)
        if urgent:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        return True

    def write_buffer_size(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        return self._buffered()

    @staticmethod
    def _nothing_buffered() -> int:
        return 0

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self.frames_out += len(out)
        self.bytes_out += len(data)
        out.clear()
        self._out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def flush(self) -> None:
        """Write what is queued now (before a close, for instance)."""
        self._flush()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _stalled(self) -> None:
        self._stall_timer = None
        self.stalled_closes += 1
        logger.warning("%s: peer has not read for %.0f s, closing", self.name, self.stall_timeout)
        self.abort()

    def stats(self) -> dict[str, Any]:
        s = self.decoder.stats
        return {
            "frames_in": s.frames,
            "bytes_in": s.bytes_in,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "crc_errors": s.crc_errors,
            "framing_errors": s.framing_errors,
            "oversize": s.oversize,
            "dropped": self.dropped,
            "queued_bytes": self._out_bytes + self.write_buffer_size(),
        }
