"""The gateway core: sessions + routing table + request correlation (sans-I/O).

Carriers hand it frame bodies (:meth:`GatewayCore.receive`) and tell it when
links come and go; it answers by calling ``link.send(frame)``. Time enters only
through the ``clock`` it is given and :meth:`GatewayCore.poll`, which the
asyncio layer calls periodically for keepalive, link and request timeouts.
In-process senders and listeners (the demo timer, ``sig serve`` plugins) use
the same table as remote ones.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sig.core.endpoints import Listener, RequestHandler, resolve_handler
from sig.core.routing import DISCONNECT, RESERVED_PREFIX, RoutingTable, SenderInfo, check_name
from sig.core.session import Input, Link, Session, State
from sig.errors import (
    DecodeError,
    DuplicateSenderError,
    ErrorCode,
    InvalidNameError,
    RemoteProtocolError,
    RequestError,
    RequestTooLarge,
    SigError,
)
from sig.protocol import messages as w
from sig.protocol.constants import GATEWAY_SENDER
from sig.protocol.data import pack, unpack
from sig.protocol.frame import DEFAULT_MAX_BODY, MAX_BODY_LIMIT

logger = logging.getLogger(__name__)

#: Requests pending on one handler link at most (then BUSY). One requester may
#: hold a fair share of them: max_pending / (requesters with pending ones + 1).
MAX_PENDING_PER_LINK = 64
#: Registrations one link may hold (then ERROR(LIMIT_REACHED)).
MAX_SENDERS_PER_LINK = 256
MAX_LISTENERS_PER_LINK = 4096
MAX_EVENTS_PER_SENDER = 256
#: RESPONSE bytes before its data at most: type, request_id (5), status, empty message.
RESPONSE_OVERHEAD = 8
#: ERROR bytes before its message at most: type, code (5), ref (5), text length (3).
ERROR_OVERHEAD = 14
#: Bytes of a ``$gateway`` page around its items at most (map, keys, next, total).
PAGE_OVERHEAD = 40
#: Items per ``$gateway`` page when the request names no limit.
DEFAULT_PAGE_LIMIT = 100
#: Protocol errors tolerated on a TCP link before it is closed.
MAX_PROTOCOL_ERRORS = 32
#: Keepalive the gateway asks of UART devices that announce none.
DEFAULT_SERIAL_KEEPALIVE_MS = 2000
#: Keepalive given to TCP peers that announce none: idle peers are PINGed, and
#: closed after 3 intervals of silence (no connection is immortal).
DEFAULT_TCP_KEEPALIVE_MS = 10000
#: Seconds a TCP peer has, from connecting, to open its session with HELLO.
DEFAULT_HELLO_TIMEOUT = 10.0
KEEPALIVE_MIN_MS, KEEPALIVE_MAX_MS = 500, 60000
#: Encoded EVENT heads kept (the cache starts again when it is full).
EVENT_HEAD_CACHE = 4096
#: A session ends after this many keepalive intervals without a valid frame.
LINK_TIMEOUT_KEEPALIVES = 3
#: Sender names of a serial link stay reserved for it this many link timeouts
#: after its session ends, unless ``serial_name_grace`` says otherwise.
SERIAL_NAME_GRACE_TIMEOUTS = 2

Subscriber = Session | Listener
Done = Callable[[int, str, bytes], None]  # (status, message, data)
#: Told of every finished request: ``observer(status, seconds)`` (the HTTP side's metrics).
RequestObserver = Callable[[int, float], None]


@dataclass(eq=False)
class Pending:
    """A request on its way to a handler."""

    id: int
    deadline: float
    target: Session | None  # None: an in-process handler (answered inline)
    done: Done
    requester: Session | None = None
    sender: str = ""
    method: str = ""
    finished: bool = False


@dataclass(frozen=True)
class Limits:
    """What one link may make the gateway hold; a refusal is ERROR(LIMIT_REACHED)."""

    senders_per_link: int = MAX_SENDERS_PER_LINK
    listeners_per_link: int = MAX_LISTENERS_PER_LINK
    events_per_sender: int = MAX_EVENTS_PER_SENDER
    #: Requests pending on one handler link (BUSY above; a requester gets a fair share).
    pending_per_link: int = MAX_PENDING_PER_LINK


@dataclass
class Reservation:
    """A sender name kept for the serial link that held it, until ``until``."""

    link: str  #: the link's name (``serial:<port>``): the same port after a reopen
    until: float


@dataclass(eq=False)
class LocalSender:
    """A sender living in the gateway process."""

    name: str
    events: tuple[str, ...]
    handlers: dict[str | None, RequestHandler] = field(default_factory=dict)


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
    ) -> None:
        self.name = name
        #: Seconds a serial link's sender names stay reserved for it after its
        #: session ends; None: twice that session's link timeout.
        self.serial_name_grace = serial_name_grace
        #: sender name -> the serial link it is kept for (see _reserve_names).
        self.reserved: dict[str, Reservation] = {}
        #: link name -> its reserved names (a links row costs what that link has).
        self._reserved_by_link: dict[str, set[str]] = {}
        self._next_expiry = float("inf")
        self.request_timeout = request_timeout
        self.max_body = max_body
        self.clock = clock
        self.limits = limits or Limits()
        self.table: RoutingTable[Subscriber] = RoutingTable(self._announce)
        self.sessions: set[Session] = set()
        self._pending: dict[int, Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._ids = itertools.count(1)
        #: handler session -> requester -> its requests pending there (fair shares).
        self._load: dict[Session, dict[Session | None, int]] = {}
        self.local_senders: dict[str, LocalSender] = {}
        self._event_heads: dict[tuple[str, str], bytes] = {}
        #: Extra rows for ``$gateway links``: links that exist without a session,
        #: such as a serial port that is currently unplugged and being reopened.
        self.link_reporters: list[Callable[[], list[dict[str, Any]]]] = []
        #: Called once per finished request with (status, seconds); None: no cost.
        self.request_observer: RequestObserver | None = None
        self.counters = {
            "triggers": 0,
            "events_out": 0,
            "dropped_events": 0,
            "requests": 0,
            "listener_errors": 0,
            "bad_data": 0,
            #: events not delivered to a link because they exceed its max_body (or 65535)
            "dropped_too_large": 0,
            #: responses replaced by TOO_LARGE because they exceed the requester's max_body
            "responses_too_large": 0,
            #: requests refused with BUSY (handler full, or the requester's share used)
            "busy": 0,
            #: registrations refused by a per-link limit or an oversized announcement
            "refused_registrations": 0,
        }
        #: Figures that are not counts (the asyncio layer's loop lag), shown in stats.
        self.gauges: dict[str, float] = {}

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
        self._end_session(session, "link closed")
        session.step(Input.LINK_CLOSED)
        self.sessions.discard(session)
        logger.debug("link %s detached", session.link.name)

    def breach(self, session: Session, reason: str) -> None:
        """An unanswerable protocol breach: log once, close the link."""
        if session.state in (State.ERROR, State.CLOSED):
            return
        logger.warning("closing %s: %s", session.link.name, reason)
        self._end_session(session, reason)
        session.step(Input.BREACH)
        session.link.close()

    # --- receiving --------------------------------------------------------

    def receive(self, session: Session, body: bytes) -> None:
        """Handle one frame body from ``session``'s link."""
        if session.state in (State.ERROR, State.CLOSED):
            return  # the rest of a read that ended in a breach: the link is closing
        session.last_rx = self.clock()
        if session.state is State.OPEN and body[0] == w.MessageType.TRIGGER:
            self._on_trigger_fast(session, body)
            return
        try:
            msg = w.decode(body)
        except RemoteProtocolError as exc:
            ref = body[0] if exc.code is ErrorCode.UNKNOWN_TYPE else 0
            if exc.code is ErrorCode.UNSUPPORTED_VERSION:
                ref = w.PROTOCOL_VERSION
            # Nobody answers an ERROR with an ERROR, even a broken one: that could loop.
            answer = body[0] & w.TYPE_MASK != w.MessageType.ERROR
            self._protocol_error(session, exc.code, ref, str(exc), answer=answer)
            return
        if isinstance(msg, w.Hello):
            self._on_hello(session, msg)
        elif isinstance(msg, w.Ping):
            self._send(session, w.Pong(msg.token))
        elif isinstance(msg, w.Pong):
            pass
        elif session.state is not State.OPEN:
            self._protocol_error(
                session, ErrorCode.NO_SESSION, 0, f"{type(msg).__name__} before HELLO"
            )
            self._send(session, w.Invite())
        elif isinstance(msg, w.Trigger):
            self._on_trigger(session, msg.event_ref, msg.data)
        elif isinstance(msg, w.Request):
            self._on_request(session, msg)
        elif isinstance(msg, w.Response):
            self._on_response(session, msg)
        elif isinstance(msg, w.RegisterSender):
            self._on_register(session, msg)
        elif isinstance(msg, w.UnregisterSender):
            self._on_unregister(session, msg.sender_ref)
        elif isinstance(msg, w.Listen):
            self._on_listen(session, msg)
        elif isinstance(msg, w.Unlisten):
            self._on_unlisten(session, msg.listener_id)
        elif isinstance(msg, w.Error):
            logger.info(
                "%s reports error %s (ref %s): %s",
                session.link.name,
                msg.code,
                msg.ref,
                msg.message,
            )
        else:
            self._protocol_error(
                session,
                ErrorCode.UNKNOWN_TYPE,
                body[0],
                f"{type(msg).__name__} is not sent to a gateway",
            )

    def _on_hello(self, session: Session, msg: w.Hello) -> None:
        try:
            check_name("peer", msg.name)  # shown in logs and `sig links`
        except InvalidNameError as exc:
            self._protocol_error(session, ErrorCode.INVALID_NAME, 0, str(exc))
            return
        if session.state is State.OPEN:
            logger.info(
                "%s: new HELLO from %r replaces the session of %r",
                session.link.name,
                msg.name,
                session.peer,
            )
            self._end_session(session, "replaced by a new HELLO")
        session.step(Input.HELLO)
        session.peer = msg.name
        session.peer_max_body = max(8, msg.max_body)
        keepalive = msg.keepalive_ms
        if keepalive == 0:
            persistent = session.link.persistent
            keepalive = DEFAULT_SERIAL_KEEPALIVE_MS if persistent else self.tcp_keepalive_ms
        if keepalive:
            keepalive = min(max(keepalive, KEEPALIVE_MIN_MS), KEEPALIVE_MAX_MS)
        session.keepalive_s = keepalive / 1000
        session.features = 0
        session.opened_at = self.clock()
        self._send(session, w.Welcome(self.name, self.max_body, keepalive))
        logger.info("%s: session opened by %r", session.link.name, msg.name)

    def _on_trigger_fast(self, session: Session, body: bytes) -> None:
        fast = w.split_trigger(body)
        if fast is not None:
            self._on_trigger(session, *fast)
            return
        try:
            msg = w.decode(body)
        except RemoteProtocolError as exc:
            self._protocol_error(session, exc.code, 0, str(exc))
            return
        assert isinstance(msg, w.Trigger)
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

    def _on_register(self, session: Session, msg: w.RegisterSender) -> None:
        ref = msg.sender_ref
        if ref in session.senders:
            self._protocol_error(session, ErrorCode.DUPLICATE_REF, ref, "sender_ref in use")
            return
        refs = [r for r, _ in msg.events]
        if len(set(refs)) != len(refs) or any(r in session.events for r in refs):
            self._protocol_error(session, ErrorCode.DUPLICATE_REF, ref, "event_ref in use")
            return
        refusal = self._check_registration(session, msg)
        if refusal is not None:
            self.counters["refused_registrations"] += 1
            self._protocol_error(session, refusal[0], ref, refusal[1])
            return
        try:
            self._check_sender_name(msg.name, session)
            self.table.add_sender(
                msg.name,
                [e for _, e in msg.events],
                msg.methods,
                default_handler=msg.default_handler,
                owner=session,
            )
        except DuplicateSenderError as exc:
            self._protocol_error(session, ErrorCode.DUPLICATE_SENDER, ref, str(exc))
            return
        except InvalidNameError as exc:
            self._protocol_error(session, ErrorCode.INVALID_NAME, ref, str(exc))
            return
        if self.reserved:
            self._unreserve(msg.name)  # its own port took it back (or it was free)
        session.senders[ref] = msg.name
        for event_ref, event in msg.events:
            session.events[event_ref] = (msg.name, event)
        session.event_refs[msg.name] = tuple(refs)
        self._send(session, w.SenderRegistered(ref))

    def _check_registration(
        self, session: Session, msg: w.RegisterSender
    ) -> tuple[ErrorCode, str] | None:
        """Why this link may not register ``msg`` now (code, text), or None.

        The per-link limits bound what one peer makes the gateway hold. The
        ``#disconnect`` EVENT (the longer of the two announcements) must fit in
        one frame, or listeners could never learn that the sender came or went.
        """
        limits = self.limits
        if len(session.senders) >= limits.senders_per_link:
            return (
                ErrorCode.LIMIT_REACHED,
                f"{session.link.name} already holds {limits.senders_per_link} senders",
            )
        if len(msg.events) > limits.events_per_sender:
            return (
                ErrorCode.LIMIT_REACHED,
                f"sender {msg.name!r} declares {len(msg.events)} events,"
                f" more than {limits.events_per_sender}",
            )
        events = list(dict.fromkeys(e for _, e in msg.events))
        methods = list(dict.fromkeys(msg.methods))
        size = len(w.encode(w.Event(msg.name, DISCONNECT))) + len(
            pack({"events": events, "requests": methods})
        )
        if size > MAX_BODY_LIMIT:
            return (
                ErrorCode.TOO_LARGE,
                f"the #connect/#disconnect announcement of {msg.name!r} would take"
                f" {size} bytes, more than the {MAX_BODY_LIMIT} a frame holds",
            )
        return None

    def _check_sender_name(self, name: str, session: Session | None = None) -> None:
        """Raise unless ``session`` (None: in-process) may register ``name`` now."""
        check_name("sender", name)
        if name.startswith(RESERVED_PREFIX):
            raise InvalidNameError(f"sender names starting with {RESERVED_PREFIX!r} are reserved")
        if name in self.local_senders:
            raise DuplicateSenderError(f"a sender named {name!r} is already connected")
        held = self.reserved.get(name)
        if held is None:
            return
        left = held.until - self.clock()
        if left <= 0:
            self._unreserve(name)  # expired; poll() would have cleaned it soon
        elif session is None or session.link.name != held.link:
            raise DuplicateSenderError(
                f"sender name {name!r} is reserved for {held.link} for {left:.1f} s more"
                " (its device went quiet; the same link gets it back at once)"
            )

    def _on_unregister(self, session: Session, ref: int) -> None:
        name = session.senders.pop(ref, None)
        if name is None:
            self._protocol_error(session, ErrorCode.UNKNOWN_REF, ref, "unknown sender_ref")
            return
        self._drop_sender(session, name)

    def _on_listen(self, session: Session, msg: w.Listen) -> None:
        if msg.listener_id in session.listeners:
            self._protocol_error(
                session, ErrorCode.DUPLICATE_REF, msg.listener_id, "listener_id in use"
            )
            return
        if len(session.listeners) >= self.limits.listeners_per_link:
            self.counters["refused_registrations"] += 1
            self._protocol_error(
                session,
                ErrorCode.LIMIT_REACHED,
                msg.listener_id,
                f"{session.link.name} already holds {self.limits.listeners_per_link} listeners",
            )
            return
        key = (msg.sender, msg.event)
        try:
            self.table.subscribe(session, *key)
        except InvalidNameError as exc:  # e.g. a control character (PROTOCOL.md 2)
            self._protocol_error(session, ErrorCode.INVALID_NAME, msg.listener_id, str(exc))
            return
        session.listeners[msg.listener_id] = key
        self._send(session, w.Listening(msg.listener_id))

    def _on_unlisten(self, session: Session, listener_id: int) -> None:
        key = session.listeners.pop(listener_id, None)
        if key is None:
            self._protocol_error(session, ErrorCode.UNKNOWN_REF, listener_id, "unknown listener_id")
            return
        self.table.unsubscribe(session, *key)

    # --- routing ----------------------------------------------------------

    def route(self, sender: str, event: str, data: bytes) -> None:
        """Deliver one event (data as raw CBOR) to everyone whose listener matches."""
        self.counters["triggers"] += 1
        subs = self.table.match(sender, event)
        if not subs:
            return
        body: bytes | None = None
        body_len = delivered = dropped = too_large = 0
        value: Any = _UNSET
        for sub in subs:
            if type(sub) is Session:
                if body is None:  # one body for all links (framed once): head + data as it came
                    body = self._event_head(sender, event) + data
                    body_len = len(body)
                # Over the protocol's limit it fits no link: every one counts a drop.
                if body_len > sub.peer_max_body or body_len > MAX_BODY_LIMIT:
                    sub.dropped_too_large += 1
                    too_large += 1
                elif sub.link.send(body, droppable=True):
                    sub.events_out += 1
                    delivered += 1
                else:  # counted by the link (Session.dropped_events adds it up)
                    dropped += 1
            else:
                assert isinstance(sub, Listener)
                if value is _UNSET:
                    try:
                        value = unpack(data)
                    except DecodeError as exc:
                        self.counters["bad_data"] += 1
                        logger.warning("dropping %s:%s for local listeners: %s", sender, event, exc)
                        value = _BAD
                if value is _BAD:
                    continue
                try:
                    sub.callback({"sender": sender, "event": event}, value)
                except Exception:
                    self.counters["listener_errors"] += 1
                    logger.exception("listener %r raised on %s:%s", sub, sender, event)
        if delivered:
            self.counters["events_out"] += delivered
        if dropped or too_large:
            self.counters["dropped_events"] += dropped + too_large
        if too_large:
            self.counters["dropped_too_large"] += too_large
            logger.debug(
                "%s:%s of %d bytes too large for %d links", sender, event, body_len, too_large
            )

    def _event_head(self, sender: str, event: str) -> bytes:
        """The EVENT body up to its data (type and both names), cached per pair."""
        key = (sender, event)
        head = self._event_heads.get(key)
        if head is None:
            if len(self._event_heads) >= EVENT_HEAD_CACHE:
                self._event_heads.clear()
            head = self._event_heads[key] = w.event_head(sender, event)
        return head

    def _announce(self, info: SenderInfo, event: str) -> None:
        """Fire ``#connect`` / ``#disconnect`` (the table calls it only if someone listens)."""
        self.route(info.name, event, pack(info.announcement()))

    # --- requests ---------------------------------------------------------

    def _on_request(self, session: Session, msg: w.Request) -> None:
        rid = msg.request_id

        def done(status: int, message: str, data: bytes) -> None:
            if session.state is State.OPEN:
                self._respond(session, rid, status, message, data)

        self.start_request(msg.sender, msg.method, msg.data, done, requester=session)

    def _respond(self, session: Session, rid: int, status: int, message: str, data: bytes) -> None:
        """Send a RESPONSE, or TOO_LARGE in its place when it exceeds what the peer takes.

        The body is re-encoded here (the requester's request_id replaces the
        gateway's, up to 4 bytes more), so this is the point that must check.
        """
        body = w.encode(w.Response(rid, status, message, data if not status else b""))
        limit = self._limit(session)
        if len(body) > limit:
            self.counters["responses_too_large"] += 1
            text = (
                f"response of {len(body)} bytes exceeds the {limit} that {session.peer!r} accepts"
            )
            logger.debug("%s: %s", session.link.name, text)
            short = _fit_text(text, limit - RESPONSE_OVERHEAD - 2)
            body = w.encode(w.Response(rid, ErrorCode.TOO_LARGE, short))
        self._send_body(session, body, urgent=True)

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
        self.counters["requests"] += 1
        if self.request_observer is not None:
            done = _observed(done, self.request_observer, self.clock)
        if sender == GATEWAY_SENDER:
            self._answer_gateway(method, params, requester, done)
            return
        info = self.table.sender(sender)
        if info is None:
            done(ErrorCode.NO_SUCH_SENDER, f"no sender named {sender!r} is connected", b"")
            return
        if not info.handles(method):
            done(ErrorCode.NO_SUCH_METHOD, f"sender {sender!r} has no method {method!r}", b"")
            return
        owner = info.owner
        if isinstance(owner, LocalSender):
            handler = resolve_handler(owner.handlers, sender, method)
            try:
                value = unpack(params)
            except DecodeError as exc:
                done(ErrorCode.MALFORMED, str(exc), b"")
                return
            self._answer_inline(done, lambda: handler(value), f"{sender}.{method}")
            return
        assert isinstance(owner, Session)
        busy = self._admit(owner, requester)
        if busy is not None:
            self.counters["busy"] += 1
            done(ErrorCode.BUSY, busy, b"")
            return
        gid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        body = w.encode(w.Request(gid, sender, method, params))
        limit = self._limit(owner)
        if len(body) > limit:
            done(
                ErrorCode.TOO_LARGE,
                f"request of {len(body)} bytes exceeds the {limit} that {owner.peer!r} accepts",
                b"",
            )
            return
        deadline = self.clock() + (self.request_timeout if timeout is None else timeout)
        pending = Pending(gid, deadline, owner, done, requester, sender, method)
        self._pending[gid] = pending
        owner.handling[gid] = pending
        load = self._load.setdefault(owner, {})
        load[requester] = load.get(requester, 0) + 1
        self._push_deadline(deadline, gid)
        self._send_body(owner, body, urgent=True)

    def _admit(self, owner: Session, requester: Session | None) -> str | None:
        """Why ``requester`` may not start one more request on ``owner`` now, or None.

        The handler link holds ``pending_per_link`` requests at most; each
        requester a fair share of them: ``pending_per_link // (n + 1)``, with n
        the requesters that have requests pending there. A flooder so always
        leaves room for a newcomer, which is then admitted (and shrinks the
        flooder's share as the flooder's requests complete). Shares shrink only
        as requests finish, so several flooders that came one after the other
        can still fill the link for a while: a newcomer with nothing pending
        there is then admitted beyond the cap (up to twice it) as long as some
        requester holds more than its share now.
        """
        cap = self.limits.pending_per_link
        full = f"{cap} requests already pending on {owner.link.name}"
        total = len(owner.handling)
        load = self._load.get(owner)
        mine = load.get(requester, 0) if load else 0
        if not mine:
            if total < cap:
                return None
            share = max(1, cap // (len(load) + 1)) if load else cap
            if total < 2 * cap and load and any(n > share for n in load.values()):
                return None
            return full
        if total >= cap:
            return full
        assert load is not None
        share = max(1, cap // (len(load) + 1))
        if mine >= share:
            return (
                f"{mine} of this requester's requests already pending on"
                f" {owner.link.name} (its fair share of {cap} is {share})"
            )
        return None

    def _push_deadline(self, deadline: float, gid: int) -> None:
        """Queue a request timeout; drop the entries of finished requests when they pile up."""
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, gid))
        if len(deadlines) > 2 * len(self._pending) + 1024:  # amortised O(1) per request
            pending = self._pending
            deadlines[:] = [entry for entry in deadlines if entry[1] in pending]
            heapq.heapify(deadlines)

    def _answer_inline(self, done: Done, call: Callable[[], Any], what: str = "") -> None:
        try:
            result = pack(call())
        except RequestError as exc:
            done(exc.code, str(exc), b"")
        except SigError as exc:
            done(ErrorCode.HANDLER_ERROR, str(exc), b"")
        except Exception as exc:
            logger.exception("request handler %s raised", what)
            done(ErrorCode.HANDLER_ERROR, f"{what} raised {type(exc).__name__}: {exc}", b"")
        else:
            done(ErrorCode.OK, "", result)

    def _on_response(self, session: Session, msg: w.Response) -> None:
        pending = session.handling.pop(msg.request_id, None)
        if pending is None:
            logger.debug("%s: late or unknown response %s", session.link.name, msg.request_id)
            return
        self._finish(pending, msg.status, msg.message, msg.data)

    def _finish(self, pending: Pending, status: int, message: str, data: bytes) -> None:
        if pending.finished:
            return
        pending.finished = True
        self._pending.pop(pending.id, None)
        target = pending.target
        if target is not None:
            target.handling.pop(pending.id, None)
            load = self._load.get(target)
            if load is not None:
                left = load.get(pending.requester, 0) - 1
                if left > 0:
                    load[pending.requester] = left
                else:
                    load.pop(pending.requester, None)
                    if not load:
                        del self._load[target]
        pending.done(status, message, data)

    # --- $gateway: the gateway's own methods, paged to fit the requester ----

    def _answer_gateway(
        self, method: str, params: bytes, requester: Session | None, done: Done
    ) -> None:
        """Answer ``$gateway senders|links|stats``; the result always fits the requester.

        Without params the whole result comes as before (a map of senders, a
        list of links, a map of counters), or TOO_LARGE if it does not fit.
        With ``{"offset": n, "limit": k}`` it comes a page at a time:
        ``{"items": [...], "next": offset of the next page or null, "total": N}``.
        """
        budget = (self._limit(requester) if requester is not None else MAX_BODY_LIMIT) - (
            RESPONSE_OVERHEAD
        )
        try:
            data = self._gateway_answer(method, params, budget)
        except RequestError as exc:
            done(exc.code, str(exc), b"")
        else:
            done(ErrorCode.OK, "", data)

    def _gateway_answer(self, method: str, params: bytes, budget: int) -> bytes:
        if method not in _GATEWAY_METHODS:
            raise_no_method(method)
        try:
            args = unpack(params)
        except DecodeError as exc:
            raise _BadParams(str(exc)) from None
        if args is None:
            return self._gateway_whole(method, budget)
        offset, limit = _page_args(args)
        if method == "senders":
            senders = self.table.senders
            total = len(senders)
            items: Iterator[Any] = (
                self._sender_item(info) for info in itertools.islice(senders.values(), offset, None)
            )
        elif method == "links":
            rows = self._link_order()
            total = len(rows)
            items = (row() for row in itertools.islice(rows, offset, None))
        else:
            stats = list(self.stats().items())
            total = len(stats)
            items = (list(kv) for kv in itertools.islice(stats, offset, None))
        return _page(items, offset, limit, total, budget)

    def _gateway_whole(self, method: str, budget: int) -> bytes:
        """The unpaged answer of the first protocol version, if it fits ``budget``.

        Built part by part, and given up as soon as the parts pass the budget:
        a small request never makes the gateway build a large answer in vain.
        """
        data: bytes | None
        if method == "stats":
            data = pack(self.stats())
        elif method == "senders":
            senders = _within(
                (
                    (name, {**info.announcement(), "link": self._owner_name(info.owner)})
                    for name, info in self.table.senders.items()
                ),
                budget,
            )
            data = None if senders is None else pack(dict(senders))
        else:
            rows = itertools.chain(
                (self.link_info(s) for s in self.sessions), self._reported_rows()
            )
            links = _within(rows, budget)
            data = None if links is None else pack(links)
        if data is None or len(data) > budget:
            raise RequestTooLarge(
                f"$gateway {method} takes more than the {budget} bytes this link accepts:"
                ' ask for pages, params {"offset": 0, "limit": 100}'
            )
        return data

    def _sender_item(self, info: SenderInfo) -> dict[str, Any]:
        return {"name": info.name, **info.announcement(), "link": self._owner_name(info.owner)}

    def _link_order(self) -> list[Callable[[], dict[str, Any]]]:
        """Rows of ``$gateway links`` by link name, built only for the page asked for."""
        rows: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (s.link.name, functools.partial(self.link_info, s)) for s in self.sessions
        ]
        rows.extend((r["link"], functools.partial(dict, r)) for r in self._reported_rows())
        rows.sort(key=lambda r: r[0])
        return [build for _, build in rows]

    def stats(self) -> dict[str, float]:
        """The gateway's counters and sizes (``$gateway stats``)."""
        return {
            **self.counters,
            "links": len(self.sessions),
            "senders": len(self.table.senders),
            "subscriptions": self.table.subscription_count(),
            "pending_requests": len(self._pending),
            **self.gauges,
        }

    @staticmethod
    def _owner_name(owner: Any) -> str:
        return owner.link.name if isinstance(owner, Session) else "local"

    def links(self) -> list[dict[str, Any]]:
        """One row per link: every session, then what the link reporters add."""
        rows = [self.link_info(s) for s in self.sessions]
        rows.extend(self._reported_rows())
        return rows

    def _reported_rows(self) -> list[dict[str, Any]]:
        """The link reporters' rows (closed serial ports), with their reservations."""
        rows = [row for report in self.link_reporters for row in report()]
        if self.reserved:
            for row in rows:
                self._add_reserved(row)
        return rows

    def _add_reserved(self, row: dict[str, Any]) -> dict[str, Any]:
        """Add ``reserved: {name: seconds left}`` to a links row that has any."""
        kept = self.reservations(row["link"]) if self.reserved else None
        if kept:
            row["reserved"] = kept
        return row

    def reservations(self, link: str) -> dict[str, float]:
        """Sender names reserved for the link named ``link``: seconds left for each."""
        names = self._reserved_by_link.get(link)
        if not names:
            return {}
        now = self.clock()
        return {n: round(max(0.0, self.reserved[n].until - now), 1) for n in sorted(names)}

    def link_info(self, s: Session) -> dict[str, Any]:
        row = {
            "link": s.link.name,
            "state": s.state.value,
            "peer": s.peer,
            "senders": sorted(s.senders.values()),
            "listeners": len(s.listeners),
            "triggers": s.triggers,
            "events_out": s.events_out,
            "dropped_events": s.dropped_events,
            "dropped_too_large": s.dropped_too_large,
            "protocol_errors": s.protocol_errors,
            **s.link.stats(),
        }
        return self._add_reserved(row)

    # --- timers -----------------------------------------------------------

    def poll(self) -> None:
        """Expire requests, ping idle links, end silent sessions. Call often (~0.1 s)."""
        now = self.clock()
        if now >= self._next_expiry:
            self._expire_reservations(now)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, gid = heapq.heappop(deadlines)
            pending = self._pending.get(gid)
            if pending is not None:
                self._finish(
                    pending,
                    ErrorCode.TIMEOUT,
                    f"no response to {pending.method!r} within the request timeout",
                    b"",
                )
        hello_by = now - self.hello_timeout if self.hello_timeout else None
        for session in list(self.sessions):
            if session.state is State.AWAIT_HELLO:
                if hello_by is not None and session.attached_at < hello_by:
                    self._hello_timeout(session)
                continue
            ka = session.keepalive_s
            if not ka or session.state is not State.OPEN:
                continue
            if getattr(session.link, "reading_paused", False):
                continue  # the link is not reading this peer: its silence is ours
            if now - session.last_rx > LINK_TIMEOUT_KEEPALIVES * ka:
                logger.warning(
                    "%s: no frame from %r for %.1f s, session ends",
                    session.link.name,
                    session.peer,
                    now - session.last_rx,
                )
                self._end_session(session, "link timeout")
                if session.step(Input.TIMEOUT) is State.CLOSED:
                    session.close_reason = "link_timeout"
                    self.sessions.discard(session)
                    session.link.close()
            elif now - session.last_tx >= ka:
                self._send(session, w.Ping(0))

    def _hello_timeout(self, session: Session) -> None:
        """A TCP link that never opened a session (silent, slow or not sig): close it."""
        if session.link.persistent:
            return  # a UART waits for its device as long as it takes
        logger.debug("%s: no HELLO within %.1f s, closing", session.link.name, self.hello_timeout)
        session.close_reason = "hello_timeout"
        session.step(Input.TIMEOUT)
        self.sessions.discard(session)
        session.link.close()

    def _expire_reservations(self, now: float) -> None:
        for name, held in [(n, h) for n, h in self.reserved.items() if h.until <= now]:
            self._unreserve(name)
            logger.info("%s: reservation of sender name %r expired", held.link, name)
        self._next_expiry = min((h.until for h in self.reserved.values()), default=float("inf"))

    def _unreserve(self, name: str) -> None:
        held = self.reserved.pop(name, None)
        if held is None:
            return
        names = self._reserved_by_link.get(held.link)
        if names is not None:
            names.discard(name)
            if not names:
                del self._reserved_by_link[held.link]

    # --- in-process endpoints ---------------------------------------------

    def add_local_sender(
        self, name: str, events: tuple[str, ...], handlers: dict[str | None, RequestHandler]
    ) -> LocalSender:
        self._check_sender_name(name, None)
        local = LocalSender(name, events, handlers)
        methods = tuple(m for m in handlers if m is not None)
        self.table.add_sender(name, events, methods, default_handler=None in handlers, owner=local)
        self.local_senders[name] = local
        return local

    def remove_local_sender(self, name: str) -> bool:
        if self.local_senders.pop(name, None) is None:
            return False
        self.table.remove_sender(name)
        return True

    # --- helpers ----------------------------------------------------------

    def _send(self, session: Session, msg: w.Message, urgent: bool = False) -> None:
        body = w.encode(msg)
        if isinstance(msg, w.Error) and len(body) > self._limit(session):
            # An ERROR is worth sending short rather than not at all.
            short = _fit_text(msg.message, self._limit(session) - ERROR_OVERHEAD)
            body = w.encode(w.Error(msg.code, msg.ref, short))
        self._send_body(session, body, urgent)

    def _send_body(self, session: Session, body: bytes, urgent: bool = False) -> None:
        session.last_tx = self.clock()
        session.link.send(body, urgent=urgent)

    @staticmethod
    def _limit(session: Session) -> int:
        """The largest body ``session``'s peer accepts (its max_body, at most 65535)."""
        return min(session.peer_max_body, MAX_BODY_LIMIT)

    def _protocol_error(
        self, session: Session, code: int, ref: int, message: str, *, answer: bool = True
    ) -> None:
        if code not in _REFUSALS:
            session.protocol_errors += 1
        if code not in session.logged_codes:  # once per kind per link: noise must not flood
            session.logged_codes.add(code)
            logger.warning("%s (%s): %s", session.link.name, ErrorCode(code).name, message)
        if answer:
            self._send(session, w.Error(code, ref, message[:200]))
        if code in _REFUSALS:  # an answer to a legitimate registration, not a breach
            return
        if not session.link.persistent and session.protocol_errors > MAX_PROTOCOL_ERRORS:
            self.breach(session, f"more than {MAX_PROTOCOL_ERRORS} protocol errors")

    def _drop_sender(self, session: Session, name: str) -> None:
        """Remove one sender of ``session``: O(its events + requests pending on the link)."""
        for ref in session.event_refs.pop(name, ()):
            session.events.pop(ref, None)
        gone = [p for p in session.handling.values() if p.sender == name]
        self.table.remove_sender(name)
        for pending in gone:
            self._finish(pending, ErrorCode.SENDER_GONE, f"sender {name!r} went away", b"")

    def _end_session(self, session: Session, reason: str) -> None:
        """Remove everything the session registered; fail what waits on it."""
        if session.state not in (State.OPEN, State.AWAIT_HELLO):
            return
        for pending in list(session.handling.values()):
            self._finish(
                pending,
                ErrorCode.SENDER_GONE,
                f"{session.peer or session.link.name} went away ({reason})",
                b"",
            )
        self.table.unsubscribe_many(session, session.listeners.values())
        session.listeners.clear()
        names = list(session.senders.values())
        if session.link.persistent and names:
            self._reserve_names(session, names)  # before #disconnect: its listeners may re-add
        self.table.remove_senders(names)
        session.senders.clear()
        session.events.clear()
        session.event_refs.clear()
        if session.peer:
            logger.info("%s: session of %r ended (%s)", session.link.name, session.peer, reason)

    def _reserve_names(self, session: Session, names: list[str]) -> None:
        """Keep a quiet serial device's sender names for its port for the grace period.

        A device that is unplugged, resets or times out comes back on the same
        port (link name) and must find its names free; nobody else, TCP client
        or in-process sender, may take them meanwhile and answer its requests.
        """
        grace = self.serial_name_grace
        if grace is None:
            keepalive = session.keepalive_s or DEFAULT_SERIAL_KEEPALIVE_MS / 1000
            grace = SERIAL_NAME_GRACE_TIMEOUTS * LINK_TIMEOUT_KEEPALIVES * keepalive
        if grace <= 0:
            return
        until = self.clock() + grace
        link = session.link.name
        for name in names:
            self._unreserve(name)
            self.reserved[name] = Reservation(link, until)
        self._reserved_by_link.setdefault(link, set()).update(names)
        self._next_expiry = min(self._next_expiry, until)
        logger.info(
            "%s: sender name(s) %s reserved for this link for %.1f s",
            session.link.name,
            ", ".join(repr(n) for n in names),
            grace,
        )


