"""The gateway core: sessions + routing table + request correlation (sans-I/O).

Carriers hand it frame bodies (:meth:`GatewayCore.receive`) and tell it when
links come and go; it answers by calling ``link.send(body)``. Time enters only
through the ``clock`` it is given and :meth:`GatewayCore.poll`, which the
asyncio layer calls periodically for keepalive, link and request timeouts.
In-process senders and listeners (the demo timer, ``sig serve`` plugins) use
the same table as remote ones, through :attr:`GatewayCore.endpoints`.

The core is this module's dispatch (one handler per message type), routing
and timers, and four parts of its own, each in its module:
:class:`~sig.core.registrations.Registrations` (what peers register),
:class:`~sig.core.requests.Requests` (request correlation, deadlines, fair
shares), :class:`~sig.core.reservations.Reservations` (serial devices' sender
names) and :class:`~sig.core.service.GatewayService` (``$gateway``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sig.core.access import Access
from sig.core.auth import Authenticator
from sig.core.endpoints import Endpoints, Listener, Sender, deliver
from sig.core.limits import Limits, peer_limit
from sig.core.registrations import (
    DEFAULT_SERIAL_KEEPALIVE_MS,
    KEEPALIVE_MAX_MS,
    KEEPALIVE_MIN_MS,
    LINK_TIMEOUT_KEEPALIVES,
    SERIAL_NAME_GRACE_TIMEOUTS,
    Registrations,
)
from sig.core.requests import Done, Pending, RequestObserver, Requests, fit_text
from sig.core.reservations import Reservation, Reservations
from sig.core.routing import RoutingTable, SenderInfo
from sig.core.service import GatewayService, LinkReporter
from sig.core.session import Input, Link, Session, State
from sig.core.timers import Timers
from sig.errors import DecodeError, ErrorCode, RemoteProtocolError
from sig.protocol import messages as w
from sig.protocol.constants import GATEWAY_SENDER
from sig.protocol.data import pack, unpack
from sig.protocol.frame import DEFAULT_MAX_BODY, MAX_BODY_LIMIT
from sig.protocol.messages import split_trigger

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HELLO_TIMEOUT",
    "DEFAULT_SERIAL_KEEPALIVE_MS",
    "DEFAULT_TCP_KEEPALIVE_MS",
    "GATEWAY_SENDER",
    "KEEPALIVE_MAX_MS",
    "KEEPALIVE_MIN_MS",
    "LINK_TIMEOUT_KEEPALIVES",
    "SERIAL_NAME_GRACE_TIMEOUTS",
    "Done",
    "GatewayCore",
    "Limits",
    "Pending",
    "RequestObserver",
    "Reservation",
]

#: ERROR bytes before its message at most: type, code (5), about, ref (5), text length (3).
ERROR_OVERHEAD = 15
#: Protocol errors tolerated on a TCP link before it is closed.
MAX_PROTOCOL_ERRORS = 32
#: Keepalive given to TCP peers that announce none: idle peers are PINGed, and
#: closed after 3 intervals of silence (no connection is immortal).
DEFAULT_TCP_KEEPALIVE_MS = 10000
#: Seconds a TCP peer has, from connecting, to open its session with HELLO.
DEFAULT_HELLO_TIMEOUT = 10.0
#: Encoded EVENT heads kept (the cache starts again when it is full).
EVENT_HEAD_CACHE = 4096
#: The size route() gives an EVENT too large for any frame: above every peer's max_body.
NO_PEER_TAKES = 1 << 62

Subscriber = Session | Listener
Handler = Callable[[Session, Any], None]


class GatewayCore:
    """Routes frames between links and in-process endpoints."""

    #: Seconds a TCP link may stay without a session before poll() closes it (0: no limit).
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    #: Keepalive for a TCP peer whose HELLO says 0 (0: such sessions never time out).
    tcp_keepalive_ms: int = DEFAULT_TCP_KEEPALIVE_MS

    def __init__(
        self,
        name: str = "sig-gateway",
        *,
        request_timeout: float = 10.0,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
        serial_name_grace: float | None = None,
        sender_class: type[Sender] = Sender,
    ) -> None:
        """``sender_class``: what :attr:`endpoints` builds in-process senders from."""
        self.name = name
        #: Seconds a serial link's sender names stay reserved for it after its
        #: session ends; None: twice that session's link timeout.
        self.serial_name_grace = serial_name_grace
        self.request_timeout = request_timeout
        self.max_body = max_body
        self.clock = clock
        self.limits = limits or Limits()
        self.table: RoutingTable[Subscriber] = RoutingTable(self._announce)
        self.sessions: set[Session] = set()
        self.name_reservations = Reservations(clock)
        self.requests = Requests(self)
        self.registrations = Registrations(self)
        self.timers = Timers(self)
        self.service = GatewayService(self, GATEWAY_SENDER)
        #: In-process senders and listeners (ServerRouter's add_sender/add_listener).
        self.endpoints = Endpoints(
            self.table,
            self._emit_local,
            check=self.registrations.check_sender_name,
            sender_class=sender_class,
            where="gateway",
        )
        self._event_heads = EventHeads()
        #: Called once per finished request with (status, seconds); None: no cost.
        self.request_observer: RequestObserver | None = None
        self.counters = dict.fromkeys(_COUNTERS, 0)
        #: ACLs, owned names, serial ports' principals (sig.core.access).
        self.access = Access(self.table, self.counters)
        #: Figures that are not counts (the asyncio layer's loop lag), shown in stats.
        self.gauges: dict[str, float] = {}
        #: Who a HELLO makes a session (users, slowdown): :mod:`sig.core.auth`.
        self.auth = Authenticator(self.registrations.open_session, self._send, self.counters, clock)
        self.auth.link_principal = self.access.link_principal  # a port's device principal
        self._any_state, self._open_only = _dispatch(self)

    # --- links ------------------------------------------------------------

    def attach(self, link: Link) -> Session:
        """A link came up (connection accepted, port opened)."""
        now = self.clock()
        session = Session(link, last_rx=now, last_tx=now, attached_at=now)
        self.sessions.add(session)
        if link.persistent:
            self._send(session, w.Invite())
        logger.debug("link %s attached", link.name)
        return session

    def detach(self, session: Session) -> None:
        """The link went away: end its session for good."""
        if session.state is State.CLOSED:
            return
        self.end_session(session, "link closed")
        session.step(Input.LINK_CLOSED)
        self.sessions.discard(session)
        self.auth.forget(session)
        logger.debug("link %s detached", session.link.name)

    def breach(self, session: Session, reason: str) -> None:
        """An unanswerable protocol breach: log once, close the link."""
        if session.state in (State.ERROR, State.CLOSED):
            return
        logger.warning("closing %s: %s", session.link.name, reason)
        self.end_session(session, reason)
        session.step(Input.BREACH)
        session.link.close()

    def end_session(self, session: Session, reason: str) -> None:
        """Remove everything the session registered; fail what waits on it (the link stays)."""
        self.registrations.end(session, reason)

    # --- receiving --------------------------------------------------------

    def receive(self, session: Session, body: bytes) -> None:
        """Handle one frame body from ``session``'s link."""
        if session.state in (State.ERROR, State.CLOSED):
            return  # the rest of a read that ended in a breach: the link is closing
        session.last_rx = self.clock()
        if session.state is State.OPEN:  # the hot path: a short TRIGGER, in one call
            fast = split_trigger(body)
            if fast is not None:
                pair = session.events.get(fast[0])
                if pair is not None:
                    session.triggers += 1
                    self.route(pair[0], pair[1], fast[1])
                    return
        session.about = body[0] & w.TYPE_MASK if body else 0  # what an ERROR answers
        try:
            msg = w.decode(body)
        except RemoteProtocolError as exc:
            self._undecodable(session, body, exc)
            return
        handler = self._any_state.get(type(msg))
        if handler is None:
            if session.state is not State.OPEN:
                self._before_hello(session, msg)
                return
            handler = self._open_only.get(type(msg))
        if handler is None:
            self._protocol_error(
                session,
                ErrorCode.UNKNOWN_TYPE,
                body[0],
                f"{type(msg).__name__} is not sent to a gateway",
            )
            return
        handler(session, msg)

    def _undecodable(self, session: Session, body: bytes, exc: RemoteProtocolError) -> None:
        """A body the codec refused: the answer of w.error_answer (none to an ERROR)."""
        answer = w.error_answer(body, exc)
        sent = self.requests.undecodable(session, answer)  # a REQUEST's id is matched
        ref = answer.ref if isinstance(answer, w.Error) else getattr(answer, "request_id", 0)
        self._protocol_error(
            session, exc.code, ref, str(exc), answer=answer is not None and not sent
        )

    def _before_hello(self, session: Session, msg: w.Message) -> None:
        self._protocol_error(session, ErrorCode.NO_SESSION, 0, f"{type(msg).__name__} before HELLO")
        self._send(session, w.Invite())

    def _on_ping(self, session: Session, msg: w.Ping) -> None:
        self._send(session, w.Pong(msg.token))

    def _on_trigger_msg(self, session: Session, msg: w.Trigger) -> None:
        self._on_trigger(session, msg.event_ref, msg.data)

    def _on_trigger(self, session: Session, ref: int, data: bytes) -> None:
        pair = session.events.get(ref)
        if pair is None:
            self._protocol_error(
                session,
                ErrorCode.UNKNOWN_REF,
                ref,
                f"TRIGGER for event_ref {ref}, never registered on this link",
            )
            return
        session.triggers += 1
        self.route(pair[0], pair[1], data)

    # --- routing ----------------------------------------------------------

    def route(self, sender: str, event: str, data: bytes) -> None:
        """Deliver one event (data as raw CBOR) to everyone whose listener matches.

        Links first, each given the same EVENT body; then the in-process
        listeners, with the data decoded once for all of them.
        """
        self.counters["triggers"] += 1
        subs = self.access.match(sender, event)  # the table's match when no ACL is set
        if not subs:
            return
        body: bytes | None = None
        size = delivered = dropped = too_large = 0
        local: list[Any] | None = None  # the in-process Listeners, if any
        for sub in subs:
            if type(sub) is not Session:
                if local is None:
                    local = []
                local.append(sub)
                continue
            if body is None:  # one body for all links (framed once): head + data as it came
                body = self._event_heads[sender, event] + data
                size = len(body)
                if size > MAX_BODY_LIMIT:
                    size = NO_PEER_TAKES  # fits no frame: every link counts a drop
            if size > sub.peer_max_body:  # over its max_body (or over 65535: no link's)
                sub.dropped_too_large += 1
                too_large += 1
            elif sub.link.send(body, droppable=True):
                sub.events_out += 1
                delivered += 1
            else:  # counted by the link (Session.dropped_events adds it up)
                dropped += 1
        self.counters["events_out"] += delivered
        if dropped + too_large:
            _count_drops(self.counters, sender, event, dropped, too_large, len(body or b""))
        if local is not None:
            _deliver_local(self.counters, sender, event, data, local)

    def _announce(self, info: SenderInfo, event: str) -> None:
        """Fire ``#connect`` / ``#disconnect`` (the table calls it only if someone listens)."""
        self.route(info.name, event, pack(info.presence()))

    def _emit_local(self, sender: str, event: str, data: Any) -> None:
        """An in-process sender triggered ``event``."""
        self.route(sender, event, pack(data))

    # --- requests (Requests) ----------------------------------------------

    def start_request(
        self,
        sender: str,
        method: str,
        params: bytes,
        done: Done,
        *,
        requester: Session | None = None,
        timeout: float | None = None,
    ) -> None:
        """Route a request; ``done(status, message, result)`` is called exactly once."""
        self.requests.start(sender, method, params, done, requester=requester, timeout=timeout)

    # --- $gateway, links and figures (GatewayService) -----------------------

    def stats(self) -> dict[str, float]:
        """The gateway's counters and sizes (``$gateway stats``)."""
        return self.service.stats()

    def links(self) -> list[dict[str, Any]]:
        """One row per link: every session, then what the link reporters add."""
        return self.service.links()

    def link_info(self, session: Session) -> dict[str, Any]:
        """The ``$gateway links`` row of one session."""
        return self.service.link_info(session)

    def add_link_reporter(self, report: LinkReporter) -> None:
        """Have ``report()`` add rows to ``$gateway links`` (a serial port without a session)."""
        self.service.link_reporters.append(report)

    @property
    def link_reporters(self) -> list[LinkReporter]:
        """The link reporters (prefer :meth:`add_link_reporter`)."""
        return self.service.link_reporters

    @property
    def reserved(self) -> dict[str, Reservation]:
        """Reserved sender name -> the serial link it is kept for."""
        return self.name_reservations.held

    def reservations(self, link: str) -> dict[str, float]:
        """Sender names reserved for the link named ``link``: seconds left for each."""
        return self.name_reservations.for_link(link)

    # --- timers (Timers) ----------------------------------------------------

    def poll(self) -> None:
        """Expire requests, ping idle links, end silent sessions. Call often (~0.1 s)."""
        self.timers.poll()
        self.auth.poll(self.clock())

    # --- helpers ----------------------------------------------------------

    def _send(self, session: Session, msg: w.Message, *, urgent: bool = False) -> None:
        body = w.encode(msg)
        if isinstance(msg, w.Error) and len(body) > peer_limit(session):
            # An ERROR is worth sending short rather than not at all.
            short = fit_text(msg.message, peer_limit(session) - ERROR_OVERHEAD)
            body = w.encode(w.Error(msg.code, msg.ref, short, msg.about))
        self._send_body(session, body, urgent=urgent)

    def _send_body(self, session: Session, body: bytes, *, urgent: bool = False) -> None:
        session.last_tx = self.clock()
        session.link.send(body, urgent=urgent)

    def _protocol_error(
        self, session: Session, code: int, ref: int, message: str, *, answer: bool = True
    ) -> None:
        """Count, log (once per code) and answer ERROR(code, about the message handled, ref)."""
        refusal = code in _REFUSALS  # an answer to a legitimate registration, not a breach
        if not refusal:
            session.protocol_errors += 1
        if code not in session.logged_codes:  # once per kind per link: noise must not flood
            session.logged_codes.add(code)
            logger.warning("%s (%s): %s", session.link.name, ErrorCode(code).name, message)
        if answer:
            self._send(session, w.Error(code, ref, message[:200], session.about))
        if refusal or session.link.persistent:
            return
        if session.protocol_errors > MAX_PROTOCOL_ERRORS:
            self.breach(session, f"more than {MAX_PROTOCOL_ERRORS} protocol errors")


