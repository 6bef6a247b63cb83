"""Listeners as iterators: ``async for item in client.events(sender, event)``.

Each iterator is one entry of the client's routing table, so it gets what a
listener callback for the same (sender, event) would get, with the same
routing (targeted, ``#channel``, sender and router broadcasts,
``#connect``/``#disconnect``). Its queue is bounded, as aiomqtt's
``client.messages`` is: while the consumer is ``max_queued`` events behind,
new events are dropped and counted (per iterator, and in the client's
``stats["dropped_slow_iterator"]``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

from sig.core.endpoints import Listener
from sig.core.retained import retained_info
from sig.errors import SigError

if TYPE_CHECKING:
    from sig.core.client import ClientSession
    from sig.routers.connection import ClientConnection

logger = logging.getLogger(__name__)


class StreamClient(Protocol):
    """What an :class:`EventStream` uses of its :class:`~sig.routers.client.AsyncClientRouter`.

    A type only: the client hands itself over, and this module never imports it.
    """

    #: The client's event loop; an iterator opened before connect() sets it.
    _loop: asyncio.AbstractEventLoop | None

    @property
    def session(self) -> ClientSession: ...
    @property
    def request_timeout(self) -> float: ...
    @property
    def _conn(self) -> ClientConnection: ...
    @property
    def _streams(self) -> set[StreamListener]: ...
    def _unsubscribe(
        self, listener: Listener, sender: str | None, event: str | None, *, tell: bool = ...
    ) -> bool: ...


class ReceivedEvent:
    """One event read from :meth:`AsyncClientRouter.events`."""

    __slots__ = ("data", "event", "retained", "sender", "stale")

    def __init__(
        self, sender: str, event: str, data: Any, retained: bool = False, stale: bool = False
    ) -> None:
        self.sender = sender
        self.event = event
        self.data = data
        #: A retained last value sent when the iterator registered, not a new event.
        self.retained = retained
        #: (retained values) its sender is not connected now.
        self.stale = stale

    @property
    def info(self) -> dict[str, Any]:
        """What a listener callback gets as ``info``: ``{"sender": ..., "event": ...}``,
        and ``"retained": True`` and ``"stale"`` for a retained value."""
        if self.retained:
            return retained_info(self.sender, self.event, self.stale)
        return {"sender": self.sender, "event": self.event}

    def __repr__(self) -> str:
        return f"<ReceivedEvent {self.sender}:{self.event} {self.data!r}>"


def _no_callback(info: dict[str, Any], data: Any) -> None:
    """The callback slot of an iterator's listener: it is fed through ``put`` instead."""


class StreamListener(Listener):
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

    def put(self, sender: str, event: str, data: Any, stale: bool | None = None) -> None:
        """Queue one event, or drop and count it when the consumer is behind.

        ``stale`` not None: a retained value (stale or not), not a new event.
        """
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
        if stale is None:
            self.queue.append(ReceivedEvent(sender, event, data))
        else:
            self.queue.append(ReceivedEvent(sender, event, data, True, stale))
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

    def __init__(self, client: StreamClient, listener: StreamListener) -> None:
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
        await open_stream(self._client, self._listener)

    async def aclose(self) -> None:
        """Unregister now (idempotent); a waiting ``async for`` ends."""
        close_stream(self._client, self._listener)

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
                loop.call_soon_threadsafe(close_stream, self._client, listener)


async def open_stream(client: StreamClient, stream: StreamListener) -> None:
    """Put an iterator in the client's routing table and listen to its key."""
    client.session.table.subscribe(stream, stream.sender, stream.event)
    client._streams.add(stream)
    _, lid = client.session.add_listener(stream)
    if lid is not None:
        try:
            await client._conn.wait(lid, client.request_timeout)
        except BaseException:
            close_stream(client, stream, tell=False)
            raise


def close_stream(client: StreamClient, stream: StreamListener, *, tell: bool = True) -> None:
    """Unregister an iterator (idempotent) and wake its consumer to end."""
    if stream in client._streams:
        client._streams.discard(stream)
        client._unsubscribe(stream, stream.sender, stream.event, tell=tell)
    stream.close()
