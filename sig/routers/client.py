"""AsyncClientRouter: an application's connection to a gateway (asyncio API).

The client keeps its own registry of senders and listeners and replays it
after every (re)connect, before it calls ``on_connected``. Registrations are
idempotent: adding a sender that already exists with the same events, or the
same callback for the same (sender, event) again, returns the existing object.
So code written in the seed's style, which registers inside ``on_connected``,
and code that registers once up front both end up with one registration each.

A sender the gateway refuses at a replay (its name was taken meanwhile) is
not dropped in silence: the client logs it once, calls ``on_sender_refused``,
counts its triggers in ``dropped_unregistered``, and registers it again with
backoff until it gets the name back or the application removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from carriers.stream import StreamLink
from carriers.tcp import connect_tcp
from sig.compat import SeedSender
from sig.core.endpoints import (
    Handlers,
    Listener,
    ListenerCallback,
    Sender,
    check_listener_args,
    check_sender_args,
    resolve_handler,
)
from sig.core.routing import Key, RoutingTable
from sig.errors import (
    ConnectError,
    ConnectionLost,
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
from sig.protocol.constants import DEFAULT_PORT, GATEWAY_SENDER
from sig.protocol.data import pack, unpack

logger = logging.getLogger(__name__)

#: Items asked for per page of a ``$gateway`` listing (the gateway may send fewer).
PAGE_LIMIT = 500
#: Pages fetched at most for one listing (a bound against a gateway that never ends).
MAX_PAGES = 100_000


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``maximum``, +/- ``jitter`` (a fraction)."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


DEFAULT_BACKOFF = Backoff()
#: Listener calls that may wait for a slow callback before new ones are dropped.
DEFAULT_MAX_QUEUED_EVENTS = 10_000


@dataclass
class _SenderEntry:
    sender: Sender
    ref: int
    event_refs: dict[str, int]
    prefixes: dict[str, bytes]  # event -> TRIGGER header + event_ref varint
    #: Registered (or being registered) on the current connection; False after
    #: the gateway refused it (name taken meanwhile): its triggers are dropped.
    live: bool = False
    #: The task registering it again after a refusal (None when there is none).
    retry: asyncio.Future[Any] | None = None


Dispatch = Callable[[Callable[..., Any], tuple[Any, ...]], None]
#: ``on_sender_refused(name, error)``: the gateway refused a sender at a replay.
SenderRefused = Callable[[str, SigError], Any]


class AsyncClientRouter:
    """Connects to a gateway; senders, listeners and requests over the network.

    ``host=None`` finds the gateway on the LAN instead (mDNS ``_sig._tcp``, see
    :func:`sig.discover`): :meth:`connect` takes the first one that answers
    within ``connect_timeout``, its address and port, and keeps them for
    reconnects. The default stays ``127.0.0.1``.
    """

    def __init__(
        self,
        host: str | None = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        name: str | None = None,
        auto_reconnect: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        keepalive: float = 10.0,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
    ) -> None:
        """``max_queued_events``: coroutine listener callbacks that may be pending
        at once; above it new listener calls are dropped and counted in
        ``stats["dropped_slow_listener"]`` (hooks and request handlers never are)."""
        if max_queued_events < 1:
            raise ValueError("max_queued_events must be at least 1")
        #: Find the gateway by mDNS at connect() (``host=None``).
        self.discover = host is None
        self.host = host or ""
        self.port = port
        self.name = name or f"client-{os.getpid()}"
        self.auto_reconnect = auto_reconnect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.keepalive = keepalive
        #: Called (no arguments) after every (re)connect, once registrations are replayed.
        self.on_connected: Callable[[], Any] | None = None
        #: Called (no arguments) when an established connection is lost.
        self.on_disconnected: Callable[[], Any] | None = None
        #: Called with (sender name, error) when the gateway refuses one of our
        #: senders at a reconnect (its name was taken meanwhile); the client keeps
        #: registering it again with ``backoff`` until it succeeds or is removed.
        self.on_sender_refused: SenderRefused | None = None
        self.max_queued_events = max_queued_events
        self.stats = {
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
        }
        self._ids = itertools.count(1)
        self._senders: dict[str, _SenderEntry] = {}
        self._table: RoutingTable[Listener] = RoutingTable()
        self._listen_ids: dict[Key, int] = {}
        self._waiters: dict[int, asyncio.Future[w.Message]] = {}
        self._requests: dict[int, asyncio.Future[w.Response]] = {}
        self._link: StreamLink | None = None
        self._welcome: asyncio.Future[w.Welcome] | None = None
        self._gateway_max_body = 65535
        self._connected = False
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_rx = 0.0
        self._last_tx = 0.0
        self._offline_logged = False
        self._slow_logged = False
        self._refused: list[tuple[_SenderEntry, SigError]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._callback_tasks: set[asyncio.Future[Any]] = set()
        #: How the hooks (on_connected, on_disconnected, on_sender_refused) are run;
        #: never dropped (the sync API swaps it for its dispatcher thread).
        self.dispatch: Dispatch = self._dispatch_inline
        #: How listener callbacks are run: bounded, drops counted (the sync API swaps it).
        self.dispatch_event: Dispatch = self._dispatch_event_inline
        #: How a request handler is run: returns its result, or an awaitable of it.
        self.run_handler: Callable[[Callable[[Any], Any], Any], Any] = self._run_inline

    # --- connection -------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        """Connect and register; returns once connected.

        With ``auto_reconnect`` (the default) it keeps trying in the background;
        without it, a failed first attempt raises :class:`sig.ConnectError`.
        """
        if self._runner is not None and not self._runner.done():
            raise SigError("connect() was already called")
        self._loop = asyncio.get_running_loop()
        self._closing = False
        if self.discover and not self.host:
            await self._discover_gateway()
        first: asyncio.Future[None] = self._loop.create_future()
        self._runner = asyncio.create_task(self._run(first), name=f"sig-client-{self.name}")
        await first

    async def _discover_gateway(self) -> None:
        """Take the first gateway found on the LAN as host and port (ConnectError if none)."""
        from sig.routers.discovery import find_gateway

        gateway = await find_gateway(self.connect_timeout)
        self.host, self.port = gateway.host, gateway.port
        logger.info("discovered gateway %r at %s:%s", gateway.name, self.host, self.port)

    async def close(self) -> None:
        """Disconnect for good (no reconnect)."""
        self._closing = True
        link = self._link
        if link is not None:
            link.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            if link is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(link.closed.wait(), 2.0)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> AsyncClientRouter:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (and registrations replayed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._connected:
            if deadline is not None and time.monotonic() > deadline:
                raise ConnectError(f"not connected to {self.host}:{self.port} within {timeout} s")
            await asyncio.sleep(0.02)

    async def _run(self, first: asyncio.Future[None]) -> None:
        attempt = 0
        while not self._closing:
            link = None
            try:
                link = await connect_tcp(self, self.host, self.port, self.connect_timeout)
                self._link = link
                await self._handshake(link)
            except (ConnectError, SigError, OSError) as exc:
                if link is not None:
                    link.abort()  # never leave a half-registered connection behind
                self._drop_link()
                if not self.auto_reconnect:
                    if not first.done():
                        first.set_exception(
                            exc if isinstance(exc, SigError) else ConnectError(str(exc))
                        )
                    return
                delay = self.backoff.delay(attempt)
                attempt += 1
                logger.info(
                    "cannot reach gateway %s:%s (%s); retrying in %.1f s",
                    self.host,
                    self.port,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._connected = True
            self._offline_logged = False
            if not first.done():
                first.set_result(None)
            else:
                self.stats["reconnects"] += 1
            logger.info("connected to gateway %s:%s", self.host, self.port)
            self._tell_refused(link)
            if self.on_connected is not None:
                self.dispatch(self.on_connected, ())
            keepalive = asyncio.create_task(self._keepalive(link))
            try:
                await link.closed.wait()
            finally:
                keepalive.cancel()
                was_connected = self._connected
                self._drop_link()
            if was_connected:
                logger.info("disconnected from gateway %s:%s", self.host, self.port)
                if self.on_disconnected is not None:
                    self.dispatch(self.on_disconnected, ())
            if not self.auto_reconnect:
                return
            await asyncio.sleep(self.backoff.delay(0))

    async def _handshake(self, link: StreamLink) -> None:
        assert self._loop is not None
        self._welcome = self._loop.create_future()
        self._send(w.Hello(self.name, 65535, int(self.keepalive * 1000)))
        try:
            welcome = await asyncio.wait_for(self._welcome, self.connect_timeout)
        except asyncio.TimeoutError:
            link.close()
            raise ConnectError("gateway did not answer HELLO") from None
        self._gateway_max_body = welcome.max_body
        self._refused = []
        waits: list[tuple[Any, asyncio.Future[w.Message]]] = []
        for entry in list(self._senders.values()):
            waits.append((entry, self._register(entry)))
        for key, lid in list(self._listen_ids.items()):
            waits.append((key, self._expect(lid, w.Listen(lid, *key))))
        for what, fut in waits:
            try:
                await asyncio.wait_for(fut, self.connect_timeout)
            except (RequestError, DuplicateSenderError, InvalidNameError) as exc:
                if isinstance(what, _SenderEntry):
                    what.live = False
                    self._refused.append((what, exc))  # told once the session is up
                else:
                    logger.error("re-registering %s failed: %s", _describe(what), exc)
            except asyncio.TimeoutError:
                link.close()
                raise ConnectError("gateway did not answer the registrations") from None

    def _drop_link(self) -> None:
        self._connected = False
        self._link = None
        for entry in self._senders.values():
            entry.live = False
        lost = ConnectionLost("connection to the gateway was lost")
        for fut in list(self._waiters.values()) + list(self._requests.values()):
            if not fut.done():
                fut.set_exception(lost)
                fut.exception()  # mark retrieved: nobody may be waiting any more
        self._waiters.clear()
        self._requests.clear()

    async def _keepalive(self, link: StreamLink) -> None:
        interval = self.keepalive
        if interval <= 0:
            return
        while not link.closed.is_set():
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            if now - self._last_rx > 3 * interval:
                logger.warning("gateway silent for %.1f s, reconnecting", now - self._last_rx)
                link.abort()
                return
            if now - self._last_tx >= interval:
                self._send(w.Ping(0))

    # --- FrameHandler -----------------------------------------------------

    def link_up(self, link: StreamLink) -> None:
        self._last_rx = self._last_tx = time.monotonic()

    def link_down(self, link: StreamLink, exc: BaseException | None) -> None:
        if exc is not None:
            logger.debug("link to gateway lost: %s", exc)

    def frames(self, link: StreamLink, bodies: list[bytes]) -> None:
        self._last_rx = time.monotonic()
        for body in bodies:
            if body[0] == _EVENT:  # the hot path: no message object for an EVENT
                fields = w.split_event(body)
                if fields is not None:
                    self._on_event(*fields)
                    continue
            try:
                msg = w.decode(body)
            except RemoteProtocolError as exc:
                logger.warning("gateway sent a bad message: %s", exc)
                continue
            if isinstance(msg, w.Event):
                self._on_event(msg.sender, msg.event, msg.data)
            elif isinstance(msg, w.Response):
                fut = self._requests.pop(msg.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif isinstance(msg, w.Request):
                self._on_request(msg)
            elif isinstance(msg, (w.SenderRegistered, w.Listening)):
                ref = msg.sender_ref if isinstance(msg, w.SenderRegistered) else msg.listener_id
                waiter = self._waiters.pop(ref, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
            elif isinstance(msg, w.Error):
                self._on_error(msg)
            elif isinstance(msg, w.Welcome):
                if self._welcome is not None and not self._welcome.done():
                    self._welcome.set_result(msg)
            elif isinstance(msg, w.Ping):
                self._send(w.Pong(msg.token))
            elif isinstance(msg, w.Invite):
                logger.info("gateway invites us to register again")
                link.close()  # the reconnect path replays everything
            elif not isinstance(msg, w.Pong):
                logger.warning("unexpected %s from the gateway", type(msg).__name__)

    def _on_error(self, msg: w.Error) -> None:
        waiter = self._waiters.pop(msg.ref, None) if msg.ref else None
        if waiter is not None and not waiter.done():
            exc: SigError
            if msg.code == ErrorCode.DUPLICATE_SENDER:
                exc = DuplicateSenderError(msg.message)
            elif msg.code == ErrorCode.INVALID_NAME:
                exc = InvalidNameError(msg.message)
            else:
                exc = request_error_for(msg.code, msg.message)
            waiter.set_exception(exc)
            return
        logger.warning("gateway error %s (ref %s): %s", msg.code, msg.ref, msg.message)

    def _on_event(self, sender: str, event: str, data: bytes) -> None:
        self.stats["events_in"] += 1
        listeners = self._table.match(sender, event)
        if not listeners:
            return  # data nobody listens to is never decoded
        try:
            value = unpack(data)
        except DecodeError as exc:
            self.stats["bad_data"] += 1
            logger.warning("dropping %s:%s: %s", sender, event, exc)
            return
        dispatch = self.dispatch_event
        for listener in listeners:  # each callback gets its own info dict
            dispatch(listener.callback, ({"sender": sender, "event": event}, value))

    def _on_request(self, msg: w.Request) -> None:
        """Answer a REQUEST for one of our senders; inline unless the handler is async."""
        entry = self._senders.get(msg.sender)
        try:
            if entry is None:
                raise request_error_for(
                    ErrorCode.NO_SUCH_SENDER, f"no sender {msg.sender!r} on this client"
                )
            handler = resolve_handler(entry.sender.handlers, msg.sender, msg.method)
            try:
                params = unpack(msg.data)
            except DecodeError as exc:
                raise _Malformed(str(exc)) from None
            result = self.run_handler(handler, params)
        except Exception as exc:
            self._respond_error(msg, exc)
            return
        if inspect.isawaitable(result):
            self._spawn(self._await_handler(msg, result))
        else:
            self._respond(msg, result)

    async def _await_handler(self, msg: w.Request, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._respond_error(msg, exc)
        else:
            self._respond(msg, result)

    def _respond(self, msg: w.Request, result: Any) -> None:
        try:
            data = pack(result)
        except EncodeError as exc:
            self._respond_error(msg, exc)
            return
        if self._connected:
            self._send(w.Response(msg.request_id, ErrorCode.OK, "", data), urgent=True)

    def _respond_error(self, msg: w.Request, exc: Exception) -> None:
        if isinstance(exc, RequestError):
            status, message = int(exc.code), str(exc)
        else:
            logger.error("request handler %s.%s raised", msg.sender, msg.method, exc_info=exc)
            status, message = ErrorCode.HANDLER_ERROR, f"{type(exc).__name__}: {exc}"
        if self._connected:
            self._send(w.Response(msg.request_id, status, message[:500], b""), urgent=True)

    # --- refused senders --------------------------------------------------

    def _tell_refused(self, link: StreamLink) -> None:
        """Report the senders refused at this replay, and start winning them back."""
        refused, self._refused = self._refused, []
        for entry, exc in refused:
            name = entry.sender.name
            self.stats["senders_refused"] += 1
            retry = not isinstance(exc, InvalidNameError)  # a bad name stays bad
            logger.warning(
                "gateway refused sender %r at reconnect: %s; %s (its triggers are dropped"
                " and counted in stats['dropped_unregistered'])",
                name,
                exc,
                "registering it again with backoff" if retry else "not retrying",
            )
            if self.on_sender_refused is not None:
                self.dispatch(self.on_sender_refused, (name, exc))
            if retry and (entry.retry is None or entry.retry.done()):
                entry.retry = self._spawn(self._win_back(entry, link))

    async def _win_back(self, entry: _SenderEntry, link: StreamLink) -> None:
        """Register ``entry`` again with backoff until it is live, removed, or the link is gone.

        A new connection replays every sender anyway, so this ends with its link.
        """
        name = entry.sender.name
        attempt = 0
        while True:
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1
            if entry.live or self._senders.get(name) is not entry or self._link is not link:
                return
            try:
                await self._confirm(entry)
            except InvalidNameError as exc:
                logger.warning("sender %r refused for good: %s", name, exc)
                return
            except (SigError, asyncio.TimeoutError) as exc:  # taken, busy, or link going
                logger.debug("sender %r still refused (attempt %d): %s", name, attempt, exc)
                continue
            logger.info("sender %r registered again after %d attempt(s)", name, attempt)
            return

    async def _confirm(self, entry: _SenderEntry) -> None:
        """Register ``entry`` and wait for the answer; it goes live only once accepted.

        Unlike a first registration, nothing is sent for it before the gateway
        said yes: while refused, its triggers stay counted as dropped_unregistered
        instead of reaching the gateway as TRIGGERs of an unknown ref.
        """
        fut = self._register(entry, optimistic=False)
        await asyncio.wait_for(asyncio.shield(fut), self.request_timeout)

    # --- senders ----------------------------------------------------------

    async def add_sender(
        self, name: str, events: Iterable[str], requests: Handlers | None = None
    ) -> Sender:
        """Declare a sender on the gateway; raises DuplicateSenderError if the name is taken."""
        name, event_list, handlers = check_sender_args(name, events, requests)
        existing = self._senders.get(name)
        if existing is not None:
            if existing.sender.events != event_list:
                raise DuplicateSenderError(
                    f"this client already has a sender {name!r} with events "
                    f"{list(existing.sender.events)}"
                )
            existing.sender.handlers.clear()
            existing.sender.handlers.update(handlers)
            if self._connected and not existing.live:  # refused at the last replay: retry now
                await self._confirm(existing)
            return existing.sender
        sender = SeedSender(self, name, event_list, handlers)  # with the seed's names
        refs = {e: next(self._ids) for e in event_list}
        entry = _SenderEntry(
            sender,
            next(self._ids),
            refs,
            {e: w.trigger_prefix(r) for e, r in refs.items()},
        )
        self._senders[name] = entry
        if self._connected:
            try:
                await asyncio.wait_for(self._register(entry), self.request_timeout)
            except BaseException:
                entry.live = False
                self._senders.pop(name, None)
                raise
        return sender

    def _register(self, entry: _SenderEntry, optimistic: bool = True) -> asyncio.Future[w.Message]:
        """Send REGISTER_SENDER, or return the answer already awaited for it.

        ``optimistic``: the sender is live at once (TRIGGERs may follow
        REGISTER_SENDER, PROTOCOL.md 3.2); otherwise only once it is accepted.
        """
        pending = self._waiters.get(entry.ref)
        if pending is not None and not pending.done():
            return pending  # one REGISTER_SENDER in flight per sender
        s = entry.sender
        msg = w.RegisterSender(
            entry.ref,
            s.name,
            tuple((r, e) for e, r in entry.event_refs.items()),
            s.methods,
            s.default_handler,
        )
        if optimistic:
            entry.live = True
        fut = self._expect(entry.ref, msg)
        if not optimistic:
            link = self._link
            fut.add_done_callback(lambda f: _accepted(f, entry, self._link is link))
        return fut

    async def remove_sender(self, sender: str | Sender) -> bool:
        name = sender.name if isinstance(sender, Sender) else sender
        entry = self._senders.pop(name, None)
        if entry is None:
            return False
        if entry.retry is not None:
            entry.retry.cancel()
        if self._connected:
            self._send(w.UnregisterSender(entry.ref))
        return True

    def get_sender(self, name: str) -> Sender | None:
        entry = self._senders.get(name)
        return entry.sender if entry else None

    def _emit(self, sender: Sender, event: str, data: Any) -> None:
        loop = self._loop
        if loop is not None and not _in_loop(loop):
            payload = pack(data)  # type errors surface in the caller's thread
            loop.call_soon_threadsafe(self._emit_raw, sender, event, payload)
            return
        self._emit_raw(sender, event, pack(data))

    def _emit_raw(self, sender: Sender, event: str, payload: bytes) -> None:
        entry = self._senders.get(sender.name)
        if entry is None or entry.sender is not sender:
            raise NotConnectedError(f"sender {sender.name!r} was removed from this client")
        link = self._link
        if not self._connected or link is None:
            self.stats["dropped_offline"] += 1
            if not self._offline_logged:
                self._offline_logged = True
                logger.warning(
                    "not connected: dropping events of %s (counted in stats)", sender.name
                )
            return
        if not entry.live:
            self.stats["dropped_unregistered"] += 1
            if self.stats["dropped_unregistered"] == 1:
                logger.warning(
                    "sender %s is not registered on the gateway: dropping its events"
                    " (counted in stats)",
                    sender.name,
                )
            return
        body = entry.prefixes[event] + payload
        if len(body) > self._gateway_max_body:
            raise EncodeError(
                f"event of {len(body)} bytes exceeds the gateway's limit "
                f"of {self._gateway_max_body}"
            )
        self.stats["triggers"] += 1
        self._last_tx = time.monotonic()
        link.send(body)

    # --- listeners --------------------------------------------------------

    async def add_listener(
        self, callback: ListenerCallback, sender: str | None = None, event: str | None = None
    ) -> Listener:
        """Call ``callback(info, data)`` for each matching event on the network."""
        check_listener_args(callback, sender, event)
        key = (sender, event)
        for existing in self._table.subscribers(sender, event):
            if existing.callback == callback:
                return existing
        listener = Listener(callback, sender, event)
        self._table.subscribe(listener, sender, event)
        if key not in self._listen_ids:
            lid = next(self._ids)
            self._listen_ids[key] = lid
            if self._connected:
                try:
                    await asyncio.wait_for(
                        self._expect(lid, w.Listen(lid, sender, event)), self.request_timeout
                    )
                except BaseException:
                    self._table.unsubscribe(listener, sender, event)
                    self._listen_ids.pop(key, None)
                    raise
        return listener

    async def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        if not isinstance(listener, Listener):
            found = [x for x in self._table.subscribers(sender, event) if x.callback == listener]
            if not found:
                return False
            listener = found[0]
        key = (listener.sender, listener.event)
        if not self._table.unsubscribe(listener, *key):
            return False
        if not self._table.subscribers(*key):
            lid = self._listen_ids.pop(key)
            if self._connected:
                self._send(w.Unlisten(lid))
        return True

    # --- requests ---------------------------------------------------------

    async def request(
        self, sender: str, method: str, params: Any = None, timeout: float | None = None
    ) -> Any:
        """Call a sender's handler anywhere on the network; raises a RequestError subclass."""
        if not self._connected:
            raise NotConnectedError(f"not connected to the gateway at {self.host}:{self.port}")
        assert self._loop is not None
        rid = next(self._ids)
        fut: asyncio.Future[w.Response] = self._loop.create_future()
        self._requests[rid] = fut
        wait = self.request_timeout if timeout is None else timeout
        # A timer on the future itself, not wait_for(): one wake-up less per round trip.
        timer = self._loop.call_later(wait, _expire, fut, f"{sender}.{method}", wait)
        try:
            self._send(w.Request(rid, sender, method, pack(params)), urgent=True)
            response = await fut
        finally:
            timer.cancel()
            self._requests.pop(rid, None)
        if response.status:
            raise request_error_for(response.status, response.message)
        return unpack(response.data)

    async def list_senders(self) -> dict[str, dict[str, Any]]:
        """Senders connected to the gateway, with their events, requests and link.

        Fetched a page at a time, so it works whatever the number of senders.
        A sender too large for one page has ``"truncated": True`` and empty lists.
        """
        items = await self.gateway_items("senders")
        return {item.pop("name"): item for item in items}

    async def list_links(self) -> list[dict[str, Any]]:
        """The gateway's links with their counters (``$gateway links``), every page."""
        return await self.gateway_items("links")

    async def gateway_items(self, method: str) -> list[Any]:
        """Every item of a paged ``$gateway`` method (PROTOCOL.md, "The gateway's methods").

        Items added or removed while the pages are fetched may be missed or
        seen twice; a name is kept once.
        """
        items: list[Any] = []
        offset = 0
        for _ in range(MAX_PAGES):
            page = await self.request(
                GATEWAY_SENDER, method, {"offset": offset, "limit": PAGE_LIMIT}
            )
            if not (isinstance(page, dict) and isinstance(page.get("items"), list)):
                if offset == 0 and isinstance(page, list):  # a gateway from before paging
                    return page
                if offset == 0 and isinstance(page, dict):
                    return [{"name": name, **info} for name, info in page.items()]
                raise RemoteProtocolError(f"$gateway {method} answered without pages: {page!r}")
            items += page["items"]
            nxt = page.get("next")
            if nxt is None:
                return items
            if type(nxt) is not int or nxt <= offset:
                raise RemoteProtocolError(f"$gateway {method}: next page {nxt!r} after {offset}")
            offset = nxt
        raise RemoteProtocolError(f"$gateway {method}: more than {MAX_PAGES} pages")

    # --- helpers ----------------------------------------------------------

    def _send(self, msg: w.Message, urgent: bool = False) -> None:
        link = self._link
        if link is None:
            raise NotConnectedError("not connected to the gateway")
        self._last_tx = time.monotonic()
        link.send(w.encode(msg), urgent=urgent)

    def _expect(self, ref: int, msg: w.Message) -> asyncio.Future[w.Message]:
        assert self._loop is not None
        fut: asyncio.Future[w.Message] = self._loop.create_future()
        self._waiters[ref] = fut
        self._send(msg)
        return fut

    def _spawn(self, coro: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch_event_inline(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Call a listener; a coroutine callback runs as a task, at most max_queued_events."""
        try:
            result = func(*args)
        except Exception:
            self.stats["listener_errors"] += 1
            logger.exception("callback %r raised", func)
            return
        if result is None or not inspect.isawaitable(result):
            return
        pending = self._callback_tasks
        if len(pending) >= self.max_queued_events:
            if inspect.iscoroutine(result):
                result.close()  # never started: no "was never awaited" warning
            self._drop_slow_listener_call()
            return
        task = self._spawn(_run_callback(self, func, result))
        pending.add(task)
        task.add_done_callback(pending.discard)

    def _drop_slow_listener_call(self) -> None:
        """Count one listener call dropped for a full delivery queue (logged once)."""
        self.stats["dropped_slow_listener"] += 1
        if not self._slow_logged:
            self._slow_logged = True
            logger.warning(
                "listener callbacks are slower than events arrive: %d calls are waiting,"
                " dropping new ones (counted in stats['dropped_slow_listener'])",
                self.max_queued_events,
            )

    def _dispatch_inline(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = func(*args)
            if result is not None and inspect.isawaitable(result):
                self._spawn(result)
        except Exception:
            self.stats["listener_errors"] += 1
            logger.exception("callback %r raised", func)

    @staticmethod
    def _run_inline(handler: Callable[[Any], Any], params: Any) -> Any:
        return handler(params)


_EVENT = w.MessageType.EVENT.value


def _accepted(fut: asyncio.Future[w.Message], entry: _SenderEntry, same_link: bool) -> None:
    """Done callback of a non-optimistic registration: live once the gateway said yes."""
    if not fut.cancelled() and fut.exception() is None and same_link:
        entry.live = True


async def _run_callback(client: AsyncClientRouter, func: Any, pending: Awaitable[Any]) -> None:
    try:
        await pending
    except Exception:
        client.stats["listener_errors"] += 1
        logger.exception("callback %r raised", func)


def _expire(fut: asyncio.Future[Any], what: str, wait: float) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeout(f"no response from {what} within {wait} s"))


class _Malformed(RequestError):
    """The request's params are not one CBOR item (answered as MALFORMED)."""

    code = ErrorCode.MALFORMED


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _describe(what: Any) -> str:
    if isinstance(what, _SenderEntry):
        return f"sender {what.sender.name!r}"
    return f"listener {what!r}"
