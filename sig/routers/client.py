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
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from carriers.stream import StreamLink
from carriers.tcp import client_context
from sig.compat import SeedSender
from sig.core import client as core
from sig.core.client import ClientSession
from sig.core.delivery import Policy, listen_options
from sig.core.endpoints import Handlers, Listener, ListenerCallback, Sender, check_sender_args
from sig.core.endpoints import unsubscribe_listener as _unsubscribe
from sig.core.meta import Describe, encode_meta
from sig.core.routing import check_name
from sig.errors import (
    ConnectError,
    DecodeError,
    DuplicateSenderError,
    NotConnectedError,
    RemoteProtocolError,
    SigError,
    request_error_for,
)
from sig.protocol import messages as w
from sig.protocol.constants import DEFAULT_PORT, GATEWAY_SENDER, LISTEN_NO_LOCAL
from sig.protocol.data import pack, unpack
from sig.routers.callbacks import Callbacks, Dispatch, SenderRefused, run_inline
from sig.routers.connection import Answer, ClientConnection
from sig.routers.events import EventStream, ReceivedEvent, StreamListener, close_stream
from sig.routers.retry import DEFAULT_BACKOFF, Backoff

logger = logging.getLogger(__name__)

#: Items asked for per page of a ``$gateway`` listing (the gateway may send fewer).
PAGE_LIMIT = 500
#: Pages fetched at most for one listing (a bound against a gateway that never ends).
MAX_PAGES = 100_000
#: Listener calls that may wait for a slow callback before new ones are dropped.
DEFAULT_MAX_QUEUED_EVENTS = 10_000
#: Events one ``events()`` iterator holds for a slow consumer before it drops new ones.
DEFAULT_MAX_QUEUED_ITEMS = 1000

__all__ = [
    "DEFAULT_BACKOFF",
    "AsyncClientRouter",
    "Backoff",
    "EventStream",
    "ReceivedEvent",
]


class NetworkRequests:
    """Requests to any sender on the network: a part of :class:`AsyncClientRouter`.

    Its own class so that the synchronous client can send a request on the
    I/O thread without a task (:meth:`start_request`), and the router stays
    under the class size limit.
    """

    host: str
    port: int
    request_timeout: float
    session: ClientSession
    _conn: ClientConnection

    async def request(
        self, sender: str, method: str, params: Any = None, timeout: float | None = None
    ) -> Any:
        """Call a sender's handler anywhere on the network; raises a RequestError subclass."""
        self._check_connected()
        wait = self.request_timeout if timeout is None else timeout
        rid, fut = self.start_request(sender, method, pack(params), wait)
        try:
            response = await cast("asyncio.Future[w.Response]", fut)
        finally:
            self._conn.requests.pop(rid, None)
        return answer_of(response)

    def _check_connected(self) -> None:
        if not self._conn.connected:
            raise NotConnectedError(f"not connected to the gateway at {self.host}:{self.port}")

    def start_request(
        self, sender: str, method: str, data: bytes, wait: float, answer: Answer | None = None
    ) -> tuple[int, Answer]:
        """Send a REQUEST now (on the loop's thread); its id and what its answer settles.

        ``answer`` may be a ``concurrent.futures.Future``: the synchronous client
        waits on one, settled by the RESPONSE as it is read, with no task between.
        """
        self._check_connected()
        rid, deadline = self.session.request(sender, method, data, wait)
        return rid, self._conn.track(rid, deadline, answer)


class GatewayListings:
    """What the gateway holds (``$gateway senders`` and ``links``), a page at a time.

    A part of :class:`AsyncClientRouter`: each page is one call of its
    :meth:`~AsyncClientRouter.request`, so a listing works whatever its size.
    """

    #: ``request(sender, method, params)``: the client's, which fetches each page.
    request: Callable[..., Awaitable[Any]]

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
        return await fetch_pages(self.request, method)


