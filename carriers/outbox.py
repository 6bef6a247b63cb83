"""The sending half of a link: framing, one write per loop turn, and bounded output.

:class:`Outbox` is the base of :class:`carriers.stream.StreamLink`; it holds
the send path (the hottest path of the gateway: every event to every link
goes through :meth:`Outbox.send`), so it is a base class rather than an
object the link calls into: no extra call per frame.

"Queued" is everything the kernel has not taken yet: frames of this loop
turn, the backlog kept while the transport is paused, and what the transport
itself buffers. The link sets the transport's limits to 0/0, so the transport
holds at most the rest of one write (about :data:`WRITE_PIECE` bytes) and says
``resume_writing`` only when that is gone; the rest waits in the backlog as
one joined chunk per loop turn, never as one object per frame.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from collections.abc import Callable

from sig.protocol.frame import SharedEncoder, encode_frame

DEFAULT_HIGH_WATER = 1 << 20  #: bytes queued before events to this link are dropped
#: Pending ``latest`` values a link keeps at most (distinct (sender, event) pairs);
#: a new pair beyond it is dropped and counted, like an event over high water.
MAX_LATEST = 4096
#: Bytes handed to the transport in one write when a backlog is drained.
WRITE_PIECE = 64 << 10
#: Frames what every link of this process sends: one EVENT body handed to N
#: links is encoded once (links run on one event loop thread).
_encode = SharedEncoder()


def _nothing_buffered() -> int:
    """The transport's buffer before there is a transport."""
    return 0


