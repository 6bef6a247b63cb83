"""The gateway core: sessions + routing table + request correlation (sans-I/O).

Carriers hand it frame bodies (:meth:`GatewayCore.receive`) and tell it when
links come and go; it answers by calling ``link.send(frame)``. Time enters only
through the ``clock`` it is given and :meth:`GatewayCore.poll`, which the
asyncio layer calls periodically for keepalive, link and request timeouts.
In-process senders and listeners (the demo timer, ``sig serve`` plugins) use
the same table as remote ones.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _wire as w
from ._api import Listener, RequestHandler, resolve_handler
from ._data import pack, unpack
from ._frame import DEFAULT_MAX_BODY, encode_frame
from ._routing import RESERVED_PREFIX, RoutingTable, SenderInfo, check_name
from ._session import Input, Link, Session, State
from .errors import (
    DecodeError,
    DuplicateSenderError,
    ErrorCode,
    InvalidNameError,
    RemoteProtocolError,
    RequestError,
    SigError,
)

logger = logging.getLogger(__name__)

GATEWAY_SENDER = "$gateway"
#: Requests pending on one handler link at most (then BUSY).
MAX_PENDING_PER_LINK = 64
#: Protocol errors tolerated on a TCP link before it is closed.
MAX_PROTOCOL_ERRORS = 32
#: Keepalive the gateway asks of UART devices that announce none.
DEFAULT_SERIAL_KEEPALIVE_MS = 2000
KEEPALIVE_MIN_MS, KEEPALIVE_MAX_MS = 500, 60000
#: Encoded EVENT heads kept (the cache starts again when it is full).
EVENT_HEAD_CACHE = 4096

Subscriber = Session | Listener
Done = Callable[[int, str, bytes], None]  # (status, message, data)


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


@dataclass(eq=False)
class LocalSender:
    """A sender living in the gateway process."""

    name: str
    events: tuple[str, ...]
    handlers: dict[str | None, RequestHandler] = field(default_factory=dict)


class GatewayCore:
    """Routes frames between links and in-process endpoints."""

    def __init__(
        self,
        name: str = "sig-gateway",
        *,
        request_timeout: float = 10.0,
        max_body: int = DEFAULT_MAX_BODY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.request_timeout = request_timeout
        self.max_body = max_body
        self.clock = clock
        self.table: RoutingTable[Subscriber] = RoutingTable(self._announce)
        self.sessions: set[Session] = set()
        self._pending: dict[int, Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._ids = itertools.count(1)
        self.local_senders: dict[str, LocalSender] = {}
        self._event_heads: dict[tuple[str, str], bytes] = {}
        #: Extra rows for ``$gateway links``: links that exist without a session,
        #: such as a serial port that is currently unplugged and being reopened.
        self.link_reporters: list[Callable[[], list[dict[str, Any]]]] = []
        self.counters = {
            "triggers": 0,
            "events_out": 0,
            "dropped_events": 0,
            "requests": 0,
            "listener_errors": 0,
            "bad_data": 0,
        }

    # --- links ------------------------------------------------------------

    def attach(self, link: Link) -> Session:
        """A link came up (connection accepted, port opened)."""
        now = self.clock()
        session = Session(link, last_rx=now, last_tx=now)
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
        if keepalive == 0 and session.link.persistent:
            keepalive = DEFAULT_SERIAL_KEEPALIVE_MS
        if keepalive:
            keepalive = min(max(keepalive, KEEPALIVE_MIN_MS), KEEPALIVE_MAX_MS)
        session.keepalive_s = keepalive / 1000
        session.features = 0
        session.opened_at = self.clock()
        self._send(session, w.Welcome(self.name, self.max_body, keepalive))
        logger.info("%s: session opened by %r", session.link.name, msg.name)

    def _on_trigger_fast(self, session: Session, body: bytes) -> None:
        ref = body[1] if len(body) > 1 else 0x80
        if ref < 0x80:
            self._on_trigger(session, ref, body[2:])
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
        try:
            self._check_sender_name(msg.name)
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
        session.senders[ref] = msg.name
        for event_ref, event in msg.events:
            session.events[event_ref] = (msg.name, event)
        self._send(session, w.SenderRegistered(ref))

    def _check_sender_name(self, name: str) -> None:
        check_name("sender", name)
        if name.startswith(RESERVED_PREFIX):
            raise InvalidNameError(f"sender names starting with {RESERVED_PREFIX!r} are reserved")
        if name in self.local_senders:
            raise DuplicateSenderError(f"a sender named {name!r} is already connected")

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
        key = (msg.sender, msg.event)
        session.listeners[msg.listener_id] = key
        self.table.subscribe(session, *key)
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
        frame: bytes | None = None
        body_len = delivered = dropped = 0
        value: Any = _UNSET
        for sub in subs:
            if type(sub) is Session:
                if frame is None:  # one frame for all links: EVENT head + data as it came
                    body = self._event_head(sender, event) + data
                    body_len = len(body)
                    frame = encode_frame(body)
                if body_len <= sub.peer_max_body and sub.link.send(frame, True):
                    sub.events_out += 1
                    delivered += 1
                else:
                    sub.dropped_events += 1
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
        if dropped:
            self.counters["dropped_events"] += dropped

    def _event_head(self, sender: str, event: str) -> bytes:
        """The EVENT body up to its data (type and both names), cached per pair."""
        key = (sender, event)
        head = self._event_heads.get(key)
        if head is None:
            if len(self._event_heads) >= EVENT_HEAD_CACHE:
                self._event_heads.clear()
            head = self._event_heads[key] = w.encode(w.Event(sender, event))
        return head

    def _announce(self, info: SenderInfo, event: str) -> None:
        self.route(info.name, event, pack(info.announcement()))

    # --- requests ---------------------------------------------------------

    def _on_request(self, session: Session, msg: w.Request) -> None:
        rid = msg.request_id

        def done(status: int, message: str, data: bytes) -> None:
            if session.state is State.OPEN:
                response = w.Response(rid, status, message, data if not status else b"")
                self._send(session, response, urgent=True)

        self.start_request(msg.sender, msg.method, msg.data, done, requester=session)

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
        if sender == GATEWAY_SENDER:
            self._answer_inline(done, lambda: self._gateway_request(method))
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
        if len(owner.handling) >= MAX_PENDING_PER_LINK:
            done(
                ErrorCode.BUSY,
                f"{MAX_PENDING_PER_LINK} requests already pending on {owner.link.name}",
                b"",
            )
            return
        request = w.Request(0, sender, method, params)
        body_len = len(w.encode(request))
        if body_len > owner.peer_max_body:
            done(
                ErrorCode.TOO_LARGE,
                f"request of {body_len} bytes exceeds the "
                f"{owner.peer_max_body} that {owner.peer!r} accepts",
                b"",
            )
            return
        gid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        deadline = self.clock() + (self.request_timeout if timeout is None else timeout)
        pending = Pending(gid, deadline, owner, done, requester, sender, method)
        self._pending[gid] = pending
        owner.handling[gid] = pending
        heapq.heappush(self._deadlines, (deadline, gid))
        self._send(owner, w.Request(gid, sender, method, params), urgent=True)

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
        if pending.target is not None:
            pending.target.handling.pop(pending.id, None)
        pending.done(status, message, data)

    def _gateway_request(self, method: str) -> Any:
        if method == "senders":
            return {
                name: {**info.announcement(), "link": self._owner_name(info.owner)}
                for name, info in self.table.senders.items()
            }
        if method == "links":
            return self.links()
        if method == "stats":
            return {
                **self.counters,
                "links": len(self.sessions),
                "senders": len(self.table.senders),
                "subscriptions": self.table.subscription_count(),
                "pending_requests": len(self._pending),
            }
        raise_no_method(method)

    @staticmethod
    def _owner_name(owner: Any) -> str:
        return owner.link.name if isinstance(owner, Session) else "local"

    def links(self) -> list[dict[str, Any]]:
        """One row per link: every session, then what the link reporters add."""
        rows = [self.link_info(s) for s in self.sessions]
        for report in self.link_reporters:
            rows.extend(report())
        return rows

    def link_info(self, s: Session) -> dict[str, Any]:
        return {
            "link": s.link.name,
            "state": s.state.value,
            "peer": s.peer,
            "senders": sorted(s.senders.values()),
            "listeners": len(s.listeners),
            "triggers": s.triggers,
            "events_out": s.events_out,
            "dropped_events": s.dropped_events,
            "protocol_errors": s.protocol_errors,
            **s.link.stats(),
        }

    # --- timers -----------------------------------------------------------

    def poll(self) -> None:
        """Expire requests, ping idle links, end silent sessions. Call often (~0.1 s)."""
        now = self.clock()
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
        for session in list(self.sessions):
            ka = session.keepalive_s
            if not ka or session.state is not State.OPEN:
                continue
            if now - session.last_rx > 3 * ka:
                logger.warning(
                    "%s: no frame from %r for %.1f s, session ends",
                    session.link.name,
                    session.peer,
                    now - session.last_rx,
                )
                self._end_session(session, "link timeout")
                if session.step(Input.TIMEOUT) is State.CLOSED:
                    self.sessions.discard(session)
                    session.link.close()
            elif now - session.last_tx >= ka:
                self._send(session, w.Ping(0))

    # --- in-process endpoints ---------------------------------------------

    def add_local_sender(
        self, name: str, events: tuple[str, ...], handlers: dict[str | None, RequestHandler]
    ) -> LocalSender:
        self._check_sender_name(name)
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
        session.last_tx = self.clock()
        session.link.send(encode_frame(w.encode(msg)), False, urgent)

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
        for ref in [r for r, (s, _) in session.events.items() if s == name]:
            del session.events[ref]
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
        for key in session.listeners.values():
            self.table.unsubscribe(session, *key)
        session.listeners.clear()
        for name in list(session.senders.values()):
            self.table.remove_sender(name)
        session.senders.clear()
        session.events.clear()
        if session.peer:
            logger.info("%s: session of %r ended (%s)", session.link.name, session.peer, reason)


def raise_no_method(method: str) -> Any:
    from .errors import NoSuchMethod

    raise NoSuchMethod(f"{GATEWAY_SENDER} has no method {method!r} (senders, links, stats)")


#: Errors that refuse a well-formed registration; they never count toward a breach.
_REFUSALS = frozenset({ErrorCode.DUPLICATE_SENDER, ErrorCode.INVALID_NAME})

_UNSET: Any = object()
_BAD: Any = object()
