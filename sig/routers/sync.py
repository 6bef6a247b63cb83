"""ClientRouter: the synchronous client for plain scripts (and the seed's API).

One background thread runs the asyncio client (all I/O). Listener callbacks and
``on_connected`` / ``on_disconnected`` run on a second thread, the dispatcher,
in arrival order; request handlers run on a small thread pool. So a callback
or a handler may itself call ``request``, ``add_sender`` or ``trigger``
without deadlocking the I/O thread.

The dispatcher's queue is bounded: at most ``max_queued_events`` listener calls
wait for a slow callback; beyond that new ones are dropped and counted in
``stats["dropped_slow_listener"]`` (logged once). Hooks (``on_connected``,
``on_disconnected``, ``on_sender_refused``) have their own bound,
:data:`MAX_QUEUED_HOOKS`: a few come with each reconnect, so only a dispatcher
stuck in a callback for good lets them pile up, and then new ones are dropped
and counted in ``stats["dropped_hooks"]``. Request handlers do not go through
this queue (they run on a small thread pool).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import queue
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from carriers.tcp import client_context
from sig.compat import ClientRouterAliases
from sig.core.delivery import Policy
from sig.core.endpoints import Handlers, Listener, ListenerCallback, Sender
from sig.core.meta import Describe
from sig.errors import ConnectError, RequestTimeout, SigError
from sig.protocol.constants import DEFAULT_PORT
from sig.protocol.data import pack
from sig.routers import loops
from sig.routers.client import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_QUEUED_EVENTS,
    AsyncClientRouter,
    Backoff,
    answer_of,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()
#: Hook calls that may wait on the dispatcher before new ones are dropped.
MAX_QUEUED_HOOKS = 1000
#: Seconds a request waits beyond its timeout for the I/O thread to report that timeout.
REQUEST_GRACE = 5.0
_STEP, _EVENT, _HOOK = 0, 1, 2  # what a dispatcher item is (only _EVENT and _HOOK are counted)


class SeedCarrier(Protocol):
    """What :class:`ClientRouter` reads of the seed's carrier object (``ClientRouter(carrier)``).

    That is :class:`sig.carrier.tcpclient.CarrierTCPClient`, which sits above
    the routers: this module names only what it uses of it, and never imports it.
    """

    @property
    def on_connected(self) -> Callable[[], Any] | None: ...
    @property
    def on_disconnected(self) -> Callable[[], Any] | None: ...
    def _bind(self, router: ClientRouter) -> None: ...


class SyncListings:
    """The gateway's listings, blocking: a part of :class:`ClientRouter` (as
    :class:`sig.routers.client.GatewayListings` is of the asyncio client)."""

    _client: AsyncClientRouter

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        raise NotImplementedError  # the router's: run on its I/O thread

    def list_senders(self) -> dict[str, dict[str, Any]]:
        """Senders connected to the gateway (every page of ``$gateway senders``)."""
        return self._call(self._client.list_senders())

    def list_links(self) -> list[dict[str, Any]]:
        """The gateway's links with their counters (every page of ``$gateway links``)."""
        return self._call(self._client.list_links())


class SyncRequests:
    """Requests, blocking: a part of :class:`ClientRouter` (its I/O thread sends them)."""

    _client: AsyncClientRouter
    _io: threading.Thread
    _loop: asyncio.AbstractEventLoop

    def _ensure_started(self) -> None:
        raise NotImplementedError  # the router's: start the threads, or refuse when closed

    def request(
        self, sender: str, method: str, params: Any = None, timeout: float | None = None
    ) -> Any:
        """Call a sender's handler; returns the result or raises a RequestError subclass.

        Two thread hops and no task: the I/O thread sends the REQUEST in one
        callback, and its RESPONSE settles the future this thread waits on as
        it is read (issue 13: a task and a loop turn fewer than through
        :meth:`AsyncClientRouter.request`; the same answers and errors).
        """
        self._ensure_started()
        if threading.current_thread() is self._io:
            raise SigError("blocking sig call from the I/O thread; use the asyncio API there")
        client = self._client
        client._check_connected()  # as the asyncio client: before the params are packed
        wait = client.request_timeout if timeout is None else timeout
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(
            self._start_request, sender, method, pack(params), wait, answer
        )
        try:
            response = answer.result(wait + REQUEST_GRACE)
        except concurrent.futures.TimeoutError:  # the session's timer did not fire: a stuck loop
            raise RequestTimeout(f"no answer within {wait} s") from None
        return answer_of(response)

    def _start_request(
        self,
        sender: str,
        method: str,
        data: bytes,
        wait: float,
        answer: concurrent.futures.Future[Any],
    ) -> None:
        """On the I/O thread: send the request; its answer, timeout or loss settles ``answer``."""
        try:
            self._client.start_request(sender, method, data, wait, answer)
        except BaseException as exc:  # not connected any more, or a bad name: the caller's error
            answer.set_exception(exc)


