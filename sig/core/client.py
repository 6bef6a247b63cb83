"""The client core: one application's session with a gateway (sans-I/O).

:class:`ClientSession` is to a client what :class:`sig.core.gateway.GatewayCore`
is to the gateway: it holds the protocol state and no I/O. The router that
owns it hands it the link once connected (:meth:`ClientSession.start`), every
frame body the gateway sends (:meth:`ClientSession.receive`, which returns
small typed events), and the time (:meth:`ClientSession.poll`, at
:meth:`ClientSession.next_deadline` at the latest). The session answers by
calling ``link.send(body, urgent=...)``. Time enters only through the
``clock`` it is given and ``poll(now)``.

What it holds:

* the handshake: HELLO, then WELCOME (the gateway's ``max_body``), then the
  replay of every registration (REGISTER_SENDER for each sender, LISTEN for
  each listened key, in order), then :class:`Opened`;
* the registry of senders and listeners, and refusals at a replay (a sender
  whose name was taken while we were away: it is told in :class:`Opened`, its
  triggers are dropped and counted, and it is registered again with backoff
  from ``poll`` until the gateway says yes): :mod:`sig.core.client_registry`;
* request correlation: ids, deadlines (timeouts come out of ``poll``), and the
  requests the gateway sends us (resolved to a handler, or answered with an
  error here);
* keepalive: PING when we were idle for an interval, :class:`LinkTimeout` after
  :data:`LINK_TIMEOUT_KEEPALIVES` intervals without a frame.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sig.core.client_registry import ClientRegistry, ListenKey, SenderEntry, State
from sig.core.endpoints import Listener, ListenerCallback, Sender, handler_error, resolve_handler
from sig.core.routing import Key
from sig.errors import (
    DecodeError,
    DuplicateSenderError,
    EncodeError,
    ErrorCode,
    InvalidNameError,
    NotConnectedError,
    RemoteProtocolError,
    RequestError,
    RequestTimeout,
    SigError,
    request_error_for,
)
from sig.protocol import messages as w
from sig.protocol.constants import MAX_BODY_LIMIT
from sig.protocol.data import pack, unpack

logger = logging.getLogger(__name__)

#: The body size we accept from the gateway (announced in HELLO).
CLIENT_MAX_BODY = MAX_BODY_LIMIT
#: The link is dead after this many keepalive intervals without a frame.
LINK_TIMEOUT_KEEPALIVES = 3
#: Error text of a RESPONSE at most (characters).
MAX_ERROR_TEXT = 500
#: Lazy heap entries tolerated beyond the pending requests before a rebuild.
HEAP_SLACK = 1024
_INF = float("inf")


class Outbox(Protocol):
    """Where the session's bodies go: a carrier link (it frames them)."""

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool: ...


# --- events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """The handshake and the replay are over: the session is open.

    ``refused`` lists the senders the gateway refused at this replay (their
    names were taken meanwhile), each with its error, in registration order.
    """

    max_body: int
    refused: tuple[tuple[str, SigError], ...] = ()


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The gateway did not answer HELLO or the replay in time, or refused HELLO: drop the link.

    ``error`` is the refusal (:class:`sig.NotAuthorised` for our credentials,
    :class:`sig.GatewayBusy`), or None for a timeout.
    """

    reason: str
    error: SigError | None = None


@dataclass(frozen=True, slots=True)
class Registered:
    """The gateway accepted the REGISTER_SENDER or LISTEN sent under ``ref``."""

    ref: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The gateway refused the REGISTER_SENDER or LISTEN sent under ``ref``."""

    ref: int
    error: SigError


@dataclass(frozen=True, slots=True)
class EventReceived:
    """An EVENT (only from :meth:`ClientSession.receive`; routers split EVENTs themselves)."""

    sender: str
    event: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RetainedReceived:
    """A RETAINED: a retained last value for the listeners of the LISTEN it answers.

    ``key`` is the key of that LISTEN (the gateway sends RETAINED right after
    LISTENING), or None when the client no longer listens to it; ``only`` the
    one listener it is for, when it answers a second LISTEN of the key.
    """

    sender: str
    event: str
    data: bytes
    stale: bool
    key: ListenKey | None  #: (sender, event, LISTEN options)
    only: Listener | None = None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A REQUEST for one of our senders, resolved: call ``handler(params)``, then respond."""

    request_id: int
    sender: str
    method: str
    handler: Callable[[Any], Any]
    params: Any


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """No RESPONSE came for our request ``request_id`` before its deadline."""

    request_id: int
    error: RequestTimeout


