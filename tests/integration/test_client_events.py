"""Listeners as iterators: ``async for item in client.events(sender, event)``, over a real
gateway on 127.0.0.1.

The iterator gets what a callback on the same (sender, event) gets, its queue is
bounded (a slow consumer makes it drop and count), and leaving the ``async for``
(break, exception, cancellation, ``async with``, closing the client) unregisters
it, on the client and on the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from procs import until

import sig
from sig.routers.client import AsyncClientRouter, Backoff, EventStream, ReceivedEvent
from sig.routers.gateway import ServerRouter

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.1)


@pytest.fixture
async def gateway() -> AsyncIterator[ServerRouter]:
    gw = ServerRouter("127.0.0.1", 0)
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
async def pair(gateway: ServerRouter) -> AsyncIterator[tuple[AsyncClientRouter, AsyncClientRouter]]:
    """A listening client and a sending client on the gateway."""
    listener = AsyncClientRouter("127.0.0.1", gateway.port, name="l", backoff=FAST)
    sender = AsyncClientRouter("127.0.0.1", gateway.port, name="s", backoff=FAST)
    async with listener, sender:
        yield listener, sender


def gateway_listeners(gw: ServerRouter) -> int:
    return gw.core.table.subscription_count()


async def take(stream: EventStream, n: int) -> list[ReceivedEvent]:
    out: list[ReceivedEvent] = []
    async for item in stream:
        out.append(item)
        if len(out) == n:
            break
    return out


async def test_an_iterator_gets_what_a_callback_gets_with_the_same_routing(
    gateway: ServerRouter, pair: tuple[AsyncClientRouter, AsyncClientRouter]
) -> None:
    listener, sending = pair
    keys: list[tuple[str | None, str | None]] = [
        ("a", "x"),  # targeted
        ("a", None),  # sender broadcast (with #connect / #disconnect)
        (None, "#ch"),  # a channel from any sender
        (None, "x"),  # nothing: targeted events never leak to anonymous listeners
        (None, None),  # router broadcast
    ]
    called: dict[tuple[str | None, str | None], list[tuple[str, str, Any]]] = {k: [] for k in keys}
    streams = {k: listener.events(*k) for k in keys}
    got: dict[tuple[str | None, str | None], list[tuple[str, str, Any]]] = {k: [] for k in keys}

    async def consume(key: tuple[str | None, str | None]) -> None:
        async for item in streams[key]:
            assert item.info == {"sender": item.sender, "event": item.event}
            got[key].append((item.sender, item.event, item.data))

    before = gateway_listeners(gateway)
    tasks = [asyncio.create_task(consume(k)) for k in keys]
    await until(lambda: gateway_listeners(gateway) == before + len(keys), what="5 LISTENs")
    for key in keys:

        def record(info: dict[str, Any], data: Any, key: Any = key) -> None:
            called[key].append((info["sender"], info["event"], data))

        await listener.add_listener(record, *key)
    a = await sending.add_sender("a", ["x", "#ch"])
    b = await sending.add_sender("b", ["#ch", "y"])
    a.trigger("x", 1)
    a.trigger("#ch", 2)
    b.trigger("#ch", 3)
    b.trigger("y", 4)
    await sending.remove_sender("a")
    await until(lambda: len(called[(None, None)]) >= 6, what="every event on the broadcast")
    await until(lambda: got == called, what="iterators to see what callbacks see")
    assert [e for _, e, _ in called[("a", "x")]] == ["x"]
    assert [e for _, e, _ in called[("a", None)]] == ["#connect", "x", "#ch", "#disconnect"]
    assert sorted(d for _, _, d in called[(None, "#ch")]) == [2, 3]
    assert called[(None, "x")] == []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_slow_consumer_makes_the_iterator_drop_and_count(
    gateway: ServerRouter, pair: tuple[AsyncClientRouter, AsyncClientRouter]
) -> None:
    listener, sending = pair
    arrived: list[Any] = []
    await listener.add_listener(lambda info, data: arrived.append(data), "a", "x")
    async with listener.events("a", "x", max_queued=5) as stream:  # registered, not read
        s = await sending.add_sender("a", ["x"])
        for i in range(50):
            s.trigger("x", i)
        await until(lambda: len(arrived) == 50, what="all 50 events at the client")
        assert stream.queued == 5 and stream.dropped == 45
        assert listener.stats["dropped_slow_iterator"] == 45
        assert [item.data for item in await take(stream, 5)] == [0, 1, 2, 3, 4]
        s.trigger("x", "after")  # room again: the next one is kept
        (item,) = await take(stream, 1)
        assert item.data == "after" and stream.dropped == 45


async def test_break_unregisters_the_iterator(
    gateway: ServerRouter, pair: tuple[AsyncClientRouter, AsyncClientRouter]
) -> None:
    listener, sending = pair
    s = await sending.add_sender("a", ["x"])
    before = gateway_listeners(gateway)

    async def first() -> Any:
        async for item in listener.events("a", "x"):
            return item.data  # leaves the loop: the iterator is dropped
        return None

    task = asyncio.create_task(first())
    await until(lambda: gateway_listeners(gateway) > before, what="LISTEN on the gateway")
    s.trigger("x", "one")
    assert await task == "one"
    await until(lambda: gateway_listeners(gateway) == before, what="UNLISTEN on the gateway")
    assert not listener._streams and not listener.session.table.subscribers("a", "x")


async def test_an_exception_or_a_cancel_unregisters_the_iterator(
    gateway: ServerRouter, pair: tuple[AsyncClientRouter, AsyncClientRouter]
) -> None:
    listener, sending = pair
    s = await sending.add_sender("a", ["x"])
    before = gateway_listeners(gateway)

    async def fails() -> None:
        async for _ in listener.events("a", "x"):
            raise RuntimeError("consumer failed")

    task = asyncio.create_task(fails())
    await until(lambda: gateway_listeners(gateway) > before)
    s.trigger("x", 1)
    with pytest.raises(RuntimeError):
        await task
    await until(lambda: gateway_listeners(gateway) == before, what="UNLISTEN after the error")

    stream = listener.events("a", None)
    waiting = asyncio.create_task(take(stream, 1))
    await until(lambda: gateway_listeners(gateway) > before)
    waiting.cancel()  # cancelled while it waits, with a reference still held
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert stream.closed
    await until(lambda: gateway_listeners(gateway) == before, what="UNLISTEN after the cancel")
    with pytest.raises(StopAsyncIteration):  # a closed iterator stays ended
        await stream.__anext__()


async def test_async_with_and_close_end_the_iterators(gateway: ServerRouter) -> None:
    client = AsyncClientRouter("127.0.0.1", gateway.port, name="c", backoff=FAST)
    await client.connect()
    before = gateway_listeners(gateway)
    async with client.events(None, "#connect") as stream:
        await until(lambda: gateway_listeners(gateway) > before)
    assert stream.closed  # at once, no garbage collection needed
    await until(lambda: gateway_listeners(gateway) == before)

    ended: list[int] = []

    async def read_all() -> None:
        async for _ in client.events():
            pass
        ended.append(1)

    task = asyncio.create_task(read_all())
    await until(lambda: gateway_listeners(gateway) > before)
    await client.close()
    await task  # the iterator ended (StopAsyncIteration), it did not hang
    assert ended == [1]
    with pytest.raises(sig.InvalidNameError):
        client.events("bad\x00name")
    with pytest.raises(ValueError):
        client.events(max_queued=0)


async def test_an_iterator_keeps_receiving_after_the_gateway_restarts() -> None:
    gw = ServerRouter("127.0.0.1", 0)
    await gw.start()
    port = gw.port
    client = AsyncClientRouter("127.0.0.1", port, name="c", backoff=FAST)
    sending = AsyncClientRouter("127.0.0.1", port, name="s", backoff=FAST)
    async with client, sending, client.events("a", "x") as stream:
        s = await sending.add_sender("a", ["x"])
        s.trigger("x", 1)
        assert [i.data for i in await take(stream, 1)] == [1]
        await gw.stop()
        await until(lambda: not client.is_connected and not sending.is_connected)
        gw = ServerRouter("127.0.0.1", port)
        await gw.start()
        await client.wait_connected(10)
        await sending.wait_connected(10)
        await until(lambda: gw.core.table.subscribers("a", "x"), what="LISTEN replayed")
        s.trigger("x", 2)
        assert [i.data for i in await take(stream, 1)] == [2]
    await gw.stop()
