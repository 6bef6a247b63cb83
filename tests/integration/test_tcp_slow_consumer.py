"""A listener that stops reading must not hurt anyone else.

The slow peer is a raw socket that sends HELLO + LISTEN(everything) and then
never reads. The gateway (in-process, so its link counters are visible) keeps
delivering to a well-behaved listener, keeps its queue for the slow link
under the high-water mark plus one frame, counts the drops where ``links``
and ``stats`` show them, and closes the stalled link after ``stall_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from procs import until

from sig.protocol import messages as w
from sig.protocol.frame import encode_frame
from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter

HIGH_WATER = 32 * 1024
PAYLOAD = b"x" * 1000
BATCH = 32
MAX_BATCHES = 400  # 400 x 32 x ~1 kB = ~13 MB at most: far above any socket buffers


def raw_listener(port: int) -> tuple[socket.socket, bytes]:
    """HELLO + LISTEN(None, None) on a socket with a tiny receive buffer; never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    hello = encode_frame(w.encode(w.Hello("slow", 65535, 0)))
    listen = encode_frame(w.encode(w.Listen(1, None, None)))
    return sock, hello + listen


def slow_link(gw: ServerRouter) -> dict[str, Any] | None:
    for link in gw.links():
        if link["peer"] == "slow":
            return link
    return None


@pytest.fixture
async def setup(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ServerRouter, AsyncClientRouter, list[Any], socket.socket]]:
    stall = getattr(request, "param", 30.0)
    gw = ServerRouter("127.0.0.1", 0, high_water=HIGH_WATER, stall_timeout=stall)
    await gw.start()
    good = AsyncClientRouter("127.0.0.1", gw.port, name="good", auto_reconnect=False)
    await good.connect()
    got: list[Any] = []
    await good.add_listener(lambda info, data: got.append(data), "pump", "data")
    sock, greeting = raw_listener(gw.port)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, greeting)
    await until(lambda: (x := slow_link(gw)) and x["listeners"] == 1, what="slow link listening")
    try:
        yield gw, good, got, sock
    finally:
        sock.close()
        await good.close()
        await gw.stop()


async def pump(
    gw: ServerRouter, got: list[Any], stop: Callable[[], bool], each: Callable[[], Awaitable[None]]
) -> int:
    """Trigger batches, each delivered in full to the good listener, until ``stop()``."""
    sender = gw.get_sender("pump") or gw.add_sender("pump", ["data"])
    sent = 0
    for batch in range(MAX_BATCHES):
        for i in range(BATCH):
            sender.trigger("data", [batch, i, PAYLOAD])
        sent += BATCH

        def all_in(n: int = sent) -> bool:
            return len(got) == n

        await until(all_in, what=f"good listener got {sent}")
        await each()
        if stop():
            return sent
    raise AssertionError(f"condition not reached after {MAX_BATCHES} batches")


async def test_slow_listener_is_bounded_and_its_drops_counted(
    setup: tuple[ServerRouter, AsyncClientRouter, list[Any], socket.socket],
) -> None:
    gw, good, got, _ = setup
    frame_max = len(encode_frame(w.encode(w.Event("pump", "data", b"\x00" * 1100))))
    peak = 0

    async def check() -> None:
        nonlocal peak
        link = slow_link(gw)
        assert link is not None
        peak = max(peak, link["queued_bytes"])
        assert link["queued_bytes"] <= HIGH_WATER + frame_max, link

    # Well past the first drop: the queue must stay bounded while drops go on.
    sent = await pump(gw, got, lambda: (slow_link(gw) or {}).get("dropped_events", 0) > 200, check)
    assert got == [[b // BATCH, b % BATCH, PAYLOAD] for b in range(sent)]  # all, in order
    assert peak > HIGH_WATER // 2  # the bound was actually approached
    link = slow_link(gw)
    assert link is not None and link["dropped_events"] > 200 and link["dropped"] > 200
    # Visible over the network too.
    stats = await good.request("$gateway", "stats")
    assert stats["dropped_events"] >= link["dropped_events"]
    links = await good.request("$gateway", "links")
    (remote,) = [x for x in links if x["peer"] == "slow"]
    assert remote["dropped_events"] >= link["dropped_events"]
    (mine,) = [x for x in links if x["peer"] == "good"]
    assert mine["dropped_events"] == 0


@pytest.mark.parametrize("setup", [0.5], indirect=True)
async def test_stalled_listener_is_closed_after_the_stall_timeout(
    setup: tuple[ServerRouter, AsyncClientRouter, list[Any], socket.socket],
) -> None:
    gw, good, got, sock = setup

    async def nothing() -> None:
        pass

    began = time.monotonic()
    await pump(gw, got, lambda: slow_link(gw) is None, nothing)
    assert time.monotonic() - began < 10
    assert (await good.request("$gateway", "stats"))["links"] == 1
    # The raw socket, once it reads again, finds the connection ended (EOF or reset).
    loop = asyncio.get_running_loop()

    async def drain() -> None:
        with contextlib.suppress(ConnectionResetError):
            while await loop.sock_recv(sock, 1 << 20):
                pass

    await asyncio.wait_for(drain(), 5)