@dataclass(frozen=True, slots=True)
class LinkTimeout:
    """The gateway was silent for ``silent_for`` seconds: the link is dead."""

    silent_for: float


@dataclass(frozen=True, slots=True)
class Invited:
    """The gateway asks us to register again: reconnect (the replay does it)."""


#: The answer to one of our requests is the RESPONSE message itself (no copy).
Response = w.Response
ClientEvent = (
    Opened
    | HandshakeFailed
    | Registered
    | Refused
    | EventReceived
    | RetainedReceived
    | RequestReceived
    | RequestTimedOut
    | LinkTimeout
    | Invited
    | w.Response
)


def new_stats() -> dict[str, int]:
    """The client's counters (the router's ``stats`` is this dict)."""
    return {
        "events_in": 0,
        #: retained last values the gateway sent when a listener registered
        "retained_in": 0,
        "triggers": 0,
        "dropped_offline": 0,
        "dropped_unregistered": 0,
        "bad_data": 0,
        "listener_errors": 0,
        "reconnects": 0,
        #: senders the gateway refused at a replay (each told to on_sender_refused)
        "senders_refused": 0,
        #: listener calls dropped because callbacks were slower than events came
        "dropped_slow_listener": 0,
        #: events dropped because an ``events()`` iterator was full (slow consumer)
        "dropped_slow_iterator": 0,
        #: bodies from the gateway that did not decode (logged, skipped)
        "bad_messages": 0,
    }


class Requests:
    """Our requests in flight: id -> deadline and what it asked, with a heap of deadlines."""

    def __init__(self) -> None:
        #: request id -> (deadline, sender, method, timeout)
        self.pending: dict[int, tuple[float, str, str, float]] = {}
        self._deadlines: list[tuple[float, int]] = []

    def add(self, rid: int, deadline: float, sender: str, method: str, timeout: float) -> None:
        self.pending[rid] = (deadline, sender, method, timeout)
        heapq.heappush(self._deadlines, (deadline, rid))
        if len(self._deadlines) > 2 * len(self.pending) + HEAP_SLACK:  # answered ones pile up
            self._deadlines = [(p[0], r) for r, p in self.pending.items()]
            heapq.heapify(self._deadlines)

    def answered(self, rid: int) -> bool:
        """Forget a request that was answered; False if it was not pending (timed out)."""
        return self.pending.pop(rid, None) is not None

    def next_deadline(self) -> float:
        return self._deadlines[0][0] if self._deadlines else _INF

    def expire(self, now: float) -> list[RequestTimedOut]:
        """The requests whose deadline passed, as timeouts (they are forgotten)."""
        events: list[RequestTimedOut] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, rid = heapq.heappop(deadlines)
            pending = self.pending.get(rid)
            if pending is None or pending[0] > now:
                continue  # answered already (a lazy heap entry)
            del self.pending[rid]
            _, sender, method, wait = pending
            error = RequestTimeout(f"no response from {sender}.{method} within {wait} s")
            events.append(RequestTimedOut(rid, error))
        return events

    def clear(self) -> None:
        self.pending.clear()
        self._deadlines.clear()


