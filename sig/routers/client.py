"""AsyncClientRouter: an application's connection to a gateway (asyncio API).

The protocol lives in the sans-I/O client core (:class:`sig.core.client.ClientSession`):
the handshake, the registry of senders and listeners and its replay after
every (re)connect, refusals, request correlation and keepalive. This module
keeps what needs asyncio: the connection (a TCP :class:`carriers.stream.StreamLink`),
the reconnect loop (:func:`sig.routers.retry.keep_open`), the futures callers
wait on, one timer for the session's deadlines, and running callbacks.

Registrations are idempotent: adding a sender that already exists with the
same events, or the same callback for the same (sender, event) again, returns
the existing object. So code written in the seed's style, which registers
inside ``on_connected``, and code that registers once up front both end up
with one registration each.

A sender the gateway refuses at a replay (its name was taken meanwhile) is
not dropped in silence: the client logs it once, calls ``on_sender_refused``,
counts its triggers in ``dropped_unregistered``, and registers it again with
backoff until it gets the name back or the application removes it.

Besides callbacks, ``async for item in client.events(sender, event)`` reads
events from a bounded queue (see :class:`EventStream`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from carriers.stream import StreamLink
from carriers.tcp import connect_tcp
from sig.core import client as core
from sig.core.client import ClientSession
from sig.core.endpoints import (
    Handlers,
    Listener,
    ListenerCallback,
    Sender,
    check_sender_args,
    unsubscribe_listener,
)
from sig.core.routing import check_name
from sig.errors import (
    ConnectError,
    ConnectionLost,
    DecodeError,
    DuplicateSenderError,
    NotConnectedError,
    RemoteProtocolError,
    SigError,
    request_error_for,
)
from sig.protocol import messages as w
from sig.protocol.constants import DEFAULT_PORT, GATEWAY_SENDER
from sig.protocol.data import pack, unpack
from sig.routers.retry import DEFAULT_BACKOFF, Backoff, keep_open

logger = logging.getLogger(__name__)

#: Items asked for per page of a ``$gateway`` listing (the gateway may send fewer).
PAGE_LIMIT = 500
#: Pages fetched at most for one listing (a bound against a gateway that never ends).
MAX_PAGES = 100_000
#: Listener calls that may wait for a slow callback before new ones are dropped.
DEFAULT_MAX_QUEUED_EVENTS = 10_000
#: Events one ``events()`` iterator holds for a slow consumer before it drops new ones.
DEFAULT_MAX_QUEUED_ITEMS = 1000

Dispatch = Callable[[Callable[..., Any], tuple[Any, ...]], None]
#: ``on_sender_refused(name, error)``: the gateway refused a sender at a replay.
SenderRefused = Callable[[str, SigError], Any]
_INF = float("inf")

__all__ = [
    "DEFAULT_BACKOFF",
    "AsyncClientRouter",
    "Backoff",
    "EventStream",
    "ReceivedEvent",
]


class _Stop(Exception):
    """The reconnect loop ends (closing, or a failed first attempt without auto_reconnect)."""


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
        #: The protocol state (sans-I/O); ``stats`` is its counters.
        self.session = ClientSession(
            self.name, retry_delay=lambda attempt: self.backoff.delay(attempt)
        )
        self.stats = self.session.stats
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._requests: dict[int, asyncio.Future[w.Response]] = {}
        self._link: StreamLink | None = None
        self._ready: asyncio.Future[core.Opened] | None = None
        self._first: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = _INF
        self._connected = False
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slow_logged = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._callback_tasks: set[asyncio.Future[Any]] = set()
        self._streams: set[_StreamListener] = set()
        #: How the hooks (on_connected, on_disconnected, on_sender_refused) are run;
        #: never dropped (the sync API swaps it for its dispatcher thread).
        self.dispatch: Dispatch = self._dispatch_inline
        #: How listener callbacks are run: bounded, drops counted (the sync API swaps it).
        self.dispatch_event: Dispatch = self._dispatch_event_inline
        #: How a request handler is run: returns its result, or an awaitable of it.
        self.run_handler: Callable[[Callable[[Any], Any], Any], Any] = _run_inline

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
        self._first = first = self._loop.create_future()
        self._runner = asyncio.create_task(self._run(), name=f"sig-client-{self.name}")
        await first

    async def _discover_gateway(self) -> None:
        """Take the first gateway found on the LAN as host and port (ConnectError if none)."""
        from sig.routers.discovery import find_gateway

        gateway = await find_gateway(self.connect_timeout)
        self.host, self.port = gateway.host, gateway.port
        logger.info("discovered gateway %r at %s:%s", gateway.name, self.host, self.port)

    async def close(self) -> None:
        """Disconnect for good (no reconnect); every ``events()`` iterator ends."""
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
        for stream in list(self._streams):
            self._close_stream(stream)

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

    async def _run(self) -> None:
        with contextlib.suppress(_Stop):
            await keep_open(self._open_once, self._serve, self.backoff, waiting=self._waiting)

    def _waiting(self, delay: float) -> None:
        logger.info(
            "cannot reach gateway %s:%s (%s); retrying in %.1f s",
            self.host,
            self.port,
            self._failure,
            delay,
        )

    async def _open_once(self) -> StreamLink | None:
        """Connect and replay the registrations; None when this attempt failed."""
        if self._closing:
            raise _Stop
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
                self._settle_first(exc if isinstance(exc, SigError) else ConnectError(str(exc)))
                raise _Stop from None
            self._failure = exc
            return None
        return link

    async def _handshake(self, link: StreamLink) -> None:
        assert self._loop is not None
        self._ready = self._loop.create_future()
        session = self.session
        session.name, session.keepalive = self.name, self.keepalive
        session.handshake_timeout = self.connect_timeout
        session.start(link)
        self._arm()
        opened = await self._ready
        for name, exc in opened.refused:
            if self.on_sender_refused is not None:
                self.dispatch(self.on_sender_refused, (name, exc))

    async def _serve(self, link: StreamLink) -> bool:
        """The session is open: run until the link closes; True to reconnect."""
        self._connected = True
        if not self._settle_first(None):
            self.stats["reconnects"] += 1
        logger.info("connected to gateway %s:%s", self.host, self.port)
        if self.on_connected is not None:
            self.dispatch(self.on_connected, ())
        try:
            await link.closed.wait()
        finally:
            was_connected = self._connected
            self._drop_link()
        if was_connected:
            logger.info("disconnected from gateway %s:%s", self.host, self.port)
            if self.on_disconnected is not None:
                self.dispatch(self.on_disconnected, ())
        return self.auto_reconnect and not self._closing

    def _settle_first(self, exc: BaseException | None) -> bool:
        """Tell connect() how the first attempt went; False if it was told already."""
        first = self._first
        if first is None or first.done():
            return False
        if exc is None:
            first.set_result(None)
        else:
            first.set_exception(exc)
        return True

    def _drop_link(self) -> None:
        self._connected = False
        self._link = None
        self.session.connection_lost()
        self._arm()
        lost = ConnectionLost("connection to the gateway was lost")
        pending: list[asyncio.Future[Any]] = [*self._waiters.values(), *self._requests.values()]
        if self._ready is not None:
            pending.append(self._ready)
        for fut in pending:
            if not fut.done():
                fut.set_exception(lost)
                fut.exception()  # mark retrieved: nobody may be waiting any more
        self._waiters.clear()
        self._requests.clear()

    # --- timers -----------------------------------------------------------

    def _arm(self) -> None:
        """Have the timer fire at the session's next deadline (or not at all)."""
        due = self.session.next_deadline()
        if due >= self._timer_due and self._timer is not None:
            return  # it fires sooner; _tick arms it again
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due < _INF and self._loop is not None:
            delay = max(0.0, due - self.session.clock())
            self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer, self._timer_due = None, _INF
        events = self.session.poll(self.session.clock())
        if events:
            self._handle(events)
        self._arm()

    # --- FrameHandler -----------------------------------------------------

    def link_up(self, link: StreamLink) -> None:
        """Nothing to do yet: the session starts once connect_tcp returned."""

    def link_down(self, link: StreamLink, exc: BaseException | None) -> None:
        if exc is not None:
            logger.debug("link to gateway lost: %s", exc)
        ready = self._ready
        if ready is not None and not ready.done():  # lost during the handshake
            ready.set_exception(ConnectError("connection lost during the handshake"))

    def frames(self, link: StreamLink, bodies: list[bytes]) -> None:
        session = self.session
        session.last_rx = session.clock()
        for body in bodies:
            if body[0] == _EVENT:  # the hot path: no message object for an EVENT
                fields = w.split_event(body)
                if fields is not None:
                    self._on_event(*fields)
                    continue
            events = session.receive(body)
            if events:
                self._handle(events)

    def _handle(self, events: list[core.ClientEvent]) -> None:
        """Act on what the session says: settle futures, deliver, drop the link."""
        for ev in events:
            if type(ev) is w.Response:
                fut = self._requests.pop(ev.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            else:
                _ACTIONS[type(ev)](self, ev)
        self._arm()

    def _on_opened(self, ev: core.Opened) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(ev)

    def _on_handshake_failed(self, ev: core.HandshakeFailed) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConnectError(ev.reason))
        if self._link is not None:
            self._link.close()

    def _on_registered(self, ev: core.Registered | core.Refused) -> None:
        fut = self._waiters.pop(ev.ref, None)
        if fut is None or fut.done():
            return
        if isinstance(ev, core.Refused):
            fut.set_exception(ev.error)
        else:
            fut.set_result(None)

    def _on_timed_out(self, ev: core.RequestTimedOut) -> None:
        fut = self._requests.pop(ev.request_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(ev.error)

    def _on_link_timeout(self, ev: core.LinkTimeout | core.Invited) -> None:
        link = self._link
        if link is not None:
            link.abort() if isinstance(ev, core.LinkTimeout) else link.close()

    def _on_event_received(self, ev: core.EventReceived) -> None:
        self._on_event(ev.sender, ev.event, ev.data)

    def _on_event(self, sender: str, event: str, data: bytes) -> None:
        self.stats["events_in"] += 1
        listeners = self.session.table.match(sender, event)
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
            if type(listener) is Listener:
                dispatch(listener.callback, ({"sender": sender, "event": event}, value))
            else:
                listener.put(sender, event, value)  # type: ignore[attr-defined]

    def _on_request(self, ev: core.RequestReceived) -> None:
        """Answer a REQUEST for one of our senders; inline unless the handler is async."""
        try:
            result = self.run_handler(ev.handler, ev.params)
        except Exception as exc:
            self.session.respond_error(ev.request_id, ev.sender, ev.method, exc)
            return
        if inspect.isawaitable(result):
            self._spawn(self._await_handler(ev, result))
        else:
            self.session.respond(ev.request_id, ev.sender, ev.method, result)

    async def _await_handler(self, ev: core.RequestReceived, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self.session.respond_error(ev.request_id, ev.sender, ev.method, exc)
        else:
            self.session.respond(ev.request_id, ev.sender, ev.method, result)

    async def _wait(self, ref: int) -> None:
        """Wait for the answer to the registration sent under ``ref``."""
        assert self._loop is not None
        fut = self._waiters.get(ref)
        if fut is None:
            fut = self._waiters[ref] = self._loop.create_future()
        await asyncio.wait_for(asyncio.shield(fut), self.request_timeout)

    # --- senders ----------------------------------------------------------

    async def add_sender(
        self, name: str, events: Iterable[str], requests: Handlers | None = None
    ) -> Sender:
        """Declare a sender on the gateway; raises DuplicateSenderError if the name is taken."""
        name, event_list, handlers = check_sender_args(name, events, requests)
        existing = self.session.senders.get(name)
        if existing is not None:
            if existing.sender.events != event_list:
                raise DuplicateSenderError(
                    f"this client already has a sender {name!r} with events "
                    f"{list(existing.sender.events)}"
                )
            existing.sender.handlers.clear()
            existing.sender.handlers.update(handlers)
            ref = self.session.confirm(name)  # refused at the last replay: retry now
            if ref is not None:
                await self._wait(ref)
            return existing.sender
        sender = Sender(self, name, event_list, handlers)
        ref = self.session.add_sender(sender)
        if ref is not None:
            try:
                await self._wait(ref)
            except BaseException:
                self.session.remove_sender(name, tell=False)
                raise
        return sender

    async def remove_sender(self, sender: str | Sender) -> bool:
        return self.session.remove_sender(sender.name if isinstance(sender, Sender) else sender)

    def get_sender(self, name: str) -> Sender | None:
        entry = self.session.senders.get(name)
        return entry.sender if entry else None

    def _emit(self, sender: Sender, event: str, data: Any) -> None:
        loop = self._loop
        if loop is not None and not _in_loop(loop):
            payload = pack(data)  # type errors surface in the caller's thread
            loop.call_soon_threadsafe(self.session.trigger, sender, event, payload)
            return
        self.session.trigger(sender, event, pack(data))

    # --- listeners --------------------------------------------------------

    async def add_listener(
        self, callback: ListenerCallback, sender: str | None = None, event: str | None = None
    ) -> Listener:
        """Call ``callback(info, data)`` for each matching event on the network."""
        listener, lid = self.session.subscribe(callback, sender, event)
        if lid is not None:
            try:
                await self._wait(lid)
            except BaseException:
                self._unsubscribe(listener, sender, event, tell=False)
                raise
        return listener

    async def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        return self._unsubscribe(listener, sender, event)

    def _unsubscribe(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None,
        event: str | None,
        *,
        tell: bool = True,
    ) -> bool:
        """Remove a listener; UNLISTEN once nobody listens to its key any more."""
        if isinstance(listener, Listener):
            sender, event = listener.sender, listener.event
        key = (sender, event)
        if not unsubscribe_listener(self.session.table, listener, sender, event):
            return False
        self.session.unlisten(key, tell=tell)
        return True

    def events(
        self,
        sender: str | None = None,
        event: str | None = None,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED_ITEMS,
    ) -> EventStream:
        """Matching events as an async iterator: ``async for item in client.events(...)``.

        Same routing as :meth:`add_listener`. At most ``max_queued`` events wait
        for the consumer; newer ones are dropped and counted (``stream.dropped``,
        ``stats["dropped_slow_iterator"]``). Leaving the ``async for`` (break,
        exception, cancellation) unregisters it; ``async with client.events()
        as stream`` does so at once and deterministically.
        """
        for kind, name in (("sender", sender), ("event", event)):
            if name is not None:
                check_name(kind, name)
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        return EventStream(self, _StreamListener(sender, event, max_queued, self.stats))

    async def _open_stream(self, stream: _StreamListener) -> None:
        self.session.table.subscribe(stream, stream.sender, stream.event)
        self._streams.add(stream)
        _, lid = self.session.add_listener(stream)
        if lid is not None:
            try:
                await self._wait(lid)
            except BaseException:
                self._close_stream(stream, tell=False)
                raise

    def _close_stream(self, stream: _StreamListener, *, tell: bool = True) -> None:
        """Unregister an iterator (idempotent) and wake its consumer to end."""
        if stream in self._streams:
            self._streams.discard(stream)
            self._unsubscribe(stream, stream.sender, stream.event, tell=tell)
        stream.close()

    # --- requests ---------------------------------------------------------

    async def request(
        self, sender: str, method: str, params: Any = None, timeout: float | None = None
    ) -> Any:
        """Call a sender's handler anywhere on the network; raises a RequestError subclass."""
        if not self._connected:
            raise NotConnectedError(f"not connected to the gateway at {self.host}:{self.port}")
        assert self._loop is not None
        wait = self.request_timeout if timeout is None else timeout
        rid, deadline = self.session.request(sender, method, pack(params), wait)
        fut: asyncio.Future[w.Response] = self._loop.create_future()
        self._requests[rid] = fut
        if deadline < self._timer_due:
            self._arm()
        try:
            response = await fut
        finally:
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
        offset: int | None = 0
        for _ in range(MAX_PAGES):
            assert offset is not None
            page = await self.request(
                GATEWAY_SENDER, method, {"offset": offset, "limit": PAGE_LIMIT}
            )
            legacy = _unpaged(page) if offset == 0 else None
            if legacy is not None:
                return legacy
            offset = _next_page(method, page, offset, items)
            if offset is None:
                return items
        raise RemoteProtocolError(f"$gateway {method}: more than {MAX_PAGES} pages")

    # --- running callbacks ------------------------------------------------

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


_ACTIONS: dict[type, Callable[[AsyncClientRouter, Any], None]] = {
    core.Opened: AsyncClientRouter._on_opened,
    core.HandshakeFailed: AsyncClientRouter._on_handshake_failed,
    core.Registered: AsyncClientRouter._on_registered,
    core.Refused: AsyncClientRouter._on_registered,
    core.EventReceived: AsyncClientRouter._on_event_received,
    core.RequestReceived: AsyncClientRouter._on_request,
    core.RequestTimedOut: AsyncClientRouter._on_timed_out,
    core.LinkTimeout: AsyncClientRouter._on_link_timeout,
    core.Invited: AsyncClientRouter._on_link_timeout,
}


class ReceivedEvent:
    """One event read from :meth:`AsyncClientRouter.events`."""

    __slots__ = ("data", "event", "sender")

    def __init__(self, sender: str, event: str, data: Any) -> None:
        self.sender = sender
        self.event = event
        self.data = data

    @property
    def info(self) -> dict[str, Any]:
        """What a listener callback gets as ``info``: ``{"sender": ..., "event": ...}``."""
        return {"sender": self.sender, "event": self.event}

    def __repr__(self) -> str:
        return f"<ReceivedEvent {self.sender}:{self.event} {self.data!r}>"


def _no_callback(info: dict[str, Any], data: Any) -> None:
    """The callback slot of an iterator's listener: it is fed through ``put`` instead."""


class _StreamListener(Listener):
    """An iterator's entry in the routing table: a bounded queue and its drop counter.

    It holds no reference to its :class:`EventStream`, so the stream can be
    collected (and unregister itself) once the consumer lets go of it.
    """

    __slots__ = ("closed", "dropped", "max_queued", "queue", "stats", "waiter")

    def __init__(
        self, sender: str | None, event: str | None, max_queued: int, stats: dict[str, int]
    ) -> None:
        super().__init__(_no_callback, sender, event)
        self.max_queued = max_queued
        self.stats = stats
        self.queue: collections.deque[ReceivedEvent] = collections.deque()
        self.dropped = 0
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def put(self, sender: str, event: str, data: Any) -> None:
        """Queue one event, or drop and count it when the consumer is behind."""
        if len(self.queue) >= self.max_queued:
            self.dropped += 1
            self.stats["dropped_slow_iterator"] += 1
            if self.dropped == 1:
                logger.warning(
                    "events() iterator on (%r, %r) is %d events behind: dropping new ones"
                    " (counted in its .dropped and stats['dropped_slow_iterator'])",
                    self.sender,
                    self.event,
                    self.max_queued,
                )
            return
        self.queue.append(ReceivedEvent(sender, event, data))
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        self.wake()


class EventStream:
    """``async for item in client.events(sender, event)``: items are :class:`ReceivedEvent`.

    It registers on the first ``__anext__`` (or ``__aenter__``), and
    unregisters when it is closed: by ``aclose()``, by leaving ``async with``,
    by a cancellation or error while it waits, when the client closes, or
    once the consumer drops it (leaving ``async for`` by ``break`` or an
    exception), whichever comes first.
    """

    def __init__(self, client: AsyncClientRouter, listener: _StreamListener) -> None:
        self._client = client
        self._listener = listener
        self._opened = False

    @property
    def sender(self) -> str | None:
        return self._listener.sender

    @property
    def event(self) -> str | None:
        return self._listener.event

    @property
    def dropped(self) -> int:
        """Events dropped because this iterator's queue was full."""
        return self._listener.dropped

    @property
    def queued(self) -> int:
        """Events waiting to be read."""
        return len(self._listener.queue)

    @property
    def closed(self) -> bool:
        return self._listener.closed

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ReceivedEvent:
        listener = self._listener
        if not self._opened:
            await self._open()
        client = self._client
        while not listener.queue:
            if listener.closed:
                raise StopAsyncIteration
            assert client._loop is not None
            listener.waiter = client._loop.create_future()
            try:
                await listener.waiter
            except BaseException:
                await self.aclose()
                raise
            finally:
                listener.waiter = None
        return listener.queue.popleft()

    async def _open(self) -> None:
        if self._listener.closed:
            raise SigError("this events() iterator was closed")
        if self._client._loop is None:
            self._client._loop = asyncio.get_running_loop()
        self._opened = True
        await self._client._open_stream(self._listener)

    async def aclose(self) -> None:
        """Unregister now (idempotent); a waiting ``async for`` ends."""
        self._client._close_stream(self._listener)

    async def __aenter__(self) -> EventStream:
        if not self._opened:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        listener, loop = self._listener, self._client._loop
        if self._opened and not listener.closed and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
                loop.call_soon_threadsafe(self._client._close_stream, listener)


_EVENT = w.MessageType.EVENT.value


def _split_event(body: bytes) -> tuple[str, str, bytes] | None:
    """(sender, event, data) of an EVENT body whose names are 1..127 bytes, else None.

    The common case of :func:`sig.protocol.messages.decode` for EVENT without building a
    message object; anything unusual (longer names, a short or bad body) returns
    None so that the full decoder handles and reports it.
    """
    size = len(body)
    n = body[1] if size > 1 else 0
    if not 0 < n < 0x80 or 2 + n >= size:
        return None
    m = body[2 + n]
    end = 3 + n + m
    if not 0 < m < 0x80 or end > size:
        return None
    try:
        return body[2 : 2 + n].decode(), body[3 + n : end].decode(), body[end:]
    except UnicodeDecodeError:
        return None


def _unpaged(page: Any) -> list[Any] | None:
    """The items of a first answer from a gateway from before paging, else None."""
    if isinstance(page, dict) and isinstance(page.get("items"), list):
        return None
    if isinstance(page, list):
        return page
    if isinstance(page, dict):
        return [{"name": name, **info} for name, info in page.items()]
    return None


def _next_page(method: str, page: Any, offset: int, items: list[Any]) -> int | None:
    """Add a page's items to ``items``; returns the next offset (None: it was the last)."""
    if not (isinstance(page, dict) and isinstance(page.get("items"), list)):
        raise RemoteProtocolError(f"$gateway {method} answered without pages: {page!r}")
    items += page["items"]
    nxt = page.get("next")
    if nxt is None:
        return None
    if type(nxt) is not int or nxt <= offset:
        raise RemoteProtocolError(f"$gateway {method}: next page {nxt!r} after {offset}")
    return nxt


async def _run_callback(client: AsyncClientRouter, func: Any, pending: Awaitable[Any]) -> None:
    try:
        await pending
    except Exception:
        client.stats["listener_errors"] += 1
        logger.exception("callback %r raised", func)


def _run_inline(handler: Callable[[Any], Any], params: Any) -> Any:
    return handler(params)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