class _BadParams(RequestError):
    """The params of a ``$gateway`` request are not what the method takes."""

    code = ErrorCode.MALFORMED


_GATEWAY_METHODS = ("senders", "links", "stats")


def _page_args(args: Any) -> tuple[int, int]:
    """``(offset, limit)`` from ``{"offset": n, "limit": k}`` (both optional)."""
    if not isinstance(args, dict) or not set(args) <= {"offset", "limit"}:
        raise _BadParams('params must be null or {"offset": int, "limit": int}')
    offset = args.get("offset", 0)
    limit = args.get("limit", DEFAULT_PAGE_LIMIT)
    for name, value in (("offset", offset), ("limit", limit)):
        if type(value) is not int or value < 0:
            raise _BadParams(f"{name} must be an int >= 0, not {value!r}")
    return offset, min(max(limit, 1), 0xFFFF)


def _page(items: Iterator[Any], offset: int, limit: int, total: int, budget: int) -> bytes:
    """CBOR of ``{"items": [...], "next": n | null, "total": N}`` in at most ``budget`` bytes.

    Items are packed one by one and the page ends before the first that does
    not fit, so the cost is O(items on the page) after the offset. An item too
    large for a page of its own comes with its lists emptied and
    ``"truncated": true``; if even that does not fit, the request is TOO_LARGE.
    """
    chunks: list[bytes] = []
    used = PAGE_OVERHEAD
    for item in items:
        if len(chunks) >= limit:
            break
        raw = pack(item)
        if used + len(raw) > budget:
            if chunks:
                break
            raw = pack(_truncated(item))
            if used + len(raw) > budget:
                raise RequestTooLarge(
                    f"item {offset} does not fit in the {budget} bytes this link accepts"
                )
        chunks.append(raw)
        used += len(raw)
    end = offset + len(chunks)
    nxt = end if end < total else None
    # Map keys in CBOR's canonical order (shorter first), like sig.protocol.data.pack.
    return b"".join(
        (
            b"\xa3",
            pack("next"),
            pack(nxt) or b"\xf6",
            pack("items"),
            _cbor_array_head(len(chunks)),
            *chunks,
            pack("total"),
            pack(total),
        )
    )