class SyncListeners:
    """Listeners, blocking: a part of :class:`ClientRouter` (the asyncio client's)."""

    _client: AsyncClientRouter

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        raise NotImplementedError  # the router's: run on its I/O thread

    def add_listener(
        self,
        callback: ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
        *,
        policy: Policy = "drop",
        no_local: bool = False,
    ) -> Listener:
        """Register ``callback(info, data)`` network-wide (idempotent per callback, key
        and options); ``policy`` and ``no_local`` as in AsyncClientRouter.add_listener."""
        return self._call(
            self._client.add_listener(callback, sender, event, policy=policy, no_local=no_local)
        )

    def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        return self._call(self._client.remove_listener(listener, sender, event))


class ClientRouter(ClientRouterAliases, SyncListings, SyncRequests, SyncListeners):
    """A gateway client with blocking methods; I/O runs on a background thread.

    ``ClientRouter(host="gw.local", port=3000)`` then :meth:`connect`, or the
    seed's ``ClientRouter(CarrierTCPClient())`` then ``carrier.connect(host, port)``.
    ``host=None`` connects to the first gateway found on the LAN (see
    :class:`sig.AsyncClientRouter`).
    """

    def __init__(
        self,
        carrier: SeedCarrier | None = None,
        *,
        host: str | None = "127.0.0.1",
        port: int = DEFAULT_PORT,
        name: str | None = None,
        auto_reconnect: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        keepalive: float = 10.0,
        handler_threads: int = 4,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
        username: str | None = None,
        password: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        cafile: str | None = None,
        loop: str = "asyncio",
    ) -> None:
        self._client = AsyncClientRouter(
            host,
            port,
            name=name,
            auto_reconnect=auto_reconnect,
            backoff=backoff,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            keepalive=keepalive,
            max_queued_events=max_queued_events,
            tls=client_context(tls, cafile),
        )
        self._client.username, self._client.password = username, password  # the HELLO login
        #: Called on the dispatcher thread after every (re)connect.
        self.on_connected: Callable[[], Any] | None = None
        #: Called on the dispatcher thread when the connection is lost.
        self.on_disconnected: Callable[[], Any] | None = None
        #: Called on the dispatcher thread with (sender name, error) when the
        #: gateway refuses one of our senders at a reconnect (name taken
        #: meanwhile); the client registers it again with backoff until it
        #: succeeds or the sender is removed. Its triggers meanwhile are counted
        #: in ``stats["dropped_unregistered"]``.
        self.on_sender_refused: Callable[[str, SigError], Any] | None = None
        self._carrier = carrier
        if carrier is not None:
            carrier._bind(self)
        self._client.on_connected = self._connected_hook
        self._client.on_disconnected = self._disconnected_hook
        self._client.on_sender_refused = self._sender_refused_hook
        self._loop = loops.new_event_loop(loop)  # "uvloop": the fast extra (sig.routers.loops)
        self._io = threading.Thread(target=self._loop.run_forever, name="sig-io", daemon=True)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="sig-dispatch", daemon=True
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(handler_threads, "sig-handler")
        self._client.dispatch = self._enqueue
        self._client.dispatch_event = self._enqueue_event
        # Listener and hook calls queued and taken, by kind: each count is written
        # by one thread only (the I/O thread puts, the dispatcher takes): no lock.
        self._put = [0, 0, 0]
        self._taken = [0, 0, 0]
        self._client.stats.setdefault("dropped_hooks", 0)
        self._client.run_handler = self._run_handler
        self._started = False
        self._closed = False
        self._connect_future: concurrent.futures.Future[None] | None = None

    # --- threads ----------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._closed:
            raise SigError("this ClientRouter was closed")
        if not self._started:
            self._started = True
            self._io.start()
            self._dispatcher.start()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        try:
            self._ensure_started()
        except SigError:
            coro.close()  # never scheduled: no "coroutine was never awaited" warning
            raise
        if threading.current_thread() is self._io:
            coro.close()
            raise SigError("blocking sig call from the I/O thread; use the asyncio API there")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout(f"no answer within {timeout} s") from None

    def _enqueue(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Queue a hook for the dispatcher (I/O thread); dropped only past MAX_QUEUED_HOOKS."""
        if self._put[_HOOK] - self._taken[_HOOK] >= MAX_QUEUED_HOOKS:
            self._client.stats["dropped_hooks"] += 1
            if self._client.stats["dropped_hooks"] == 1:
                logger.warning(
                    "the dispatcher is stuck: %d hook calls wait, dropping new ones"
                    " (counted in stats['dropped_hooks'])",
                    MAX_QUEUED_HOOKS,
                )
            return
        self._put[_HOOK] += 1
        self._queue.put((func, args, _HOOK))

    def _enqueue_event(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Queue a listener call, or drop and count it when the queue is full (I/O thread)."""
        if self._put[_EVENT] - self._taken[_EVENT] >= self._client.max_queued_events:
            self._client.callbacks.drop_slow_listener_call()
            return
        self._put[_EVENT] += 1
        self._queue.put((func, args, _EVENT))

    def _dispatch_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            func, args, kind = item
            self._taken[kind] += 1
            try:
                result = func(*args)
                if inspect.isawaitable(result):
                    asyncio.run_coroutine_threadsafe(_await(result), self._loop)
            except Exception:
                self._client.stats["listener_errors"] += 1
                logger.exception("callback %r raised", func)

    def _run_handler(self, handler: Callable[[Any], Any], params: Any) -> asyncio.Future[Any]:
        return self._loop.run_in_executor(self._pool, handler, params)

    def _connected_hook(self) -> None:
        for hook in (self.on_connected, getattr(self._carrier, "on_connected", None)):
            if hook is not None:
                hook()

    def _sender_refused_hook(self, name: str, error: SigError) -> None:
        if self.on_sender_refused is not None:
            self.on_sender_refused(name, error)

    def _disconnected_hook(self) -> None:
        for hook in (self.on_disconnected, getattr(self._carrier, "on_disconnected", None)):
            if hook is not None:
                hook()

    # --- connection -------------------------------------------------------

    def connect(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        auto_reconnect: bool | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Connect to the gateway; True once connected and ``on_connected`` has run.

        Waits up to ``timeout`` (default: the connect timeout) for the first
        connection. With auto_reconnect it then returns False and keeps trying
        in the background; without, it raises :class:`sig.ConnectError`.
        """
        client = self._client
        if host is not None:
            client.host = host
        if port is not None:
            client.port = int(port)
        if auto_reconnect is not None:
            client.auto_reconnect = auto_reconnect
        self._ensure_started()
        previous = self._connect_future
        if previous is not None and not (previous.done() and previous.exception() is not None):
            raise SigError("connect() was already called")  # a failed attempt may be retried
        self._connect_future = asyncio.run_coroutine_threadsafe(client.connect(), self._loop)
        wait = client.connect_timeout if timeout is None else timeout
        if not self._first_connection(self._connect_future, wait):
            return False
        self._let_hooks_run(wait)
        return True

    def _first_connection(self, future: concurrent.futures.Future[None], wait: float) -> bool:
        """Wait for the first connection: False if it is still being tried in the background."""
        client = self._client
        finding = client.connect_timeout if client.discover and not client.host else 0.0
        try:
            future.result(wait + finding + 0.5)
        except concurrent.futures.TimeoutError:
            if not client.auto_reconnect:
                raise ConnectError(f"cannot connect to {client.host}:{client.port}") from None
            logger.warning(
                "gateway %s:%s not reachable yet; retrying in the background",
                client.host,
                client.port,
            )
            return False
        return True

    def _let_hooks_run(self, wait: float) -> None:
        """Wait for the hooks queued so far (on_connected) to have run.

        on_connected was queued before the connection was reported: let it run
        first, so that what it sets up (the seed registers there) is in place
        when connect() returns.
        """
        if threading.current_thread() is self._dispatcher:
            return
        hooks_done = threading.Event()
        self._queue.put((hooks_done.set, (), _STEP))
        if not hooks_done.wait(wait):
            logger.warning("on_connected did not return within %.1f s", wait)

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected; raises ConnectError after ``timeout`` seconds."""
        self._call(self._client.wait_connected(timeout))

    @property
    def is_connected(self) -> bool:
        return self._client.is_connected

    @property
    def max_queued_events(self) -> int:
        """Listener calls that may wait on the dispatcher before new ones are dropped."""
        return self._client.max_queued_events

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._client.stats)

    def close(self) -> None:
        """Disconnect for good and stop the background threads."""
        if self._closed:
            return
        if self._started:
            self._call(self._client.close(), 5.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._io.join(5.0)
            self._queue.put(_STOP)
            if threading.current_thread() is not self._dispatcher:
                self._dispatcher.join(5.0)
        self._pool.shutdown(wait=False)
        self._closed = True
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> ClientRouter:
        if self._connect_future is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- API --------------------------------------------------------------

    def add_sender(
        self,
        name: str,
        events: Iterable[str],
        requests: Handlers | None = None,
        *,
        retained: bool | Iterable[str] = False,
        describe: Describe | None = None,
    ) -> Sender:
        """Declare a sender on the gateway (idempotent for the same name and events);
        ``retained``, ``describe``: as :meth:`AsyncClientRouter.add_sender`."""
        client = self._client
        return self._call(
            client.add_sender(name, events, requests, retained=retained, describe=describe)
        )

    def remove_sender(self, sender: str | Sender) -> bool:
        return self._call(self._client.remove_sender(sender))

    def get_sender(self, name: str) -> Sender | None:
        return self._client.get_sender(name)



async def _await(awaitable: Any) -> Any:
    return await awaitable