class Outbox:
    """Frames bodies, coalesces one loop turn's frames into one write, bounds the queue.

    Droppable frames are dropped (and counted in ``dropped``) while more than
    ``high_water`` bytes are queued; other frames are always queued, and once
    more than ``max_queued`` bytes are, :meth:`_over_cap` is called (the link
    stops reading its peer). Frames that never reach the kernel are counted
    in ``discarded_frames`` / ``discarded_bytes``.
    """

    #: Slots: more than 30 instance attributes would cost every attribute access
    #: CPython's shared-key fast path (send() is on the hot path of every event).
    __slots__ = (
        "_backlog",
        "_backlog_bytes",
        "_backlog_frames",
        "_buffered",
        "_cap",
        "_closing",
        "_flush_scheduled",
        "_inflight",
        "_latest",
        "_latest_bytes",
        "_loop",
        "_on_low",
        "_out",
        "_out_bytes",
        "_pause_at",
        "_write_paused",
        "bytes_out",
        "conflated",
        "discarded_bytes",
        "discarded_frames",
        "dropped",
        "frames_out",
        "high_water",
        "low_water",
        "max_queued",
        "transport",
    )

    def __init__(self, *, high_water: int = DEFAULT_HIGH_WATER, max_queued: int = 0) -> None:
        self.high_water = high_water
        #: Queued bytes below which held ``latest`` values go out and blocked senders resume.
        self.low_water = high_water // 2
        #: Cap on all queued bytes (0: none, as on a client's own link).
        self.max_queued = max_queued
        self._cap = max_queued or sys.maxsize
        #: Queued bytes above which a send pauses reading (no limit while paused).
        self._pause_at = self._cap
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffered: Callable[[], int] = _nothing_buffered
        self._closing = False  # close() asked for: drain, then close the transport
        self._out: list[bytes] = []  # frames of this loop turn
        self._out_bytes = 0
        self._backlog: collections.deque[tuple[bytes, int]] = collections.deque()
        self._backlog_bytes = 0
        self._backlog_frames = 0
        self._inflight = b""  # the last write, while the transport holds part of it
        self._write_paused = False
        self._flush_scheduled = False
        self.frames_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self.discarded_frames = 0
        self.discarded_bytes = 0
        #: Pending ``latest`` values by (sender, event), newest last; None: none held.
        self._latest: dict[object, bytes] | None = None
        self._latest_bytes = 0
        #: ``latest`` values replaced by a newer one before they were sent.
        self.conflated = 0
        #: Called once when the queue is back under ``low_water`` (see :meth:`when_low`).
        self._on_low: Callable[[], None] | None = None

    # --- what the link does when the queue crosses its marks ---------------

    def _over_cap(self) -> None:
        """More than ``max_queued`` bytes are queued (the link stops reading)."""
        raise NotImplementedError

    def _flushed(self) -> None:
        """A flush went out (the link may resume reading)."""
        raise NotImplementedError

    # --- sending -----------------------------------------------------------

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        """Frame ``body`` and queue it for the next flush; False if not queued.

        A droppable frame that is not queued is counted in ``dropped``.
        ``urgent`` frames (requests, responses) are written at once, with
        whatever is queued before them: a round trip then waits for no loop
        turn at any hop. Everything else is coalesced into one write per turn.
        """
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            self.dropped += droppable
            return False
        queued = self._out_bytes + self._backlog_bytes + self._buffered()
        if droppable and queued > self.high_water:
            self.dropped += 1
            return False
        shared = _encode  # its hit test inlined: N links framing one EVENT body make no call
        if body is not shared.body:
            shared.body, shared.frame = body, encode_frame(body)
        frame = shared.frame
        size = len(frame)
        self._out.append(frame)
        self._out_bytes += size
        if urgent and not self._write_paused:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]  # set with transport
        if queued + size > self._pause_at:
            self._over_cap()
        return True

    def queued_bytes(self) -> int:
        """Bytes queued for the peer that the kernel has not taken yet."""
        return self._out_bytes + self._backlog_bytes + self._buffered()

    def write_buffer_size(self) -> int:
        """Bytes the link holds that the kernel has not taken yet (senders pace on it)."""
        return self.queued_bytes()

    # --- delivery policies (sig.core.delivery decides, the link keeps) -----

    def send_latest(self, key: object, body: bytes) -> bool:
        """Send ``body`` now, or hold it as the newest value of ``key`` while above high water.

        Once anything is held, every ``latest`` value waits behind it, so the
        values of one sender leave in the order they were triggered, minus the
        replaced ones. A replaced value is counted in ``conflated``; a new
        key beyond :data:`MAX_LATEST`, or beyond ``low_water`` held bytes (so
        that releasing them stays under ``high_water``), is dropped and
        counted in ``dropped``. Held values go out once the queue
        is under ``low_water`` (:meth:`_low`).
        """
        latest = self._latest
        if latest is None:
            if self.queued_bytes() <= self.high_water:
                return self.send(body, droppable=True)
            latest = self._latest = {}
        old = latest.pop(key, None)
        if old is not None:
            self.conflated += 1
            self._latest_bytes -= len(old)
        elif len(latest) >= MAX_LATEST or self._latest_bytes + len(body) > self.low_water:
            self.dropped += 1
            return False
        latest[key] = body
        self._latest_bytes += len(body)
        return True

    def send_held(self, body: bytes) -> bool:
        """Queue an event of a ``block`` listener whose sender is being paused.

        Above ``high_water`` it is still queued (the sender stops after it),
        up to ``max_queued``: past that it is dropped and counted, so a burst
        of many senders cannot grow the queue without bound (nor make the
        link stop reading its own peer, as a reply over the cap would).
        """
        frame_max = len(body) + len(body) // 254 + 8  # COBS, CRC and delimiter at most
        if self.queued_bytes() + frame_max > self._cap or not self.send(body):
            self.dropped += 1  # over the cap (which would stop reading the listener), or closed
            return False
        return True

    def over_high_water(self) -> bool:
        """True while more than ``high_water`` bytes wait for the peer."""
        return self._out_bytes + self._backlog_bytes + self._buffered() > self.high_water

    def when_low(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the queue is next under ``low_water``.

        One callback per link (a second replaces the first): its owner (the
        gateway's flow control) keeps its own list of what waits.
        """
        self._on_low = callback

    def _low(self) -> None:
        """After a write: release held ``latest`` values and blocked senders when low enough."""
        if self.queued_bytes() > self.low_water:
            return
        latest = self._latest
        if latest is not None:
            self._latest = None
            self._latest_bytes = 0
            for body in latest.values():  # at most low_water bytes: under high_water
                self.send(body)
        callback = self._on_low
        if callback is not None:
            self._on_low = None
            callback()

    def flush(self) -> None:
        """Write what is queued now (before a close, for instance)."""
        self._flush()

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
        self._flushed()

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
                data, n = self._join_backlog(data, n)
            self._backlog_bytes -= len(data)
            self._backlog_frames -= n
            self._write(data, n)

    def _join_backlog(self, data: bytes, n: int) -> tuple[bytes, int]:
        """``data`` and the backlog entries after it, up to WRITE_PIECE bytes, as one."""
        backlog = self._backlog
        parts = [data]
        size = len(data)
        while backlog and size + len(backlog[0][0]) <= WRITE_PIECE:
            more, k = backlog.popleft()
            parts.append(more)
            size += len(more)
            n += k
        return b"".join(parts), n

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

    def _discard_queued(self) -> None:
        """Count (and forget) every frame queued and not fully taken by the kernel."""
        frames = len(self._out) + self._backlog_frames
        size = self._out_bytes + self._backlog_bytes
        if self._latest:
            frames += len(self._latest)
            size += self._latest_bytes
            self._latest = None
            self._latest_bytes = 0
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