class EventHeads(dict[tuple[str, str], bytes]):
    """Encoded EVENT heads (type and both names) by (sender, event), made on first use.

    A hit is a plain dict lookup; the cache starts again when it holds
    :data:`EVENT_HEAD_CACHE` heads, so peers cannot make it grow without bound.
    """

    def __missing__(self, key: tuple[str, str]) -> bytes:
        if len(self) >= EVENT_HEAD_CACHE:
            self.clear()
        head = self[key] = w.event_head(*key)
        return head


def _count_drops(
    counters: dict[str, int], sender: str, event: str, dropped: int, too_large: int, size: int
) -> None:
    """Count the events not delivered (slow consumers, too large) and log the too large."""
    counters["dropped_events"] += dropped + too_large
    if too_large:
        counters["dropped_too_large"] += too_large
        logger.debug("%s:%s of %d bytes too large for %d links", sender, event, size, too_large)


def _deliver_local(
    counters: dict[str, int], sender: str, event: str, data: bytes, local: list[Listener]
) -> None:
    """Call the in-process listeners of one event (its CBOR decoded once)."""
    try:
        value = unpack(data)
    except DecodeError as exc:
        counters["bad_data"] += 1
        logger.warning("dropping %s:%s for local listeners: %s", sender, event, exc)
        return
    failures = deliver(local, sender, event, value)
    if failures:
        counters["listener_errors"] += failures


