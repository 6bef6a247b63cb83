"""A frame link over any asyncio byte-stream transport (TCP socket, serial port, memory pipe).

The link turns received bytes into frame bodies through the sans-I/O decoder,
and frames what it sends (:class:`carriers.outbox.Outbox`: the frames queued
during one event-loop turn go out in one write). It knows nothing of routing:
it hands bodies to a :class:`FrameHandler`, and keeps what that handler's
``link_up`` returned (the session) as :attr:`StreamLink.session`. What a
handler may read and set on it is :class:`carriers.link.Link`.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from typing import TYPE_CHECKING, Any, Generic, Protocol, cast

from sig.protocol.frame import DEFAULT_MAX_BODY, FrameDecoder

from .link import NOT_SIG, STALLED
from .outbox import DEFAULT_HIGH_WATER, WRITE_PIECE, Outbox
from .stall import DEFAULT_STALL_TIMEOUT, StallClock

if TYPE_CHECKING:  # a default (PEP 696): a bare ``StreamLink`` is ``StreamLink[Any]``
    from typing_extensions import TypeVar

    S = TypeVar("S", default=Any)
else:
    from typing import TypeVar

    S = TypeVar("S")

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_STALL_TIMEOUT",
    "FRAMES_PER_TURN",
    "KERNEL_SEND_BUFFER",
    "READ_SIZE",
    "WRITE_PIECE",
    "FrameHandler",
    "StreamLink",
]

logger = logging.getLogger(f"sig.{__name__}")  # under "sig": setup_logger covers it

#: Bytes queued (of any kind) before a gateway link stops reading its peer.
DEFAULT_MAX_QUEUED = DEFAULT_HIGH_WATER + (256 << 10)
#: Bytes one read takes on a link with a cap (asyncio's sockets read 256 KiB):
#: each peer gets a bounded share of every loop turn, and little is held on a pause.
READ_SIZE = 16 << 10
#: Send buffer asked of the kernel for a capped TCP link (Linux doubles it, and
#: stops autotuning it up to tcp_wmem's 4 MiB): a peer that does not read pins
#: this much kernel memory, not megabytes.
KERNEL_SEND_BUFFER = 128 << 10
#: Frames handed to the handler per link and loop turn; the rest wait a turn.
FRAMES_PER_TURN = 1024


def _tune_tcp(sock: socket.socket, max_queued: int) -> None:
    """No Nagle delay; on a capped link, a small kernel send buffer (it counts too)."""
    with contextlib.suppress(OSError):  # a peer that already reset: it closes soon
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if max_queued:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)


def _prepare(transport: asyncio.Transport, max_queued: int, name: str) -> str:
    """Set up a link's new transport; returns the link's name (``tcp:HOST:PORT`` if unnamed).

    TCP: no Nagle, a small send buffer on a capped link. Any transport: pause
    as soon as it keeps anything, resume when it has sent it all (the backlog
    then lives in the link, where it is counted by frame); on a capped link,
    16 KiB reads (CPython's selector transports).
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        _tune_tcp(sock, max_queued)
        if not name:
            peer = transport.get_extra_info("peername")
            name = f"tcp:{peer[0]}:{peer[1]}" if peer else "tcp:?"
    limit_writes(transport)
    if max_queued and isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_SIZE  # type: ignore[attr-defined]  # CPython's selector
    return name


def limit_writes(transport: asyncio.BaseTransport) -> None:
    """Have ``transport`` pause its protocol as soon as it keeps anything (and resume when empty).

    A plain transport pauses when it holds more than the high mark: 0. asyncio's
    TLS layer pauses when it holds *at least* the high mark, so 0 would pause it
    at every write, even an empty buffer: it gets 1 (and 0 to resume).
    """
    tls = transport.get_extra_info("sslcontext") is not None
    cast(asyncio.WriteTransport, transport).set_write_buffer_limits(1 if tls else 0, 0)


def _can_half_close(transport: asyncio.BaseTransport | None) -> bool:
    """Whether ``transport`` stays open for writing after the peer's EOF (what
    ``eof_received`` returns): not over TLS, where asyncio closes it anyway
    (and logs a warning if asked to keep it)."""
    return transport is None or transport.get_extra_info("sslcontext") is None


class FrameHandler(Protocol[S]):
    """Who receives what a link decodes. ``S`` is what it keeps per link (a session)."""

    def link_up(self, link: StreamLink[S]) -> S:
        """The link is connected; return its session (the link keeps it as ``link.session``)."""
        ...

    def frames(self, link: StreamLink[S], bodies: list[bytes]) -> int | None:
        """Handle bodies in order. A handler may stop early once ``link.reading_paused``
        is set, and return how many it handled; the link holds the rest until it
        resumes. None means all of them."""
        ...

    def link_down(self, link: StreamLink[S], exc: BaseException | None) -> None:
        """The link is down (``link.close_reason`` says why, if it knows)."""
        ...


class ReadGate(Outbox):
    """Whether a link reads its peer: paused over its own cap, or held by flow control.

    The base of :class:`StreamLink` (one chain of slotted classes); the
    gateway's flow control (sig/routers/flow.py) holds the links of senders
    that feed a ``block`` listener which is behind.
    """

    __slots__ = ("_capped", "_flow_held", "flow_pauses", "reading_paused")

    def __init__(self, *, high_water: int, max_queued: int) -> None:
        super().__init__(high_water=high_water, max_queued=max_queued)
        #: True while the link does not read its peer: over ``max_queued``, or
        #: held by the gateway's flow control (:meth:`hold_reading`).
        self.reading_paused = False
        self._capped = False  # paused because its own queue is over max_queued
        self._flow_held = False  # paused by hold_reading (a blocked listener it feeds)
        self.flow_pauses = 0

    def _release_held(self) -> None:
        """Go on with held bodies, then read the transport again (the link does it)."""
        raise NotImplementedError

    def hold_reading(self) -> bool:
        """Stop reading the peer for someone else's sake (flow control); False if held already.

        Unlike a pause over ``max_queued``, this starts no stall clock: the
        peer is not stuck, the listener it feeds is, and that one's own stall
        clock closes it if it stays so (then the gateway releases this link).
        """
        if self._flow_held or self.transport is None or self._closing:
            return False
        self._flow_held = True
        self.reading_paused = True
        self.flow_pauses += 1
        self.transport.pause_reading()
        return True

    def release_reading(self) -> None:
        """Read the peer again after :meth:`hold_reading` (unless over its own cap)."""
        if not self._flow_held:
            return
        self._flow_held = False
        if self._capped:
            return
        self.reading_paused = False
        assert self._loop is not None
        self._loop.call_soon(self._release_held)  # not inside the send that released it


class StreamLink(ReadGate, asyncio.Protocol, Generic[S]):
    """asyncio Protocol carrying sig frames in both directions (see :class:`carriers.link.Link`)."""

    __slots__ = (
        "_eof",
        "_held",
        "_resume_at",
        "_resume_scheduled",
        "_session",
        "_stall",
        "_turn_scheduled",
        "close_reason",
        "closed",
        "decoder",
        "handler",
        "name",
        "peer_subject",
        "persistent",
        "read_pauses",
        "stalled_closes",
    )

    def __init__(
        self,
        handler: FrameHandler[S],
        *,
        name: str = "",
        persistent: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        high_water: int = DEFAULT_HIGH_WATER,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        max_queued: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(high_water=high_water, max_queued=max_queued or 0)
        self.handler = handler
        self.name = name
        self.persistent = persistent
        #: The CN of the certificate the peer showed (mutual TLS), else None.
        self.peer_subject: str | None = None
        self._resume_at = high_water if high_water < self._cap else self._cap // 2
        self.decoder = FrameDecoder(max_body)
        self._loop = loop  # None: the running loop, when the transport connects
        self.closed = asyncio.Event()
        self._session: S = cast(S, None)  # what handler.link_up returns
        #: Why the link closed itself, or why its owner closed it ("" = the peer did).
        self.close_reason = ""
        self._eof = False  # the peer half-closed: close once its held bodies are handled
        self._held: list[bytes] = []  # bodies decoded but not handed over yet
        self._turn_scheduled = False
        self._resume_scheduled = False
        self._stall = StallClock(stall_timeout, self._stalled)
        self.stalled_closes = 0
        self.read_pauses = 0

    @property
    def session(self) -> S:
        """What the handler's ``link_up`` returned (None before the link is up)."""
        return self._session

    @property
    def closing(self) -> bool:
        """True once asked to close, or down: the link sends nothing more."""
        transport = self.transport
        return (
            self._closing
            or self.closed.is_set()
            or (transport is not None and transport.is_closing())
        )

    @property
    def stall_timeout(self) -> float:
        """Seconds the link may stay stuck before it is aborted."""
        return self._stall.timeout

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: asyncio's, uvloop's and pyserial-asyncio's transports all write,
        # but not all of them subclass asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._buffered = transport.get_write_buffer_size  # looked up once, asked per event
        self.name = _prepare(transport, self.max_queued, self.name)
        self._session = self.handler.link_up(self)

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
        return _can_half_close(self.transport)  # keep it until close() drained the backlog

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stall.cancel()
        self._discard_queued()  # what our queues still held (a reset, for instance)
        self._held.clear()
        self.closed.set()
        self.handler.link_down(self, exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._stall.stuck(self._loop)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._inflight = b""
        self._drain()
        if not self._write_paused:
            if self._closing:
                self._close_transport()
            self._mark_unstuck()
        if self._latest is not None or self._on_low is not None:
            self._low()
        if self._capped:
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
        self.close_reason = self.close_reason or NOT_SIG
        self.close()
        return True

    def _over_cap(self) -> None:
        """Over ``max_queued``: stop reading the peer until the queue drains."""
        self._capped = True
        self.reading_paused = True
        self._pause_at = sys.maxsize  # no second pause while paused
        self.read_pauses += 1
        if self.transport is not None:
            self.transport.pause_reading()
        self._stall.stuck(self._loop)

    def _flushed(self) -> None:
        if self._latest is not None or self._on_low is not None:
            self._low()
        if self._capped:
            self._maybe_resume_reading()

    def _maybe_resume_reading(self) -> None:
        if not self._resume_scheduled and self.queued_bytes() <= self._resume_at:
            self._resume_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._resume_reading)  # not inside a send/write

    def _resume_reading(self) -> None:
        self._resume_scheduled = False
        transport = self.transport
        if not self._capped or transport is None or self._closing:
            return
        if transport.is_closing() or self.queued_bytes() > self._resume_at:
            return
        self._capped = False
        self.reading_paused = self._flow_held
        self._pause_at = self._cap
        self._mark_unstuck()
        self._release_held()

    # --- closing ----------------------------------------------------------

    def close(self) -> None:
        """Close after everything queued is written (the stall timeout still applies)."""
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return
        self._closing = True
        self._flush()
        if self._write_paused:
            transport.pause_reading()  # nothing more from the peer while we drain
            self._stall.stuck(self._loop)
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        """Close now; count what was still queued as discarded (a link that is down: no-op)."""
        if self.closed.is_set():
            return  # pyserial-asyncio's transport fails on a second abort
        self._discard_queued()
        if self.transport is not None:
            self.transport.abort()

    # --- stalls -----------------------------------------------------------

    def _mark_unstuck(self) -> None:
        """Progress: stop the stall clock, unless still stuck some other way."""
        if not (self._write_paused or self._capped or self._closing):
            self._stall.unstuck()

    def _stalled(self) -> None:
        self.stalled_closes += 1
        self.close_reason = self.close_reason or STALLED
        queued = self.queued_bytes()
        before = self.discarded_frames
        self._discard_queued()
        logger.warning(
            "%s: peer took nothing for %.0f s (%d bytes queued%s): closing, %d frames discarded",
            self.name,
            self.stall_timeout,
            queued,
            ", reading paused" if self._capped else "",
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
            "conflated": self.conflated,
            "flow_pauses": self.flow_pauses,
            "queued_bytes": self.queued_bytes(),
            "reading_paused": self.reading_paused,
            "read_pauses": self.read_pauses,
            "discarded_frames": self.discarded_frames,
            "discarded_bytes": self.discarded_bytes,
        }