def _within(parts: Iterable[Any], budget: int) -> list[Any] | None:
    """All of ``parts``, or None as soon as their packed sizes add up past ``budget``."""
    kept: list[Any] = []
    size = 0
    for part in parts:
        size += len(pack(part))
        if size > budget:
            return None
        kept.append(part)
    return kept


def _truncated(item: Any) -> Any:
    """``item`` with its list values emptied and ``"truncated": true`` added."""
    if not isinstance(item, dict):
        return item
    return {**{k: [] if isinstance(v, list) else v for k, v in item.items()}, "truncated": True}


def _cbor_array_head(n: int) -> bytes:
    """The head of a CBOR array of ``n`` items (major type 4)."""
    if n < 24:
        return bytes([0x80 | n])
    if n < 0x100:
        return bytes([0x98, n])
    if n < 0x10000:
        return b"\x99" + n.to_bytes(2, "big")
    return b"\x9a" + n.to_bytes(4, "big")


def _fit_text(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` UTF-8 bytes (at least a short prefix)."""
    budget = max(budget, 24)
    raw = text.encode("utf-8")
    if len(raw) <= budget:
        return text
    return raw[:budget].decode("utf-8", "ignore")


def _observed(done: Done, observer: RequestObserver, clock: Callable[[], float]) -> Done:
    """``done`` that also tells ``observer`` the outcome and how long the request took."""
    started = clock()

    def finished(status: int, message: str, data: bytes) -> None:
        try:
            observer(status, clock() - started)
        except Exception:  # metrics must never lose a response
            logger.exception("request observer failed")
        done(status, message, data)

    return finished


def raise_no_method(method: str) -> Any:
    from sig.errors import NoSuchMethod

    raise NoSuchMethod(f"{GATEWAY_SENDER} has no method {method!r} (senders, links, stats)")


#: Errors that refuse a well-formed registration; they never count toward a breach.
_REFUSALS = frozenset(
    {
        ErrorCode.DUPLICATE_SENDER,
        ErrorCode.INVALID_NAME,
        ErrorCode.LIMIT_REACHED,
        ErrorCode.TOO_LARGE,
    }
)

_UNSET: Any = object()
_BAD: Any = object()