def _dispatch(core: GatewayCore) -> tuple[dict[type[Any], Handler], dict[type[Any], Handler]]:
    """The handlers of the message types a gateway takes: in any state, and once OPEN."""
    regs, requests = core.registrations, core.requests
    any_state: dict[type[Any], Handler] = {
        w.Hello: regs.on_hello,
        w.Ping: core._on_ping,
        w.Pong: _ignore,
        w.Ack: _ignore_ack,
    }
    open_only: dict[type[Any], Handler] = {
        w.Trigger: core._on_trigger_msg,
        w.Request: requests.on_request,
        w.Response: requests.response,
        w.RegisterSender: regs.on_register,
        w.UnregisterSender: regs.on_unregister,
        w.Listen: regs.on_listen,
        w.Unlisten: regs.on_unlisten,
        w.Error: _log_error,
    }
    return any_state, open_only


def _ignore(session: Session, msg: w.Message) -> None:
    """PONG: its arrival (last_rx) is all it says."""


def _ignore_ack(session: Session, msg: w.Ack) -> None:
    """ACK on a link without the reliable mode (TCP; a port with it off): ignored, counted."""
    session.bad_acks += 1


def _log_error(session: Session, msg: w.Error) -> None:
    """An ERROR from a peer: logged, never answered (an answer could loop)."""
    logger.info(
        "%s reports error %s (ref %s): %s", session.link.name, msg.code, msg.ref, msg.message
    )


_COUNTERS = (
    "triggers",
    "events_out",
    "dropped_events",
    "requests",
    "listener_errors",
    "bad_data",
    #: events not delivered to a link because they exceed its max_body (or 65535)
    "dropped_too_large",
    #: responses replaced by TOO_LARGE because they exceed the requester's max_body
    "responses_too_large",
    #: requests refused with BUSY (handler full, or the requester's share used)
    "busy",
    #: registrations refused by a per-link limit or an oversized announcement
    "refused_registrations",
    #: RESPONSEs that answer no request pending (late, or never asked): ignored
    "unsolicited_responses",
)

#: Errors that refuse a well-formed registration; they never count toward a breach.
_REFUSALS = frozenset(
    {
        ErrorCode.DUPLICATE_SENDER,
        ErrorCode.INVALID_NAME,
        ErrorCode.LIMIT_REACHED,
        ErrorCode.NOT_AUTHORISED,
        ErrorCode.TOO_LARGE,
    }
)
