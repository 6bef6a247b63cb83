"""The asyncio client against an in-process gateway: reconnect the nats-core way
(stop the real gateway, start a new one on the same port, the same listener
receives again) and coroutine callbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from procs import until

import sig
from sig.routers.client import AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.1)


async def test_same_listener_receives_after_gateway_restart() -> None:
    gw = ServerRouter("127.0.0.1", 0)
    await gw.start()
    port = gw.port
    got: list[Any] = []
    connects: list[int] = []

    async def on_tick(info: dict[str, Any], data: Any) -> None:  # coroutine callbacks work
        await asyncio.sleep(0)
        got.append(data)

    listener = AsyncClientRouter("127.0.0.1", port, name="l", backoff=FAST)
    sender_client = AsyncClientRouter("127.0.0.1", port, name="s", backoff=FAST)
    listener.on_connected = lambda: connects.append(1)
    async with listener, sender_client:
        await listener.add_listener(on_tick, "remote", "tick")
        sender = await sender_client.add_sender("remote", ["tick"], {"n": lambda p: len(got)})
        for rnd in range(3):
            sender.trigger("tick", rnd)

            def arrived(r: int = rnd) -> bool:
                return got == list(range(r + 1))

            await until(arrived, what=f"tick {rnd}")
            assert await listener.request("remote", "n") == rnd + 1
            await gw.stop()
            await until(lambda: not listener.is_connected and not sender_client.is_connected)
            with pytest.raises(sig.NotConnectedError):
                await listener.request("remote", "n")
            gw = ServerRouter("127.0.0.1", port)
            await gw.start()
            await listener.wait_connected(10)
            await sender_client.wait_connected(10)
            senders = await listener.list_senders()
            assert list(senders) == ["remote"]
        assert listener.stats["reconnects"] == 3 and len(connects) == 4
    await gw.stop()


async def test_name_taken_while_away_does_not_break_the_connection() -> None:
    """A's sender name is taken by someone else when A comes back: A stays
    connected with its listeners, its triggers for that sender are dropped and
    counted (not sent as TRIGGERs the gateway would refuse), no connection leaks."""
    gw = ServerRouter("127.0.0.1", 0)
    await gw.start()
    port = gw.port
    got: list[Any] = []
    a = AsyncClientRouter("127.0.0.1", port, name="a", backoff=FAST)
    async with a:
        mine = await a.add_sender("x", ["e"])
        await a.add_listener(lambda info, data: got.append(data), "beacon", "b")
        await gw.stop()
        await until(lambda: not a.is_connected)
        gw = ServerRouter("127.0.0.1", port)
        await gw.start()
        gw.add_sender("x", ["e"])  # taken before A can come back
        beacon = gw.add_sender("beacon", ["b"])
        await a.wait_connected(10)
        for i in range(50):
            mine.trigger("e", i)
        beacon.trigger("b", "still here")
        await until(lambda: got == ["still here"], what="listener of A still served")
        links = gw.links()
        assert [x["peer"] for x in links] == ["a"]  # one link: nothing leaked
        # The refused registration is a refusal, not a protocol error, and the
        # client sent no TRIGGER for the refused sender: the link has no errors.
        assert links[0]["protocol_errors"] == 0 and links[0]["senders"] == []
        assert a.is_connected and a.stats["reconnects"] == 1
        assert a.stats["dropped_unregistered"] == 50
    await gw.stop()


async def test_adding_a_refused_sender_again_retries_and_reports() -> None:
    """Seed-style code calls add_sender again in on_connected: it gets the clear
    error while the name is taken, and the sender works once the name is free."""
    gw = ServerRouter("127.0.0.1", 0)
    await gw.start()
    port = gw.port
    a = AsyncClientRouter("127.0.0.1", port, name="a", backoff=FAST)
    async with a:
        await a.add_sender("x", ["e"])
        await gw.stop()
        await until(lambda: not a.is_connected)
        gw = ServerRouter("127.0.0.1", port)
        await gw.start()
        gw.add_sender("x", ["e"])
        await a.wait_connected(10)
        with pytest.raises(sig.DuplicateSenderError):
            await a.add_sender("x", ["e"])
        gw.remove_sender("x")
        got: list[Any] = []
        gw.add_listener(lambda info, data: got.append(data), "x", "e")
        sender = await a.add_sender("x", ["e"])
        sender.trigger("e", 1)
        await until(lambda: got == [1])
    await gw.stop()


async def test_sync_and_coroutine_request_handlers_and_their_errors() -> None:
    """Sync handlers answer inline, coroutine handlers from a task; errors are typed."""

    async def slow_double(params: Any) -> Any:
        await asyncio.sleep(0)
        return params * 2

    async def async_boom(params: Any) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("async failure")

    def bad_result(params: Any) -> Any:
        return object()  # not representable in CBOR

    async with ServerRouter("127.0.0.1", 0) as gw:
        handler = AsyncClientRouter("127.0.0.1", gw.port, name="h")
        asker = AsyncClientRouter("127.0.0.1", gw.port, name="a")
        async with handler, asker:
            await handler.add_sender(
                "S",
                [],
                {
                    "double": lambda p: p * 2,
                    "adouble": slow_double,
                    "aboom": async_boom,
                    "bad": bad_result,
                },
            )
            assert await asker.request("S", "double", 4) == 8
            assert await asker.request("S", "adouble", 5) == 10
            with pytest.raises(sig.HandlerError, match="async failure"):
                await asker.request("S", "aboom")
            with pytest.raises(sig.HandlerError, match="cannot send object"):
                await asker.request("S", "bad")
            with pytest.raises(sig.RequestTimeout):  # the answer needs more than 0 s
                await asker.request("S", "adouble", 1, timeout=0)
            assert await asker.request("S", "double", 1) == 2  # a late answer harms nothing
