"""The reliable UART mode's state machine (PROTOCOL.md section 5), sans-I/O.

:class:`ReliableSession` is one side of one reliable session: it numbers what
it sends (``next_seq``), keeps up to ``window`` unacknowledged frames for
retransmission, queues what does not fit (bounded), and accepts what it
receives in order only (``expected``: go-back-N, no receive buffer),
answering every sequenced frame with a cumulative ACK. Time enters only
through ``now`` arguments and :meth:`ReliableSession.poll`, like the gateway
core's timers; the unit of time is the caller's (the gateway uses seconds,
the tests and the vectors milliseconds). It writes through one ``out``
callable and counts into a dict the caller keeps (so that counters survive
sessions). The gateway (:class:`ReliableLink`, below) and ``sig device-sim``
both use it.

:class:`ReliableLink` is a serial port's link as the gateway core sees it when
the port allows the reliable mode: it sits between the core and the carrier
(above signing: sequence first, then the signature), so the core never sees a
sequence header or an ACK and TCP links never pay for the mode. On a HELLO
asking for the feature it lowers the announced ``max_body`` by 5 (the seq
varint's maximum), adds the feature bit to the core's WELCOME and opens a
reliable session; it sends the types of
:data:`~sig.protocol.reliable.ALWAYS_SEQUENCED` sequenced and everything else
as it came.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sig.core.session import State
from sig.errors import RemoteProtocolError
from sig.protocol import messages as w
from sig.protocol.constants import FLAG_SEQ, TYPE_MASK
from sig.protocol.reliable import ALWAYS_SEQUENCED, MAX_SEQ, MAX_SEQ_LEN, add_seq, strip_seq

logger = logging.getLogger(__name__)

__all__ = [
    "COUNTERS",
    "DEFAULT_QUEUE",
    "DEFAULT_RTO",
    "DEFAULT_WINDOW",
    "MAX_RETRIES",
    "MAX_RTO_FACTOR",
    "ReliableLink",
    "ReliablePort",
    "ReliableSession",
]

#: Unacknowledged frames the gateway keeps per link.
DEFAULT_WINDOW = 8
#: Initial retransmission timeout, seconds (a port's ``retransmit_ms``).
DEFAULT_RTO = 0.2
#: The RTO doubles on each timeout, up to this many times the initial one.
MAX_RTO_FACTOR = 8
#: Timeouts without progress after which the sender ends the session.
MAX_RETRIES = 16
#: Sequenced messages queued per link while the window is full.
DEFAULT_QUEUE = 64
#: The per-link counters (PROTOCOL.md section 5, "Counters").
COUNTERS = (
    "retransmits",
    "duplicates",
    "out_of_order",
    "bad_acks",
    "reliable_failures",
    "reliable_dropped",
)

_ACK = w.MessageType.ACK


@dataclass(slots=True)
class _Kept:
    """One sent, unacknowledged frame: its seq and its sequenced body."""

    seq: int
    body: bytes


@dataclass(slots=True)
class ReliableSession:
    """One side of one reliable session (window, ACKs, retransmission, counters).

    ``out(body)`` writes one body (sequenced, or an ACK) to the lower layer.
    ``counts`` is a dict with the :data:`COUNTERS` keys, kept by the caller.
    """

    out: Callable[[bytes], None]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    window: int = DEFAULT_WINDOW
    rto_initial: float = DEFAULT_RTO
    max_retries: int = MAX_RETRIES
    queue_limit: int = DEFAULT_QUEUE
    fast_retransmit: bool = True
    #: Receiver: the seq the next accepted frame must carry.
    expected: int = 1
    #: Sender: the seq of the next frame that enters the window.
    next_seq: int = 1
    kept: deque[_Kept] = field(default_factory=deque)
    #: Plain bodies waiting for room in the window (at most ``queue_limit``).
    queue: deque[bytes] = field(default_factory=deque)
    rto: float = 0.0
    retries: int = 0
    #: When the retransmission timer fires (None: nothing kept).
    deadline: float | None = None
    #: The oldest kept seq when the last fast retransmit went out (once per loss).
    fast_seq: int = 0
    #: True once the session must end (max retries, or seq used up).
    failed: bool = False

    def __post_init__(self) -> None:
        self.rto = self.rto_initial
        for key in COUNTERS:
            self.counts.setdefault(key, 0)

    # --- sending ------------------------------------------------------------

    def send(self, body: bytes, now: float) -> bool:
        """Send the plain ``body`` sequenced, now or once the window has room.

        False when the window and the queue are both full: nothing was done,
        the caller refuses or drops it (and counts it).
        """
        if len(self.kept) < self.window and not self.queue:
            self._transmit(body, now)
            return True
        if len(self.queue) >= self.queue_limit:
            return False
        self.queue.append(body)
        return True

    def _transmit(self, body: bytes, now: float) -> None:
        """Give ``body`` the next seq, keep it, write it; start the timer if it was idle."""
        if self.next_seq > MAX_SEQ:
            self.failed = True  # the side whose seq would pass 2^32-1 ends the session
            return
        seq = self.next_seq
        self.next_seq += 1
        seqd = add_seq(body, seq)
        if not self.kept:
            self.deadline = now + self.rto
        self.kept.append(_Kept(seq, seqd))
        self.out(seqd)

    def _fill(self, now: float) -> None:
        """Move queued bodies into the window while it has room."""
        while self.queue and len(self.kept) < self.window and not self.failed:
            self._transmit(self.queue.popleft(), now)

    def _resend(self) -> None:
        """Write every kept frame again, in seq order, with the same seq."""
        for kept in self.kept:
            self.out(kept.body)
        self.counts["retransmits"] += len(self.kept)

    # --- receiving ----------------------------------------------------------

    def receive(self, body: bytes, now: float) -> bytes | None:
        """The plain body to hand to the message layer, or None when this layer
        consumed it (an ACK, a duplicate, a gap). Unsequenced bodies pass as
        they are. Raises RemoteProtocolError for a bad sequence header or ACK."""
        header = body[0] if body else 0
        if header == _ACK:
            msg = w.decode(body)
            assert isinstance(msg, w.Ack)
            self.on_ack(msg.seq, now)
            return None
        seq, plain = strip_seq(body)
        if seq == 0:
            return body
        expected = self.expected
        if seq == expected:
            self.expected = expected + 1
            self.out(w.encode(w.Ack(seq)))
            return plain
        self.counts["duplicates" if seq < expected else "out_of_order"] += 1
        self.out(w.encode(w.Ack(expected - 1)))
        return None

    def on_ack(self, acked: int, now: float) -> None:
        """ACK(acked): forget what it covers; on no progress, maybe a fast retransmit.

        An ACK that acknowledges nothing while frames are kept means the
        receiver saw a later frame and not the oldest kept one: it is resent
        at once (with those after it), once per oldest kept seq, so that the
        duplicate ACKs of the rest of a window do not resend it again (a lost
        retransmission is the timer's).
        """
        if acked >= self.next_seq:
            self.counts["bad_acks"] += 1  # a seq never sent
            return
        kept = self.kept
        progress = False
        while kept and kept[0].seq <= acked:
            kept.popleft()
            progress = True
        if progress:
            self.retries = 0
            self.rto = self.rto_initial
            self.deadline = now + self.rto if kept else None
            self._fill(now)
        elif kept and self.fast_retransmit and kept[0].seq != self.fast_seq:
            self.fast_seq = kept[0].seq
            self._resend()

    # --- time ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do (None: nothing kept)."""
        return self.deadline

    def poll(self, now: float) -> bool:
        """Retransmit when the timer is due. True when the session must end:
        16 retransmissions without progress (counted ``reliable_failures``)."""
        if self.failed:
            return True
        deadline = self.deadline
        if deadline is None or now < deadline:
            return False
        if self.retries >= self.max_retries:
            self.failed = True
            self.deadline = None
            self.counts["reliable_failures"] += 1
            return True
        self._resend()
        self.rto = min(2 * self.rto, MAX_RTO_FACTOR * self.rto_initial)
        self.retries += 1
        self.deadline = now + self.rto
        return False


class ReliablePort:
    """A serial port's reliable-mode settings and counters (kept across openings)."""

    def __init__(
        self,
        name: str = "",
        *,
        enabled: bool = True,
        rto: float = DEFAULT_RTO,
        window: int = DEFAULT_WINDOW,
        queue_limit: int = DEFAULT_QUEUE,
    ) -> None:
        self.name = name
        self.enabled = enabled
        self.rto = rto
        self.window = window
        self.queue_limit = queue_limit
        self.counts = dict.fromkeys(COUNTERS, 0)
        #: The open reliable session's state (None: none open).
        self.session: ReliableSession | None = None

    def stats(self) -> dict[str, Any]:
        """What a ``$gateway links`` row of this port adds."""
        return {"reliable": self.session is not None, **self.counts}


class ReliableLink:
    """A carrier link as the core sees it on a port with the reliable mode.

    Everything but :meth:`send`, :meth:`receive`, :meth:`poll`,
    :meth:`next_deadline` and :meth:`stats` is the wrapped link's (read and
    written through). ``clock`` is the core's. Two hooks let the asyncio layer
    act where this module cannot: ``wake()`` after anything that may move the
    timer's deadline, and ``refused(body)`` for a REQUEST the full queue
    cannot take (the gateway answers its requester BUSY).
    """

    _own = frozenset({"_link", "port", "clock", "wake", "refused", "_hello_wants"})
    _link: Any
    port: ReliablePort
    clock: Callable[[], float]
    wake: Callable[[], None]
    refused: Callable[[bytes], None]
    _hello_wants: bool

    def __init__(self, link: Any, port: ReliablePort, clock: Callable[[], float]) -> None:
        for name, value in (
            ("_link", link),
            ("port", port),
            ("clock", clock),
            ("wake", _nothing),
            ("refused", _nothing_with),
            ("_hello_wants", False),
        ):
            object.__setattr__(self, name, value)
        port.session = None  # a new opening of the port: the device must HELLO again

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self._link, name, value)

    # --- what the core sends ------------------------------------------------

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        """Sequence what the spec sequences (in a reliable session); the rest as it is."""
        kind = body[0] & TYPE_MASK
        port = self.port
        if kind == w.MessageType.WELCOME:
            port.session = None  # a new session: both sides start again at seq 1
            if self._hello_wants:
                body = _with_reliable(body)
                port.session = self._new_session()
        session = self._current()
        if session is not None and kind in ALWAYS_SEQUENCED and not body[0] & FLAG_SEQ:
            if not session.send(body, self.clock()):
                port.counts["reliable_dropped"] += 1
                if kind == w.MessageType.REQUEST:
                    self.refused(body)
            self.wake()
            return True
        return bool(self._link.send(body, droppable=droppable, urgent=urgent))

    def _new_session(self) -> ReliableSession:
        port = self.port
        return ReliableSession(
            self._lower_send,
            port.counts,
            window=port.window,
            rto_initial=port.rto,
            queue_limit=port.queue_limit,
        )

    def _lower_send(self, body: bytes) -> None:
        self._link.send(body, urgent=True)

    # --- what the device sends ----------------------------------------------

    def receive(self, body: bytes) -> bytes | None:
        """The plain body for the core, or None (an ACK, a duplicate, a gap: consumed).

        Raises RemoteProtocolError for a bad sequence header (the caller has
        the core answer it, as for any malformed body).
        """
        port = self.port
        if body and body[0] == w.MessageType.HELLO:
            return self._hello(body)
        session = self._current()
        if session is None:
            if body[:1] == bytes((_ACK,)) and len(body) > 1:
                port.counts["bad_acks"] += 1  # ACK without the feature: ignored, counted
                self._touch()
                return None
            return self._sessionless(body)
        now = self.clock()
        try:
            plain = session.receive(body, now)
        finally:
            self.wake()
        if plain is None:
            self._touch()
        return plain

    def _hello(self, body: bytes) -> bytes:
        """A HELLO: does it ask for the mode (and may it)? Then announce 5 bytes less."""
        try:
            msg = w.decode(body)
        except RemoteProtocolError:
            self._hello_wants = False
            return body  # the core answers it as it answers any malformed HELLO
        assert isinstance(msg, w.Hello)
        self._hello_wants = bool(self.port.enabled and msg.features & w.Feature.RELIABLE)
        if not self._hello_wants:
            return body
        return w.encode(dataclasses.replace(msg, max_body=max(8, msg.max_body - MAX_SEQ_LEN)))

    def _sessionless(self, body: bytes) -> bytes:
        """A body while no reliable session is open. A sequenced one of a session the
        gateway does not know (it restarted) goes to the core without its header, so
        that it answers NO_SESSION and INVITE at once, as for any such frame; in an
        open session without the mode, SEQ stays the core's UNSUPPORTED_FEATURE."""
        core_session = self._link.session
        if not body or not body[0] & FLAG_SEQ or core_session.state is State.OPEN:
            return body
        try:
            return strip_seq(body)[1]
        except RemoteProtocolError:
            return body

    def _current(self) -> ReliableSession | None:
        """The open reliable session, forgotten once the core's session has ended
        (a link timeout, a breach): what it kept is of no use to the next one."""
        port = self.port
        if port.session is not None:
            core_session = self._link.session
            if core_session is None or core_session.state is not State.OPEN:
                port.session = None
        return port.session

    def _touch(self) -> None:
        """A valid frame the core does not see still counts for the keepalive."""
        core_session = self._link.session
        if core_session is not None:
            core_session.last_rx = self.clock()

    # --- time ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        session = self._current()
        return session.next_deadline() if session is not None else None

    def poll(self) -> bool:
        """Retransmit when due; True when the session must end (then it is forgotten)."""
        session = self._current()
        if session is None or not session.poll(self.clock()):
            return False
        logger.warning(
            "%s: no ACK after %d retransmissions, the session ends",
            self.port.name,
            session.max_retries,
        )
        self.port.session = None
        return True

    def stats(self) -> dict[str, Any]:
        return {**self._link.stats(), **self.port.stats()}


def _nothing() -> None:
    """The default ``wake`` hook."""


def _nothing_with(body: bytes) -> None:
    """The default ``refused`` hook."""


def _with_reliable(body: bytes) -> bytes:
    """The core's WELCOME with the RELIABLE feature bit agreed."""
    msg = w.decode(body)
    assert isinstance(msg, w.Welcome)
    return w.encode(dataclasses.replace(msg, features=msg.features | w.Feature.RELIABLE))