class ClientSession:
    """The protocol state of one client; the router does the I/O."""

    def __init__(
        self,
        name: str,
        *,
        keepalive: float = 10.0,
        handshake_timeout: float = 5.0,
        retry_delay: Callable[[int], float] = lambda attempt: 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``retry_delay(attempt)``: seconds before registering a refused sender again."""
        self.name = name
        self.keepalive = keepalive
        self.handshake_timeout = handshake_timeout
        self.credentials = b""  #: HELLO credentials (sig.core.auth.encode_credentials)
        self.clock = clock
        self.stats = new_stats()
        self.state = State.CLOSED
        self._open = False
        self.link: Outbox | None = None
        #: The gateway's largest body (from WELCOME).
        self.max_body = CLIENT_MAX_BODY
        self.last_rx = self.last_tx = 0.0
        self._ids = itertools.count(1)
        #: Senders and listeners, kept across connections and replayed on each.
        self.registrations = ClientRegistry(self.send, self.stats, retry_delay, self._ids)
        #: Listeners (callbacks and iterators) by (sender, event).
        self.table = self.registrations.table
        self.senders = self.registrations.senders
        self.requests = Requests()
        self._handshake_deadline = _INF
        self._next_tick = _INF
        self._offline_logged = False

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    def _set_state(self, state: State) -> None:
        self.state = self.registrations.state = state
        self._open = state is State.OPEN  # asked on every trigger: a plain bool

    # --- connection ---------------------------------------------------------

    def hello(self) -> bytes:
        """The HELLO body that opens a session."""
        ka = int(self.keepalive * 1000)
        return w.encode(w.Hello(self.name, CLIENT_MAX_BODY, ka, credentials=self.credentials))

    def start(self, link: Outbox) -> None:
        """A connection is up: send HELLO on it; the handshake must end in time."""
        now = self.clock()
        self.link = link
        self._set_state(State.HELLO_SENT)
        self.last_rx = self.last_tx = now
        self._handshake_deadline = now + self.handshake_timeout
        self._write(self.hello())

    def connection_lost(self) -> None:
        """The link is gone: nothing is registered, pending or due on it any more."""
        self._set_state(State.CLOSED)
        self.link = None
        self.registrations.connection_lost()
        self.requests.clear()
        self._handshake_deadline = self._next_tick = _INF

    def _write(self, body: bytes, urgent: bool = False) -> None:
        link = self.link
        if link is None:
            raise NotConnectedError("not connected to the gateway")
        self.last_tx = self.clock()
        link.send(body, urgent=urgent)

    def send(self, msg: w.Message, urgent: bool = False) -> None:
        """Encode and send one message (NotConnectedError without a link)."""
        self._write(w.encode(msg), urgent)

    # --- receiving ------------------------------------------------------------

    def receive(self, body: bytes) -> list[ClientEvent]:
        """Handle one body from the gateway; returns what the router must act on."""
        try:
            msg = w.decode(body)
        except RemoteProtocolError as exc:
            self.stats["bad_messages"] += 1
            logger.warning("gateway sent a bad message: %s", exc)
            return []
        handle = _HANDLERS.get(type(msg))
        if handle is None:
            logger.warning("unexpected %s from the gateway", type(msg).__name__)
            return []
        return handle(self, msg)

    def _on_event(self, msg: w.Event) -> list[ClientEvent]:
        return [EventReceived(msg.sender, msg.event, msg.data)]

    def _on_response(self, msg: w.Response) -> list[ClientEvent]:
        return [msg] if self.requests.answered(msg.request_id) else []

    def _on_welcome(self, msg: w.Welcome) -> list[ClientEvent]:
        if self.state is not State.HELLO_SENT:
            return []
        self.max_body = msg.max_body
        self._set_state(State.REPLAYING)
        self._handshake_deadline = self.clock() + self.handshake_timeout
        self.registrations.start_replay()
        return self._replayed()

    def _on_registered(self, msg: w.SenderRegistered | w.Listening) -> list[ClientEvent]:
        ref = msg.sender_ref if isinstance(msg, w.SenderRegistered) else msg.listener_id
        return self._answered(ref, None)

    def _on_error(self, msg: w.Error) -> list[ClientEvent]:
        # Only an ERROR about a REGISTER_SENDER or LISTEN answers a registration:
        # the ref of an ERROR about a TRIGGER is an event_ref, another kind of id.
        if msg.about in _REGISTRATIONS and msg.ref and self.registrations.awaits(msg.ref):
            return self._answered(msg.ref, registration_error(msg.code, msg.message))
        if self.state is State.HELLO_SENT and msg.code in _HELLO_REFUSALS:
            return [hello_refused(msg)]
        logger.warning("gateway error %s (ref %s): %s", msg.code, msg.ref, msg.message)
        return []

    def _on_ping(self, msg: w.Ping) -> list[ClientEvent]:
        self.send(w.Pong(msg.token))
        return []

    def _on_pong(self, msg: w.Pong) -> list[ClientEvent]:
        return []

    def _on_invite(self, msg: w.Invite) -> list[ClientEvent]:
        logger.info("gateway invites us to register again")
        return [Invited()]

    def _on_request(self, msg: w.Request) -> list[ClientEvent]:
        """Resolve a REQUEST to a handler, or answer it with the error here."""
        try:
            entry = self.senders.get(msg.sender)
            if entry is None:
                raise request_error_for(
                    ErrorCode.NO_SUCH_SENDER, f"no sender {msg.sender!r} on this client"
                )
            handler = resolve_handler(entry.sender.handlers, msg.sender, msg.method)
            try:
                params = unpack(msg.data)
            except DecodeError as exc:
                raise _Malformed(str(exc)) from None
        except RequestError as exc:
            self.respond_error(msg.request_id, msg.sender, msg.method, exc)
            return []
        return [RequestReceived(msg.request_id, msg.sender, msg.method, handler, params)]

    def _answered(self, ref: int, error: SigError | None) -> list[ClientEvent]:
        """A REGISTER_SENDER or LISTEN was answered (``error`` None: accepted)."""
        if not self.registrations.awaits(ref):
            return []
        if self.registrations.answered(ref, error, self.clock()):
            return [Registered(ref) if error is None else Refused(ref, error)]
        return self._replayed()

    def _replayed(self) -> list[ClientEvent]:
        """Open the session once the replay has nothing left to wait for."""
        if self.state is not State.REPLAYING or self.registrations.replay.waiting:
            return []
        now = self.clock()
        self._set_state(State.OPEN)
        self._handshake_deadline = _INF
        self._next_tick = now + self.keepalive / 2 if self.keepalive > 0 else _INF
        self._offline_logged = False
        refused = self.registrations.finish_replay(now)
        return [Opened(self.max_body, tuple((e.sender.name, exc) for e, exc in refused))]

    # --- registrations (kept in self.registrations) -------------------------------

    def add_sender(self, sender: Sender, meta: bytes = b"") -> int | None:
        """Keep a new sender (``meta``: sig.core.meta.encode_meta); the ref to wait for, if sent."""
        return self.registrations.add_sender(sender, meta)

    def confirm(self, name: str) -> int | None:
        """Register a refused sender again now (see :meth:`ClientRegistry.confirm`)."""
        return self.registrations.confirm(name)

    def remove_sender(self, name: str, *, tell: bool = True) -> bool:
        return self.registrations.remove_sender(name, tell=tell)

    def subscribe(
        self, callback: ListenerCallback, sender: str | None, event: str | None, options: int = 0
    ) -> tuple[Listener, int | None]:
        """Add a listener; returns it and the listener id to wait for, if a LISTEN went out."""
        return self.registrations.subscribe(callback, sender, event, options)

    def add_listener(self, listener: Listener) -> tuple[Listener, int | None]:
        return self.registrations.add_listener(listener)

    def unlisten(self, key: Key, *, tell: bool = True) -> None:
        self.registrations.unlisten(key, tell=tell)

    # --- triggers -----------------------------------------------------------------

    def trigger(self, sender: Sender, event: str, payload: bytes) -> None:
        """Send a TRIGGER of ``sender``; dropped and counted when offline or refused."""
        entry = self.senders.get(sender.name)
        if entry is None or entry.sender is not sender:
            raise NotConnectedError(f"sender {sender.name!r} was removed from this client")
        link = self.link
        if not self._open or link is None:
            self._drop_offline(sender.name)
            return
        if not entry.live:
            self._drop_unregistered(sender.name)
            return
        body = entry.prefixes[event] + payload
        if len(body) > self.max_body:
            raise EncodeError(
                f"event of {len(body)} bytes exceeds the gateway's limit of {self.max_body}"
            )
        self.stats["triggers"] += 1
        self.last_tx = self.clock()
        link.send(body)

    def _drop_offline(self, name: str) -> None:
        self.stats["dropped_offline"] += 1
        if not self._offline_logged:
            self._offline_logged = True
            logger.warning("not connected: dropping events of %s (counted in stats)", name)

    def _drop_unregistered(self, name: str) -> None:
        self.stats["dropped_unregistered"] += 1
        if self.stats["dropped_unregistered"] == 1:
            logger.warning(
                "sender %s is not registered on the gateway: dropping its events"
                " (counted in stats)",
                name,
            )

    # --- requests -----------------------------------------------------------------

    def request(self, sender: str, method: str, data: bytes, timeout: float) -> tuple[int, float]:
        """Send a REQUEST; returns its id and deadline (a Response or RequestTimedOut follows)."""
        if self.state is not State.OPEN:
            raise NotConnectedError("not connected to the gateway")
        rid = next(self._ids)
        deadline = self.clock() + timeout
        self.send(w.Request(rid, sender, method, data), urgent=True)
        self.requests.add(rid, deadline, sender, method, timeout)
        return rid, deadline

    def respond(self, request_id: int, sender: str, method: str, result: Any) -> None:
        """Answer a request we received with its handler's result."""
        try:
            data = pack(result)
        except EncodeError as exc:
            self.respond_error(request_id, sender, method, exc)
            return
        if self.state is State.OPEN:
            self.send(w.Response(request_id, ErrorCode.OK, "", data), urgent=True)

    def respond_error(self, request_id: int, sender: str, method: str, exc: BaseException) -> None:
        """Answer a request we received with the error its handler's exception stands for."""
        err = handler_error(exc, sender, method)
        if self.state is State.OPEN:
            text = str(err)[:MAX_ERROR_TEXT]
            self.send(w.Response(request_id, int(err.code), text, b""), urgent=True)

    # --- time -------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`poll` has something to do next (inf: nothing is due)."""
        due = min(self._handshake_deadline, self._next_tick, self.requests.next_deadline())
        return self.registrations.next_retry(due) if self.state is State.OPEN else due

    def poll(self, now: float) -> list[ClientEvent]:
        """Run the timers due at ``now``: handshake, requests, keepalive, retries."""
        if now >= self._handshake_deadline:
            reason = (
                "gateway did not answer HELLO"
                if self.state is State.HELLO_SENT
                else "gateway did not answer the registrations"
            )
            self._handshake_deadline = _INF
            return [HandshakeFailed(reason)]
        events: list[ClientEvent] = list(self.requests.expire(now))
        if self.state is State.OPEN:
            self.registrations.retry_refused(now)
            if now >= self._next_tick:
                events += self._keepalive(now)
        return events

    def _keepalive(self, now: float) -> list[ClientEvent]:
        interval = self.keepalive
        self._next_tick = now + interval / 2
        silent = now - self.last_rx
        if silent > LINK_TIMEOUT_KEEPALIVES * interval:
            logger.warning("gateway silent for %.1f s, reconnecting", silent)
            self._next_tick = _INF
            return [LinkTimeout(silent)]
        if now - self.last_tx >= interval:
            self.send(w.Ping(0))
        return []


def hello_refused(msg: w.Error) -> HandshakeFailed:
    """The gateway answered our HELLO with an ERROR (NOT_AUTHORISED, BUSY): no session."""
    error = request_error_for(msg.code, f"the gateway refused HELLO: {msg.message}")
    return HandshakeFailed(str(error), error)


#: The message types whose ERROR answers a registration (PROTOCOL.md section 2, "Errors").
_REGISTRATIONS = frozenset({w.MessageType.REGISTER_SENDER, w.MessageType.LISTEN})


def registration_error(code: int, message: str) -> SigError:
    """The exception an ERROR answering a REGISTER_SENDER or LISTEN stands for."""
    if code == ErrorCode.DUPLICATE_SENDER:
        return DuplicateSenderError(message)
    if code == ErrorCode.INVALID_NAME:
        return InvalidNameError(message)
    return request_error_for(code, message)


#: ERROR codes that answer our HELLO: no session on this connection.
_HELLO_REFUSALS = frozenset({ErrorCode.NOT_AUTHORISED, ErrorCode.BUSY})


class _Malformed(RequestError):
    """The request's params are not one CBOR item (answered as MALFORMED)."""

    code = ErrorCode.MALFORMED


def _on_retained(session: ClientSession, msg: w.Retained) -> list[ClientEvent]:
    """RETAINED: for the listeners of the LISTEN it follows (the last one answered)."""
    regs = session.registrations
    key, only = regs.retained_key, regs.retained_only
    return [RetainedReceived(msg.sender, msg.event, msg.data, msg.stale, key, only)]


def _on_listening(session: ClientSession, msg: w.Listening) -> list[ClientEvent]:
    session.registrations.listening(msg.listener_id)
    return session._on_registered(msg)


_Handler = Callable[[ClientSession, Any], list[ClientEvent]]
#: What the session does with each message type the gateway may send.
_HANDLERS: dict[type, _Handler] = {
    w.Event: ClientSession._on_event,
    w.Retained: _on_retained,
    w.Response: ClientSession._on_response,
    w.Request: ClientSession._on_request,
    w.SenderRegistered: ClientSession._on_registered,
    w.Listening: _on_listening,
    w.Error: ClientSession._on_error,
    w.Welcome: ClientSession._on_welcome,
    w.Ping: ClientSession._on_ping,
    w.Pong: ClientSession._on_pong,
    w.Invite: ClientSession._on_invite,
}

__all__ = [
    "ClientEvent",
    "ClientSession",
    "EventReceived",
    "HandshakeFailed",
    "Invited",
    "LinkTimeout",
    "Opened",
    "Refused",
    "Registered",
    "RequestReceived",
    "RequestTimedOut",
    "Response",
    "RetainedReceived",
    "SenderEntry",
    "State",
    "registration_error",
]
