"""A frame link over any asyncio byte-stream transport (TCP socket, serial port).

The link turns received bytes into frame bodies through the sans-I/O decoder,
and coalesces the frames queued during one event-loop turn into one write.
It knows nothing of routing: it hands bodies to a :class:`FrameHandler`.

Output is bounded, whatever its kind:

* frames marked droppable (events) are dropped and counted while more than
  ``high_water`` bytes wait for the peer;
* other frames (requests, responses, control) are always queued, but once more
  than ``max_queued`` bytes wait, the link stops reading (the transport's
  ``pause_reading``): the handler gets no more frames from this peer, so the
  peer cannot make it queue more, and TCP pushes back on the peer. Reading
  resumes once the queue is back under the resume mark (``high_water``, or
  half the cap when ``high_water`` is not below it). Bodies already decoded
  when the cap was crossed are held, in order, and handed over on resume; a
  capped link reads 16 KiB at a time, so that is all that can be held;
* a capped link hands the handler at most :data:`FRAMES_PER_TURN` frames per
  loop turn (and the handler may stop sooner, on its own time budget): the
  rest of a burst waits for the next turn, after the other links;
* a link that stays stuck for ``stall_timeout`` seconds (the transport cannot
  take a byte, or reading stays paused) is aborted; the frames still queued
  for it are counted (``discarded_frames`` / ``discarded_bytes``).

"Queued" is everything the kernel has not taken yet: frames of this loop
turn, the backlog the link keeps while the transport is paused, and what the
transport itself buffers. The transport's limits are set to 0/0, so it holds
at most the rest of one write (about :data:`WRITE_PIECE` bytes) and says
``resume_writing`` only when that is gone; the rest waits in the link's
backlog as one joined chunk per loop turn, never as one object per frame.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol, cast

from sig.protocol.frame import DEFAULT_MAX_BODY, FrameDecoder, SharedEncoder

logger = logging.getLogger(f"sig.{__name__}")  # under "sig": setup_logger covers it

DEFAULT_HIGH_WATER = 1 << 20  #: bytes queued before events to this link are dropped
#: Bytes queued (of any kind) before a gateway link stops reading its peer.
DEFAULT_MAX_QUEUED = DEFAULT_HIGH_WATER + (256 << 10)
DEFAULT_STALL_TIMEOUT = 30.0  #: seconds a link may stay stuck before it is aborted
#: Bytes handed to the transport in one write when a backlog is drained.
WRITE_PIECE = 64 << 10
#: Bytes one read takes on a link with a cap (asyncio's sockets read 256 KiB):
#: each peer gets a bounded share of every loop turn, and little is held on a pause.
READ_SIZE = 16 << 10
#: Send buffer asked of the kernel for a capped TCP link (Linux doubles it, and
#: stops autotuning it up to tcp_wmem's 4 MiB): a peer that does not read pins
#: this much kernel memory, not megabytes.
KERNEL_SEND_BUFFER = 128 << 10
#: Frames handed to the handler per link and loop turn; the rest wait a turn.
FRAMES_PER_TURN = 1024
#: Frames what every link of this process sends: one EVENT body handed to N
#: links is encoded once (links run on one event loop thread).
_encode = SharedEncoder()


class FrameHandler(Protocol):
    """Who receives what a link decodes."""

    def link_up(self, link: StreamLink) -> None: ...

    def frames(self, link: StreamLink, bodies: list[bytes]) -> int | None:
        """Handle bodies in order. A handler may stop early once ``link.reading_paused``
        is set, and return how many it handled; the link holds the rest until it
        resumes. None means all of them."""
        ...

    def link_down(self, link: StreamLink, exc: BaseException | None) -> None: ...


class StreamLink(asyncio.Protocol):
    """asyncio Protocol carrying sig frames in both directions."""

    #: Slots: more than 30 instance attributes would cost every attribute access
    #: CPython's shared-key fast path (send() is on the hot path of every event).
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_backlog_frames",
        "_buffered",
        "_cap",
        "_closing",
        "_eof",
        "_flush_scheduled",
        "_held",
        "_inflight",
        "_loop",
        "_out",
        "_out_bytes",
        "_resume_at",
        "_resume_scheduled",
        "_stall_timer",
        "_stuck_since",
        "_turn_scheduled",
        "_write_paused",
        "bytes_out",
        "close_reason",
        "closed",
        "decoder",
        "discarded_bytes",
        "discarded_frames",
        "dropped",
        "frames_out",
        "handler",
        "high_water",
        "max_queued",
        "name",
        "persistent",
        "read_pauses",
        "reading_paused",
        "session",
        "stall_timeout",
        "stalled_closes",
        "transport",
    )

    def __init__(
        self,
        handler: FrameHandler,
        *,
        name: str = "",
        persistent: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        high_water: int = DEFAULT_HIGH_WATER,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_queued: int | None = None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.persistent = persistent
        self.high_water = high_water
        self.stall_timeout = stall_timeout
        #: Cap on all queued bytes (0: none, as on a client's own link).
        self.max_queued = max_queued or 0
        self._cap = self.max_queued or sys.maxsize
        self._resume_at = high_water if high_water < self._cap else self._cap // 2
        self.decoder = FrameDecoder(max_body)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.session: Any = None  # set by the handler
        #: Why the link closed itself, or why its owner closed it ("" = the peer did).
        self.close_reason = ""
        #: True while the link does not read its peer (over ``max_queued``).
        self.reading_paused = False
        self._out: list[bytes] = []  # frames of this loop turn
        self._out_bytes = 0
        self._backlog: collections.deque[tuple[bytes, int]] = collections.deque()
        self._backlog_bytes = 0
        self._backlog_frames = 0
        self._inflight = b""  # the last write, while the transport holds part of it
        self._write_paused = False
        self._closing = False  # close() asked for: drain, then close the transport
        self._eof = False  # the peer half-closed: close once its held bodies are handled
        self._held: list[bytes] = []  # bodies decoded but not handed over yet
        self._turn_scheduled = False
        self._flush_scheduled = False
        self._resume_scheduled = False
        self._stuck_since: float | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffered: Callable[[], int] = self._nothing_buffered
        self.frames_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self.stalled_closes = 0
        self.read_pauses = 0
        self.discarded_frames = 0
        self.discarded_bytes = 0

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: asyncio's, uvloop's and pyserial-asyncio's transports all write,
        # but not all of them subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffered = transport.get_write_buffer_size  # looked up once, asked per event
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a peer that already reset: it closes soon
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.max_queued:  # what the kernel holds for a peer counts too
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
            if not self.name:
                peer = transport.get_extra_info("peername")
                self.name = f"tcp:{peer[0]}:{peer[1]}" if peer else "tcp:?"
        # Pause as soon as the transport keeps anything, resume when it has sent
        # it all: the backlog then lives here, where it is counted by frame.
        transport.set_write_buffer_limits(0, 0)
        if self.max_queued and isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]  # CPython's selector
        self.handler.link_up(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        bodies = self.decoder.feed(data)
        if not self.max_queued:
            if bodies:
                self.handler.frames(self, bodies)
        elif self._held or self.reading_paused or self._turn_scheduled:
            self._held.extend(bodies)  # a transport that delivered after its pause
        elif bodies:
            self._deliver(bodies)
        self._check_decoder()

    def eof_received(self) -> bool:
        # The peer will send no more: handle what it sent, write what is queued
        # for it, then close (a peer that half-closes still gets its answers).
        self._eof = True
        if not self._held:
            self.close()
        return True  # keep the transport until close() has drained the backlog

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._discard_queued()  # what our queues still held (a reset, for instance)
        self._held.clear()
        self.closed.set()
        self.handler.link_down(self, exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._mark_stuck()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._inflight = b""
        self._drain()
        if not self._write_paused:
            if self._closing:
                self._close_transport()
            self._mark_unstuck()
        if self.reading_paused:
            self._maybe_resume_reading()

    # --- receiving --------------------------------------------------------

    def _deliver(self, bodies: list[bytes]) -> None:
        """Hand over FRAMES_PER_TURN bodies at most; hold the rest for later.

        Later is the next loop turn (other links go first: one peer's burst
        cannot hold the loop), or, when the handler stopped because the queue
        went over the cap, the resume.
        """
        now, rest = bodies[:FRAMES_PER_TURN], bodies[FRAMES_PER_TURN:]
        done = self.handler.frames(self, now)
        if done is not None and done < len(now):
            rest = now[done:] + rest
        if not rest:
            return
        self._held = rest
        if not self.reading_paused and not self._closing:
            self._turn_scheduled = True
            if self.transport is not None:
                self.transport.pause_reading()
            assert self._loop is not None
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        self._release_held()

    def _release_held(self) -> None:
        """Go on with held bodies; read from the transport again once none are left."""
        transport = self.transport
        if self.reading_paused or self._closing or transport is None or transport.is_closing():
            return
        held, self._held = self._held, []
        if held:
            self._deliver(held)
        if self._held or self.reading_paused or self._closing:
            return
        if self._eof:
            self.close()
        else:
            transport.resume_reading()

    def _check_decoder(self) -> bool:
        """Close a TCP peer that does not speak sig; True if the link is closing."""
        if self.persistent or not self.decoder.stats.errors:
            return self._closing
        stats = self.decoder.stats
        logger.warning(
            "%s: not speaking sig (crc %d, framing %d, oversize %d): closing",
            self.name,
            stats.crc_errors,
            stats.framing_errors,
            stats.oversize,
        )
        self.close_reason = self.close_reason or "not_sig"
        self.close()
        return True

    def _pause_reading(self) -> None:
        self.reading_paused = True
        self.read_pauses += 1
        if self.transport is not None:
            self.transport.pause_reading()
        self._mark_stuck()

    def _maybe_resume_reading(self) -> None:
        if not self._resume_scheduled and self.queued_bytes() <= self._resume_at:
            self._resume_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._resume_reading)  # not inside a send/write

    def _resume_reading(self) -> None:
        self._resume_scheduled = False
        transport = self.transport
        if not self.reading_paused or transport is None or self._closing:
            return
        if transport.is_closing() or self.queued_bytes() > self._resume_at:
            return
        self.reading_paused = False
        self._mark_unstuck()
        self._release_held()

    # --- sending ----------------------------------------------------------

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        """Frame ``body`` and queue it for the next flush; False if dropped (and counted).

        ``urgent`` frames (requests, responses) are written at once, with
        whatever is queued before them: a round trip then waits for no loop
        turn at any hop. Everything else is coalesced into one write per turn.
        """
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            if droppable:
                self.dropped += 1
            return False
        queued = self._out_bytes + self._backlog_bytes + self._buffered()
        if droppable and queued > self.high_water:
            self.dropped += 1
            return False
        frame = _encode(body)
        size = len(frame)
        self._out.append(frame)
        self._out_bytes += size
        if urgent and not self._write_paused:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        if queued + size > self._cap and not self.reading_paused:
            self._pause_reading()
        return True

    def queued_bytes(self) -> int:
        """Bytes queued for the peer that the kernel has not taken yet."""
        return self._out_bytes + self._backlog_bytes + self._buffered()

    def write_buffer_size(self) -> int:
        """Bytes the link holds that the kernel has not taken yet (senders pace on it)."""
        return self.queued_bytes()

    @staticmethod
    def _nothing_buffered() -> int:
        return 0

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        n = len(out)
        data = out[0] if n == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        if self._write_paused or self._backlog:
            self._to_backlog(data, n)
        else:
            self._write(data, n)
        if self.reading_paused:
            self._maybe_resume_reading()

    def _to_backlog(self, data: bytes, n: int, front: bool = False) -> None:
        if front:
            self._backlog.appendleft((data, n))
        else:
            self._backlog.append((data, n))
        self._backlog_bytes += len(data)
        self._backlog_frames += n

    def _drain(self) -> None:
        """Write the backlog, about WRITE_PIECE bytes at a time, until the transport pauses."""
        backlog = self._backlog
        while backlog and not self._write_paused:
            data, n = backlog.popleft()
            if len(data) < WRITE_PIECE and backlog:  # many small turns: join them
                parts = [data]
                size = len(data)
                while backlog and size + len(backlog[0][0]) <= WRITE_PIECE:
                    more, k = backlog.popleft()
                    parts.append(more)
                    size += len(more)
                    n += k
                data = b"".join(parts)
            self._backlog_bytes -= len(data)
            self._backlog_frames -= n
            self._write(data, n)

    def _write(self, data: bytes, n: int) -> None:
        """Hand ``n`` frames to the transport; what is left when it pauses goes back first."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.discarded_frames += n
            self.discarded_bytes += len(data)
            return
        while True:
            if len(data) > 2 * WRITE_PIECE:  # cut after a frame's delimiter
                cut = data.index(0, WRITE_PIECE) + 1
                piece, data = data[:cut], data[cut:]
                k = piece.count(0)
            else:
                piece, data, k = data, b"", n
            n -= k
            self.frames_out += k
            self.bytes_out += len(piece)
            transport.write(piece)  # may call pause_writing() right away
            if self._write_paused:
                self._inflight = piece
                if data:
                    self._to_backlog(data, n, front=True)
                return
            if not data:
                return

    def flush(self) -> None:
        """Write what is queued now (before a close, for instance)."""
        self._flush()

    def close(self) -> None:
        """Close after everything queued is written (the stall timeout still applies)."""
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return
        self._closing = True
        self._flush()
        if self._write_paused:
            transport.pause_reading()  # nothing more from the peer while we drain
            self._mark_stuck()
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        """Close now; count what was still queued as discarded."""
        self._discard_queued()
        if self.transport is not None:
            self.transport.abort()

    def _discard_queued(self) -> None:
        """Count (and forget) every frame queued and not fully taken by the kernel."""
        frames = len(self._out) + self._backlog_frames
        size = self._out_bytes + self._backlog_bytes
        residue = self._buffered()
        if residue:
            size += residue
            tail = self._inflight[-residue:] if self._inflight else b""
            frames += tail.count(0) if tail else 1  # every frame ends with its 0x00
        self._out.clear()
        self._out_bytes = 0
        self._backlog.clear()
        self._backlog_bytes = self._backlog_frames = 0
        self._inflight = b""
        self.discarded_frames += frames
        self.discarded_bytes += size

    # --- stalls -----------------------------------------------------------

    def _mark_stuck(self) -> None:
        """The transport cannot take more, or reading paused: start the stall clock."""
        if self._stuck_since is not None or self._loop is None:
            return
        self._stuck_since = self._loop.time()
        if self._stall_timer is None:
            self._stall_timer = self._loop.call_later(self.stall_timeout, self._check_stall)

    def _mark_unstuck(self) -> None:
        """Progress: stop the stall clock (the timer notices when it fires)."""
        if not (self._write_paused or self.reading_paused or self._closing):
            self._stuck_since = None

    def _check_stall(self) -> None:
        self._stall_timer = None
        since = self._stuck_since
        if since is None or self._loop is None:
            return
        left = since + self.stall_timeout - self._loop.time()
        if left > 0:  # unstuck and stuck again since the timer was set
            self._stall_timer = self._loop.call_later(left, self._check_stall)
            return
        self._stalled()

    def _stalled(self) -> None:
        self.stalled_closes += 1
        self.close_reason = self.close_reason or "stalled"
        queued = self.queued_bytes()
        before = self.discarded_frames
        self._discard_queued()
        logger.warning(
            "%s: peer took nothing for %.0f s (%d bytes queued%s): closing, %d frames discarded",
            self.name,
            self.stall_timeout,
            queued,
            ", reading paused" if self.reading_paused else "",
            self.discarded_frames - before,
        )
        if self.transport is not None:
            self.transport.abort()

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
            "queued_bytes": self.queued_bytes(),
            "reading_paused": self.reading_paused,
            "read_pauses": self.read_pauses,
            "discarded_frames": self.discarded_frames,
            "discarded_bytes": self.discarded_bytes,
        }