class NetworkListeners:
    """Listener callbacks registered on the gateway: a part of :class:`AsyncClientRouter`."""

    session: ClientSession
    _conn: ClientConnection
    request_timeout: float

    async def add_listener(
        self,
        callback: ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
        *,
        policy: Policy = "drop",
        no_local: bool = False,
    ) -> Listener:
        """Call ``callback(info, data)`` for each matching event on the network.

        ``policy``: what the gateway does while this client is behind (more than
        its high-water mark waits for it): ``"drop"`` (drop and count),
        ``"latest"`` (keep the newest value per sender and event, count the
        replaced ones) or ``"block"`` (stop reading the TCP senders until this
        client catches up; serial senders' events are dropped and counted).
        ``no_local``: not the events of this client's own senders. Both are
        kept across reconnects (README "Delivery policies").
        """
        options = listen_options(policy, no_local)
        listener, lid = self.session.subscribe(callback, sender, event, options)
        if lid is not None:
            try:
                await self._conn.wait(lid, self.request_timeout)
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
        if not _unsubscribe(self.session.table, listener, sender, event):
            return False
        self.session.unlisten((sender, event), tell=tell)
        return True


class AsyncClientRouter(NetworkRequests, GatewayListings, NetworkListeners):
    """Connects to a gateway; senders, listeners and requests over the network.

    ``host=None`` finds the gateway on the LAN instead (mDNS ``_sig._tcp``, see
    :func:`sig.discover`): :meth:`connect` takes the first one that answers
    within ``connect_timeout``, its address and port, and keeps them for
    reconnects. The default stays ``127.0.0.1``.

    ``tls=True`` connects over TLS trusting the system's CAs, ``cafile`` (a PEM
    file, implies TLS) trusting that CA instead; the gateway's certificate must
    name ``host``. An ``ssl.SSLContext`` as ``tls`` is used as it is (a client
    certificate for mutual TLS goes in it).
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
        username: str | None = None,
        password: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        cafile: str | None = None,
    ) -> None:
        """``max_queued_events``: coroutine listener callbacks that may be pending
        at once; above it new listener calls are dropped and counted in
        ``stats["dropped_slow_listener"]`` (hooks and request handlers never are).
        ``username``/``password``: the HELLO login (refused: README, "Users")."""
        if max_queued_events < 1:
            raise ValueError("max_queued_events must be at least 1")
        self.username, self.password = username, password  #: None: anonymous
        #: Find the gateway by mDNS at connect() (``host=None``).
        self.discover = host is None
        self.host = host or ""
        self.port = port
        self.name = name or f"client-{os.getpid()}"
        self.auto_reconnect = auto_reconnect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        #: The TLS context of the connection (None: plain TCP).
        self.tls = client_context(tls, cafile)
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
        #: The protocol state (sans-I/O); ``stats`` is its counters.
        self.session = ClientSession(self.name, retry_delay=lambda n: self.backoff.delay(n))
        self.stats = self.session.stats
        self.callbacks = Callbacks(self.stats, max_queued_events)
        #: How the hooks (on_connected, on_disconnected, on_sender_refused) are run;
        #: never dropped (the sync API swaps it for its dispatcher thread).
        self.dispatch: Dispatch = self.callbacks.call_hook
        #: How listener callbacks are run: bounded, drops counted (the sync API swaps it).
        self.dispatch_event: Dispatch = self.callbacks.call_listener
        #: How a request handler is run: returns its result, or an awaitable of it.
        self.run_handler: Callable[[Callable[[Any], Any], Any], Any] = run_inline
        self._conn = ClientConnection(self)
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: set[StreamListener] = set()

    @property
    def max_queued_events(self) -> int:
        return self.callbacks.max_queued

    # --- connection -------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._conn.connected

    @property
    def _link(self) -> StreamLink | None:
        """The current link (the benchmarks pace on its write buffer)."""
        return self._conn.link

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
        self._runner = asyncio.create_task(self._conn.run(first), name=f"sig-client-{self.name}")
        await first

    async def _discover_gateway(self) -> None:
        """Take the first gateway found on the LAN as host and port (ConnectError if none)."""
        from sig.routers.discovery import find_gateway

        gateway = await find_gateway(self.connect_timeout, tls=self.tls is not None)
        self.host, self.port = gateway.host, gateway.port
        logger.info("discovered gateway %r at %s:%s", gateway.name, self.host, self.port)

    async def close(self) -> None:
        """Disconnect for good (no reconnect); every ``events()`` iterator ends."""
        self._closing = True
        link = self._conn.link
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
        self.callbacks.cancel_all()
        for stream in list(self._streams):
            close_stream(self, stream)

    async def __aenter__(self) -> AsyncClientRouter:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (and registrations replayed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._conn.connected:
            if deadline is not None and time.monotonic() > deadline:
                raise ConnectError(f"not connected to {self.host}:{self.port} within {timeout} s")
            await asyncio.sleep(0.02)

    # --- what arrives -----------------------------------------------------

    def _on_event(self, sender: str, event: str, data: bytes) -> None:
        """Deliver an EVENT to the callbacks and iterators that match it."""
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
                if listener.options & LISTEN_NO_LOCAL and sender in self.session.senders:
                    continue  # our own link's event, which this no_local listener refused
                dispatch(listener.callback, ({"sender": sender, "event": event}, value))
            else:
                listener.put(sender, event, value)  # type: ignore[attr-defined]

    def _on_request(self, ev: core.RequestReceived) -> None:
        """Answer a REQUEST for one of our senders; inline unless the handler is async."""
        self.callbacks.answer(self.session, ev, self.run_handler)

    # --- senders ----------------------------------------------------------

    async def add_sender(
        self,
        name: str,
        events: Iterable[str],
        requests: Handlers | None = None,
        *,
        retained: bool | Iterable[str] = False,
        describe: Describe | None = None,
    ) -> Sender:
        """Declare a sender on the gateway; raises DuplicateSenderError if the name is taken.

        ``retained``: True or the events whose last values new listeners get at
        once; ``describe``: event -> keys for bridges (README, "Retained values")."""
        name, event_list, handlers = check_sender_args(name, events, requests)
        meta = encode_meta(event_list, retained, describe)
        existing = self.session.senders.get(name)
        if existing is not None:
            _check_same(existing, event_list, meta, handlers)
            ref = self.session.confirm(name)  # refused at the last replay: retry now
            if ref is not None:
                await self._conn.wait(ref, self.request_timeout)
            return existing.sender
        sender = SeedSender(self, name, event_list, handlers)  # with the seed's names
        ref = self.session.add_sender(sender, meta)
        if ref is not None:
            try:
                await self._conn.wait(ref, self.request_timeout)
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

    # --- listeners (add_listener, remove_listener: NetworkListeners) -------

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
        return EventStream(self, StreamListener(sender, event, max_queued, self.stats))


def answer_of(response: w.Response) -> Any:
    """A RESPONSE's result, or the RequestError subclass its status stands for."""
    if response.status:
        raise request_error_for(response.status, response.message)
    return unpack(response.data)


def _check_same(
    existing: core.SenderEntry, events: tuple[str, ...], meta: bytes, handlers: Handlers
) -> None:
    """Adding a sender we have: the same one (its handlers replaced), or DuplicateSenderError."""
    if existing.sender.events != events or existing.meta != meta:
        other = "" if existing.meta == meta else ", and other retained/describe"
        raise DuplicateSenderError(
            f"this client already has a sender {existing.sender.name!r} with events "
            f"{list(existing.sender.events)}{other}"
        )
    existing.sender.handlers.clear()
    existing.sender.handlers.update(handlers)


async def fetch_pages(request: Callable[..., Awaitable[Any]], method: str) -> list[Any]:
    """Every item of the paged ``$gateway`` method ``method``, asked with ``request``."""
    items: list[Any] = []
    offset: int | None = 0
    for _ in range(MAX_PAGES):
        assert offset is not None
        page = await request(GATEWAY_SENDER, method, {"offset": offset, "limit": PAGE_LIMIT})
        legacy = _unpaged(page) if offset == 0 else None
        if legacy is not None:
            return legacy
        offset = _next_page(method, page, offset, items)
        if offset is None:
            return items
    raise RemoteProtocolError(f"$gateway {method}: more than {MAX_PAGES} pages")


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


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
