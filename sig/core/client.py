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
* the registry of senders (their refs and TRIGGER prefixes) and of listeners
  (a routing table, and one listener id per listened key);
* refusals at a replay (a sender whose name was taken while we were away): it
  is told in :class:`Opened`, its triggers are dropped and counted, and it is
  registered again with backoff from ``poll`` until the gateway says yes;
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
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from sig.core.endpoints import (
    Listener,
    ListenerCallback,
    RequestHandler,
    Sender,
    check_listener_args,
    handler_error,
    resolve_handler,
    subscribe_listener,
)
from sig.core.routing import Key, RoutingTable
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
from sig.protocol.data import pack, unpack

logger = logging.getLogger(__name__)

#: The body size we accept from the gateway (announced in HELLO).
CLIENT_MAX_BODY = 65535
#: The link is dead after this many keepalive intervals without a frame.
LINK_TIMEOUT_KEEPALIVES = 3
#: Error text of a RESPONSE at most (characters).
MAX_ERROR_TEXT = 500
#: Lazy heap entries tolerated beyond the pending requests before a rebuild.
HEAP_SLACK = 1024


class State(Enum):
    """Where the session is; only OPEN carries triggers, requests and keepalive."""

    CLOSED = "closed"  #: no link
    HELLO_SENT = "hello sent"  #: waiting for WELCOME
    REPLAYING = "replaying"  #: WELCOME came; registrations are being answered
    OPEN = "open"


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
    """The gateway did not answer HELLO or the replay in time: drop the link."""

    reason: str


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
    | RequestReceived
    | RequestTimedOut
    | LinkTimeout
    | Invited
    | w.Response
)


@dataclass(eq=False)
class SenderEntry:
    """One of our senders and what the gateway knows it by."""

    sender: Sender
    ref: int
    event_refs: dict[str, int]
    prefixes: dict[str, bytes]  # event -> TRIGGER header + event_ref varint
    #: Registered (or being registered) on the current connection; False after
    #: the gateway refused it (name taken meanwhile): its triggers are dropped.
    live: bool = False
    #: When to register it again after a refusal (None: no retry is due).
    retry_at: float | None = None
    #: Registrations tried again since the refusal.
    attempts: int = 0
    #: REGISTER_SENDER sent under ``ref`` and not answered yet.
    in_flight: bool = False


@dataclass
class _Replay:
    """What the replay after WELCOME still waits for, and what it was refused."""

    waiting: set[int] = field(default_factory=set)
    refused: list[tuple[SenderEntry, SigError]] = field(default_factory=list)


