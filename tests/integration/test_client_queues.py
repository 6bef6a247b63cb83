"""Bounded client delivery queues (issue 9, item 7): a listener slower than
the incoming rate costs at most ``max_queued_events`` waiting calls; the rest
are dropped, counted in ``stats["dropped_slow_listener"]`` and logged once.
Hooks and request handlers are never dropped.

Real gateways (``sig serve`` in a process, or in-process for the asyncio
client), bounded bursts; the slow callback blocks on an event, not a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from procs import Gateway, until, wait_until

import sig
from sig.routers import sync as sync_module
from sig.routers.client import DEFAULT_MAX_QUEUED_EVENTS, AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter

T = 10.0
BURST = 300
FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.1)


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.messages.append(record.getMessage())

    def count(self, text: str) -> int:
        with self.guard:
            return sum(text in m for m in self.messages)


@pytest.fixture
def warnings_log() -> Iterator[Warnings]:
    handler = Warnings()
    log = logging.getLogger("sig")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


def test_slow_sync_listener_is_bounded_counted_and_hooks_still_run(
    warnings_log: Warnings,
) -> None:
    gw = Gateway()
    limit = 25
    gate = threading.Event()
    calls: list[Any] = []
    order: list[str] = []

    def slow(info: dict[str, Any], data: Any) -> None:
        gate.wait(3 * T)  # the first call holds the dispatcher until released
        calls.append(data)
        order.append("event")

    slow_client = sig.ClientRouter(port=gw.port, name="slow", backoff=FAST, max_queued_events=limit)
    src = sig.ClientRouter(port=gw.port, name="src", backoff=FAST, auto_reconnect=False)
    try:
        assert slow_client.max_queued_events == limit
        slow_client.connect()
        slow_client.add_listener(slow, "burst", "e")
        slow_client.add_sender("svc", [], {"ping": lambda p: ["pong", p]})
        slow_client.on_disconnected = lambda: order.append("disconnected")
        src.connect()
        burst = src.add_sender("burst", ["e"])
        for i in range(BURST):
            burst.trigger("e", i)
        wait_until(lambda: slow_client.stats["events_in"] == BURST, T, "the whole burst read")
        # the listener is stuck and its queue full, yet requests are answered
        assert src.request("svc", "ping", 7) == ["pong", 7]
        stats = slow_client.stats
        dropped = stats["dropped_slow_listener"]
        # `limit` calls wait, at most one more is in the callback already
        assert BURST - limit - 1 <= dropped <= BURST - limit, stats
        assert warnings_log.count("listener callbacks are slower than events arrive") == 1
        src.close()
        assert gw.stop() == 0  # on_disconnected is queued behind a full queue
        wait_until(lambda: not slow_client.is_connected, T, "the client sees the gateway go")
        gate.set()
        wait_until(lambda: "disconnected" in order, T, "on_disconnected, never dropped")
        assert len(calls) == BURST - dropped
        # In arrival order; the first `limit` always fit (which later ones got in
        # depends on when the dispatcher thread took the first call).
        assert calls == sorted(set(calls)) and calls[:limit] == list(range(limit))
        assert order == ["event"] * len(calls) + ["disconnected"]
        assert slow_client.stats["dropped_slow_listener"] == dropped
    finally:
        gate.set()
        src.close()
        slow_client.close()
        gw.stop()


def test_default_bound_and_a_bad_one() -> None:
    client = sig.ClientRouter(name="c")
    try:
        assert client.max_queued_events == DEFAULT_MAX_QUEUED_EVENTS == 10_000
        assert client.stats["dropped_slow_listener"] == 0
    finally:
        client.close()
    with pytest.raises(ValueError, match="max_queued_events"):
        AsyncClientRouter(max_queued_events=0)


async def test_async_coroutine_listeners_are_bounded_too(warnings_log: Warnings) -> None:
    gw = ServerRouter("127.0.0.1", 0)
    await gw.start()
    limit = 10
    gate = asyncio.Event()
    done: list[Any] = []
    hooks: list[str] = []

    async def slow(info: dict[str, Any], data: Any) -> None:
        await gate.wait()
        done.append(data)

    client = AsyncClientRouter("127.0.0.1", gw.port, name="slow", max_queued_events=limit)
    client.on_disconnected = lambda: hooks.append("disconnected")
    try:
        await client.connect()
        await client.add_listener(slow, "burst", "e")
        burst = gw.add_sender("burst", ["e"])
        for i in range(BURST):
            burst.trigger("e", i)
        await until(lambda: client.stats["events_in"] == BURST, T, "the whole burst read")
        assert client.stats["dropped_slow_listener"] == BURST - limit
        assert warnings_log.count("listener callbacks are slower than events arrive") == 1
        gate.set()
        await until(lambda: len(done) == limit, T, "the waiting callbacks finish")
        assert done == list(range(limit))
        burst.trigger("e", "after")  # room again: delivered
        await until(lambda: done[-1] == "after", T, "a call after the queue drained")
        await gw.stop()
        await until(lambda: hooks == ["disconnected"], T, "on_disconnected")
    finally:
        await client.close()
        await gw.stop()


def test_hooks_are_bounded_while_the_dispatcher_is_stuck(
    warnings_log: Warnings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reconnect queues hooks; a dispatcher stuck in a callback for good cannot
    make them pile up without end: past MAX_QUEUED_HOOKS new ones are dropped and
    counted. (Three gateway restarts queue six hooks against a bound of four.)"""
    monkeypatch.setattr(sync_module, "MAX_QUEUED_HOOKS", 4)
    gate = threading.Event()
    seen: list[str] = []
    gw = Gateway()
    port = gw.port
    client = sig.ClientRouter(port=port, name="stuck", backoff=FAST)
    try:
        client.connect()
        client.add_listener(lambda info, data: gate.wait(3 * T), "burst", "e")
        client.on_connected = lambda: seen.append("connected")
        client.on_disconnected = lambda: seen.append("disconnected")
        src = sig.ClientRouter(port=port, name="src", auto_reconnect=False)
        src.connect()
        src.add_sender("burst", ["e"]).trigger("e", 1)  # the dispatcher is stuck from here
        wait_until(lambda: client.stats["events_in"] == 1, T, "the event that blocks")
        src.close()
        for restart in range(3):
            assert gw.stop() == 0
            wait_until(lambda: not client.is_connected, T, "the client sees the gateway go")
            gw = Gateway(port)
            wait_until(lambda: client.is_connected, T, f"reconnect {restart + 1}")
        assert client.stats["dropped_hooks"] == 2
        assert warnings_log.count("the dispatcher is stuck") == 1
        gate.set()
        wait_until(lambda: len(seen) == 4, T, "the hooks that fit")
        assert seen == ["disconnected", "connected", "disconnected", "connected"]
    finally:
        gate.set()
        client.close()
        gw.stop()