def new_stats() -> dict[str, int]:
    """The client's counters (the router's ``stats`` is this dict)."""
    return {
        "events_in": 0,
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
        stats: dict[str, int] | None = None,
    ) -> None:
        """``retry_delay(attempt)``: seconds before registering a refused sender again."""
        self.name = name
        self.keepalive = keepalive
        self.handshake_timeout = handshake_timeout
        self.retry_delay = retry_delay
        self.clock = clock
        self.stats = new_stats() if stats is None else stats
        self.state = State.CLOSED
        self.link: Outbox | None = None
        #: The gateway's largest body (from WELCOME).
        self.max_body = CLIENT_MAX_BODY
        self.last_rx = self.last_tx = 0.0
        #: Listeners (callbacks and iterators) by (sender, event).
        self.table: RoutingTable[Listener] = RoutingTable()
        self.senders: dict[str, SenderEntry] = {}
        self.listen_ids: dict[Key, int] = {}
        self._ids = itertools.count(1)
        self._by_ref: dict[int, SenderEntry] = {}
        self._listen_keys: dict[int, Key] = {}
        self._awaiting: set[int] = set()  # REGISTER_SENDER / LISTEN refs not answered yet
        self._replay = _Replay()
        self._handshake_deadline = float("inf")
        self._next_tick = float("inf")
        #: request id -> (deadline, sender, method, timeout)
        self._requests: dict[int, tuple[float, str, str, float]] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._offline_logged = False

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    # --- connection ---------------------------------------------------------

    def hello(self) -> bytes:
        """The HELLO body that opens a session."""
        return w.encode(w.Hello(self.name, CLIENT_MAX_BODY, int(self.keepalive * 1000)))

    def start(self, link: Outbox) -> None:
        """A connection is up: send HELLO on it; the handshake must end in time."""
        now = self.clock()
        self.link = link
        self.state = State.HELLO_SENT
        self.last_rx = self.last_tx = now
        self._handshake_deadline = now + self.handshake_timeout
        self._write(self.hello())

    def connection_lost(self) -> None:
        """The link is gone: nothing is registered, pending or due on it any more."""
        self.state = State.CLOSED
        self.link = None
        for entry in self.senders.values():
            entry.live = entry.in_flight = False
            entry.retry_at = None
        self._awaiting.clear()
        self._replay = _Replay()
        self._requests.clear()
        self._deadlines.clear()
        self._handshake_deadline = self._next_tick = float("inf")

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
        if self._requests.pop(msg.request_id, None) is None:
            return []  # timed out already, or never ours
        return [msg]

    def _on_welcome(self, msg: w.Welcome) -> list[ClientEvent]:
        if self.state is not State.HELLO_SENT:
            return []
        self.max_body = msg.max_body
        self.state = State.REPLAYING
        self._handshake_deadline = self.clock() + self.handshake_timeout
        for entry in list(self.senders.values()):
            self._register(entry, optimistic=True)
            self._replay.waiting.add(entry.ref)
        for key, lid in list(self.listen_ids.items()):
            self._listen(lid, key)
            self._replay.waiting.add(lid)
        return self._replay_step()

    def _on_registered(self, msg: w.SenderRegistered | w.Listening) -> list[ClientEvent]:
        ref = msg.sender_ref if isinstance(msg, w.SenderRegistered) else msg.listener_id
        return self._answered(ref, None)

    def _on_error(self, msg: w.Error) -> list[ClientEvent]:
        if msg.ref and msg.ref in self._awaiting:
            return self._answered(msg.ref, registration_error(msg.code, msg.message))
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

    # --- registrations ----------------------------------------------------------

    def _answered(self, ref: int, error: SigError | None) -> list[ClientEvent]:
        """A REGISTER_SENDER or LISTEN was answered (``error`` None: accepted)."""
        if ref not in self._awaiting:
            return []
        self._awaiting.discard(ref)
        entry = self._by_ref.get(ref)
        if entry is not None:
            entry.in_flight = False
            entry.live = error is None
            if entry.attempts:
                self._retried(entry, error)
        if ref in self._replay.waiting:
            self._replay.waiting.discard(ref)
            if error is not None:
                self._replay_refused(ref, entry, error)
            return self._replay_step()
        return [Registered(ref) if error is None else Refused(ref, error)]

    def _replay_refused(self, ref: int, entry: SenderEntry | None, error: SigError) -> None:
        if entry is not None:
            self._replay.refused.append((entry, error))
        else:
            key = self._listen_keys.get(ref)
            logger.error("re-registering listener %r failed: %s", key, error)

    def _replay_step(self) -> list[ClientEvent]:
        """Open the session once the replay has nothing left to wait for."""
        if self.state is not State.REPLAYING or self._replay.waiting:
            return []
        now = self.clock()
        self.state = State.OPEN
        self._handshake_deadline = float("inf")
        self._next_tick = now + self.keepalive / 2 if self.keepalive > 0 else float("inf")
        self._offline_logged = False
        refused, self._replay = self._replay.refused, _Replay()
        for entry, exc in refused:
            self._refused_at_replay(entry, exc, now)
        return [Opened(self.max_body, tuple((e.sender.name, exc) for e, exc in refused))]

    def _refused_at_replay(self, entry: SenderEntry, exc: SigError, now: float) -> None:
        """Count and log a refusal, and plan the retries unless the name is bad."""
        self.stats["senders_refused"] += 1
        retry = not isinstance(exc, InvalidNameError)  # a bad name stays bad
        logger.warning(
            "gateway refused sender %r at reconnect: %s; %s (its triggers are dropped"
            " and counted in stats['dropped_unregistered'])",
            entry.sender.name,
            exc,
            "registering it again with backoff" if retry else "not retrying",
        )
        if retry:
            entry.attempts = 0
            entry.retry_at = now + self.retry_delay(0)

    def _retried(self, entry: SenderEntry, error: SigError | None) -> None:
        """The answer to a registration tried again after a refusal."""
        name = entry.sender.name
        if error is None:
            logger.info("sender %r registered again after %d attempt(s)", name, entry.attempts)
            entry.attempts = 0
        elif isinstance(error, InvalidNameError):
            logger.warning("sender %r refused for good: %s", name, error)
            entry.attempts = 0
        else:
            logger.debug("sender %r still refused (attempt %d): %s", name, entry.attempts, error)
            entry.retry_at = self.clock() + self.retry_delay(entry.attempts)

    def _register(self, entry: SenderEntry, optimistic: bool) -> None:
        """Send REGISTER_SENDER (once per sender in flight).

        ``optimistic``: the sender is live at once (TRIGGERs may follow
        REGISTER_SENDER, PROTOCOL.md 3.2); otherwise only once it is accepted.
        """
        if entry.in_flight:
            return
        s = entry.sender
        msg = w.RegisterSender(
            entry.ref,
            s.name,
            tuple((r, e) for e, r in entry.event_refs.items()),
            s.methods,
            s.default_handler,
        )
        entry.in_flight = True
        if optimistic:
            entry.live = True
        self._awaiting.add(entry.ref)
        self.send(msg)

    def _listen(self, lid: int, key: Key) -> None:
        self._awaiting.add(lid)
        self.send(w.Listen(lid, *key))

    def add_sender(self, sender: Sender) -> int | None:
        """Keep a new sender; returns the ref to wait for when a REGISTER_SENDER was sent."""
        refs = {e: next(self._ids) for e in sender.events}
        entry = SenderEntry(
            sender,
            next(self._ids),
            refs,
            {e: bytes([w.MessageType.TRIGGER]) + _varint(r) for e, r in refs.items()},
        )
        self.senders[sender.name] = entry
        self._by_ref[entry.ref] = entry
        if self.state is State.REPLAYING:  # registered with the replay: told in Opened
            self._register(entry, optimistic=True)
            self._replay.waiting.add(entry.ref)
            return None
        if self.state is not State.OPEN:
            return None
        self._register(entry, optimistic=True)
        return entry.ref

    def confirm(self, name: str) -> int | None:
        """Register a refused sender again now; it goes live only once accepted.

        Unlike a first registration, nothing is sent for it before the gateway
        said yes: while refused, its triggers stay counted as dropped_unregistered
        instead of reaching the gateway as TRIGGERs of an unknown ref. Returns
        the ref to wait for (None when the session is not open or it is live).
        """
        entry = self.senders.get(name)
        if entry is None or entry.live or self.state is not State.OPEN:
            return None
        entry.retry_at = None
        self._register(entry, optimistic=False)
        return entry.ref

    def remove_sender(self, name: str, *, tell: bool = True) -> bool:
        """Forget a sender (UNREGISTER_SENDER when open and ``tell``)."""
        entry = self.senders.pop(name, None)
        if entry is None:
            return False
        self._by_ref.pop(entry.ref, None)
        self._awaiting.discard(entry.ref)
        entry.live = False
        if tell and self.state is State.OPEN:
            self.send(w.UnregisterSender(entry.ref))
        return True

    def subscribe(
        self, callback: ListenerCallback, sender: str | None, event: str | None
    ) -> tuple[Listener, int | None]:
        """Add a listener (the existing one for the same callback and key).

        Returns it and the listener id to wait for when a LISTEN was sent.
        """
        check_listener_args(callback, sender, event)
        for existing in self.table.subscribers(sender, event):
            if existing.callback == callback:
                return existing, None
        return self.add_listener(subscribe_listener(self.table, callback, sender, event))

    def add_listener(self, listener: Listener) -> tuple[Listener, int | None]:
        """Listen to a listener's key on the gateway (once per key); it is in the table."""
        key = (listener.sender, listener.event)
        if key in self.listen_ids:
            return listener, None
        lid = next(self._ids)
        self.listen_ids[key] = lid
        self._listen_keys[lid] = key
        if self.state is State.REPLAYING:
            self._listen(lid, key)
            self._replay.waiting.add(lid)
        elif self.state is State.OPEN:
            self._listen(lid, key)
            return listener, lid
        return listener, None

    def unlisten(self, key: Key, *, tell: bool = True) -> None:
        """Stop listening to ``key`` on the gateway once no listener of it is left."""
        if self.table.subscribers(*key):
            return
        lid = self.listen_ids.pop(key, None)
        if lid is None:
            return
        self._listen_keys.pop(lid, None)
        self._awaiting.discard(lid)
        if tell and self.state is State.OPEN:
            self.send(w.Unlisten(lid))

    # --- triggers -----------------------------------------------------------------

    def trigger(self, sender: Sender, event: str, payload: bytes) -> None:
        """Send a TRIGGER of ``sender``; dropped and counted when offline or refused."""
        entry = self.senders.get(sender.name)
        if entry is None or entry.sender is not sender:
            raise NotConnectedError(f"sender {sender.name!r} was removed from this client")
        link = self.link
        if self.state is not State.OPEN or link is None:
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
        self._requests[rid] = (deadline, sender, method, timeout)
        heapq.heappush(self._deadlines, (deadline, rid))
        if len(self._deadlines) > 2 * len(self._requests) + HEAP_SLACK:
            self._deadlines = [(p[0], r) for r, p in self._requests.items()]
            heapq.heapify(self._deadlines)
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
        due = min(self._handshake_deadline, self._next_tick)
        if self._deadlines:
            due = min(due, self._deadlines[0][0])
        for entry in self.senders.values():
            if entry.retry_at is not None and entry.retry_at < due:
                due = entry.retry_at
        return due

    def poll(self, now: float) -> list[ClientEvent]:
        """Run the timers due at ``now``: handshake, requests, keepalive, retries."""
        if now >= self._handshake_deadline:
            reason = (
                "gateway did not answer HELLO"
                if self.state is State.HELLO_SENT
                else "gateway did not answer the registrations"
            )
            self._handshake_deadline = float("inf")
            return [HandshakeFailed(reason)]
        events: list[ClientEvent] = self._expire_requests(now)
        if self.state is State.OPEN:
            self._retry_refused(now)
            if now >= self._next_tick:
                events += self._keepalive(now)
        return events

    def _expire_requests(self, now: float) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, rid = heapq.heappop(deadlines)
            pending = self._requests.get(rid)
            if pending is None or pending[0] > now:
                continue  # answered already (a lazy heap entry)
            del self._requests[rid]
            _, sender, method, wait = pending
            error = RequestTimeout(f"no response from {sender}.{method} within {wait} s")
            events.append(RequestTimedOut(rid, error))
        return events

    def _keepalive(self, now: float) -> list[ClientEvent]:
        interval = self.keepalive
        self._next_tick = now + interval / 2
        silent = now - self.last_rx
        if silent > LINK_TIMEOUT_KEEPALIVES * interval:
            logger.warning("gateway silent for %.1f s, reconnecting", silent)
            self._next_tick = float("inf")
            return [LinkTimeout(silent)]
        if now - self.last_tx >= interval:
            self.send(w.Ping(0))
        return []

    def _retry_refused(self, now: float) -> None:
        for entry in list(self.senders.values()):
            if entry.retry_at is not None and entry.retry_at <= now:
                entry.retry_at = None
                entry.attempts += 1
                self._register(entry, optimistic=False)


def registration_error(code: int, message: str) -> SigError:
    """The exception an ERROR answering a REGISTER_SENDER or LISTEN stands for."""
    if code == ErrorCode.DUPLICATE_SENDER:
        return DuplicateSenderError(message)
    if code == ErrorCode.INVALID_NAME:
        return InvalidNameError(message)
    return request_error_for(code, message)


class _Malformed(RequestError):
    """The request's params are not one CBOR item (answered as MALFORMED)."""

    code = ErrorCode.MALFORMED


def _varint(value: int) -> bytes:
    out = bytearray()
    w.write_varint(out, value)
    return bytes(out)


_Handler = Callable[[ClientSession, Any], list[ClientEvent]]
#: What the session does with each message type the gateway may send.
_HANDLERS: dict[type, _Handler] = {
    w.Event: ClientSession._on_event,
    w.Response: ClientSession._on_response,
    w.Request: ClientSession._on_request,
    w.SenderRegistered: ClientSession._on_registered,
    w.Listening: ClientSession._on_registered,
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
    "RequestHandler",
    "RequestReceived",
    "RequestTimedOut",
    "Response",
    "SenderEntry",
    "State",
    "registration_error",
]
