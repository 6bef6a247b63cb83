"""Delivery policies end to end: many TCP senders -> one slow listener, over real sockets.

The gateway runs in-process (its counters are visible), with a small
high-water mark; each sender is its own TCP connection (an AsyncClientRouter);
the listener is a raw socket with a tiny receive buffer whose reading the test
controls: nothing until the gateway is behind, then slowly, then fast. Every
event carries (sender index, sequence number), so loss and order are exact.
Serial senders are emulated devices on socat ptys.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from procs import Proc, until
from serial_rig import DEADLINE, SerialRig
from socat import SocatPairs

from sig.protocol import messages as w
from sig.protocol.constants import LISTEN_NO_LOCAL, POLICY_BLOCK, POLICY_DROP, POLICY_LATEST
from sig.protocol.data import unpack
from sig.protocol.frame import FrameDecoder, encode_frame
from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter
from sig.routers.sync import ClientRouter

HIGH_WATER = 16 * 1024
SENDERS = 4
PER_SENDER = 3000  # 4 x 3000 x ~110 B = 1.3 MB: far above the high-water mark and socket buffers
PAYLOAD = "x" * 80


class RawListener:
    """A listener on a raw socket: HELLO + LISTEN(options), then reads only when told to."""

    def __init__(self, port: int, options: int, sender: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.port = port
        self.options = options
        self.sender = sender
        self.decoder = FrameDecoder()
        self.events: list[tuple[str, str, Any]] = []
        self.peak = 0  #: the most bytes the gateway had queued for it, as read_until saw

    async def open(self, gw: ServerRouter) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        hello = w.encode(w.Hello("slow", 65535, 0))
        listen = w.encode(w.Listen(1, self.sender, None, self.options))
        await loop.sock_sendall(self.sock, encode_frame(hello) + encode_frame(listen))
        await until(lambda: (row := self.row(gw)) and row["listeners"] == 1, what="listening")

    def row(self, gw: ServerRouter) -> dict[str, Any] | None:
        """The gateway's ``links`` row of this listener, None once it is gone."""
        for link in gw.links():
            if link["peer"] == "slow":
                return link
        return None

    async def read(self, size: int) -> bool:
        """One recv of at most ``size`` bytes; False at EOF or reset."""
        loop = asyncio.get_running_loop()
        try:
            data = await loop.sock_recv(self.sock, size)
        except ConnectionError:
            return False
        for body in self.decoder.feed(data):
            msg = w.decode(body)
            if isinstance(msg, w.Event) and msg.event == "v":  # not the #connects
                self.events.append((msg.sender, msg.event, unpack(msg.data)))
        return bool(data)

    async def read_until(
        self, size: int, cond: Callable[[], bool], gw: ServerRouter | None = None
    ) -> None:
        """Read until ``cond()``; with ``gw``, note the peak of the link's queue in ``peak``."""
        while not cond():
            if gw is not None:
                self.peak = max(self.peak, (self.row(gw) or {}).get("queued_bytes", 0))
            assert await self.read(size), "the gateway closed the listener"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def gw() -> AsyncIterator[ServerRouter]:
    router = ServerRouter("127.0.0.1", 0, high_water=HIGH_WATER, tcp_keepalive=60)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


async def senders(gw: ServerRouter, n: int = SENDERS) -> list[AsyncClientRouter]:
    out = []
    for i in range(n):
        client = AsyncClientRouter("127.0.0.1", gw.port, name=f"c{i}", auto_reconnect=False)
        await client.connect()
        await client.add_sender(f"s{i}", ["v"])
        out.append(client)
    return out


def send_all(clients: list[AsyncClientRouter], count: int = PER_SENDER) -> None:
    """Every sender triggers ``count`` events [i, seq, payload] (its link queues what
    the gateway does not read yet: TCP pushes back on it)."""
    for i, client in enumerate(clients):
        signal = client.get_sender(f"s{i}").get_signal("v")  # type: ignore[union-attr]
        for seq in range(count):
            signal.trigger([i, seq, PAYLOAD])


def per_sender(events: list[tuple[str, str, Any]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for _, _, (i, seq, _) in events:
        out.setdefault(i, []).append(seq)
    return out


async def close_all(clients: list[AsyncClientRouter]) -> None:
    for client in clients:
        await client.close()


async def test_block_many_senders_to_a_slow_listener_lose_nothing(gw: ServerRouter) -> None:
    slow = RawListener(gw.port, POLICY_BLOCK)
    await slow.open(gw)
    clients = await senders(gw)
    try:
        send_all(clients)
        # Not reading: the gateway falls behind and stops reading the senders.
        await until(lambda: gw.core.counters["sender_pauses"] >= 1, what="a sender held")
        total = SENDERS * PER_SENDER
        # Slowly (small reads), then fast, until everything came.
        await slow.read_until(512, lambda: len(slow.events) >= total // 4, gw)
        await slow.read_until(1 << 16, lambda: len(slow.events) >= total, gw)
        got = per_sender(slow.events)
        assert got == {i: list(range(PER_SENDER)) for i in range(SENDERS)}  # all, in order
        row = slow.row(gw)
        assert row is not None
        assert row["dropped"] == row["dropped_events"] == 0
        assert gw.core.counters["dropped_events"] == 0
        assert gw.core.counters["dropped_unpausable"] == 0
        pauses = [r.get("flow_pauses", 0) for r in gw.links() if r["peer"].startswith("c")]
        assert sum(pauses) >= 1, gw.links()
        # Bounded: the listener's queue went past the high-water mark (it was
        # behind) and never past its cap (one event per sender after the mark).
        assert HIGH_WATER < slow.peak <= gw.link_options["max_queued"], slow.peak
    finally:
        slow.close()
        await close_all(clients)


async def test_latest_listener_ends_with_the_last_value_of_every_sender(gw: ServerRouter) -> None:
    slow = RawListener(gw.port, POLICY_LATEST)
    await slow.open(gw)
    clients = await senders(gw)
    total = SENDERS * PER_SENDER
    try:
        send_all(clients)

        def all_routed() -> bool:
            return gw.core.counters["triggers"] >= total

        await until(all_routed, what="every event routed")
        row = slow.row(gw)
        assert row is not None and row["conflated"] > 0, row

        def accounted() -> bool:  # delivered + replaced + dropped: every event, once
            r = slow.row(gw) or {}
            return len(slow.events) + int(r["conflated"]) + int(r["dropped"]) >= total

        await slow.read_until(1 << 16, accounted)
        row = slow.row(gw)
        assert row is not None
        assert len(slow.events) + row["conflated"] + row["dropped"] == total
        got = per_sender(slow.events)
        for i in range(SENDERS):
            assert got[i][-1] == PER_SENDER - 1, i  # the last value of every sender
            assert got[i] == sorted(set(got[i])), i  # in order, none twice
        assert row["conflated"] > 0
    finally:
        slow.close()
        await close_all(clients)


async def test_drop_listener_drops_and_counts_as_before(gw: ServerRouter) -> None:
    slow = RawListener(gw.port, POLICY_DROP)
    await slow.open(gw)
    clients = await senders(gw)
    total = SENDERS * PER_SENDER
    try:
        send_all(clients)
        await until(lambda: gw.core.counters["triggers"] >= total, what="every event routed")
        row = slow.row(gw)
        assert row is not None and row["dropped"] > 0

        def accounted() -> bool:
            r = slow.row(gw) or {}
            return len(slow.events) + int(r["dropped"]) >= total

        await slow.read_until(1 << 16, accounted)
        row = slow.row(gw)
        assert row is not None
        assert len(slow.events) + row["dropped"] == total
        assert row["conflated"] == 0 and gw.core.counters["sender_pauses"] == 0
        assert gw.core.counters["dropped_events"] == row["dropped"]
    finally:
        slow.close()
        await close_all(clients)


async def test_a_block_listener_that_stops_reading_is_closed_not_its_senders() -> None:
    gw = ServerRouter("127.0.0.1", 0, high_water=HIGH_WATER, stall_timeout=0.5, tcp_keepalive=60)
    await gw.start()
    slow = RawListener(gw.port, POLICY_BLOCK)
    await slow.open(gw)
    clients = await senders(gw, 2)
    good = AsyncClientRouter("127.0.0.1", gw.port, name="good", auto_reconnect=False)
    await good.connect()
    got: list[Any] = []

    # Lossless too (block), and it reads: it never holds the senders for long.
    def keep(info: dict[str, Any], data: Any) -> None:
        if info["event"] == "v":
            got.append(data)

    await good.add_listener(keep, policy="block")
    try:
        send_all(clients)
        await until(lambda: gw.core.counters["sender_pauses"] >= 1, what="a sender held")
        # The listener never reads: its stall timeout closes it, and it alone.
        await until(lambda: slow.row(gw) is None, what="the stalled listener closed")
        assert gw.core.counters["closed_stalled"] == 1
        # The senders are read again: every event reaches the listener that reads.
        await until(lambda: len(got) >= 2 * PER_SENDER, what="every event at the good listener")
        assert len(got) == 2 * PER_SENDER
        await until(lambda: not gw.flow.holds and not gw.flow.held_by, what="no hold left")
        rows = {r["peer"]: r for r in gw.links()}
        assert {"c0", "c1", "good"} <= set(rows)  # the senders were never closed
        assert not rows["c0"]["reading_paused"] and not rows["c1"]["reading_paused"]
    finally:
        slow.close()
        await good.close()
        await close_all(clients)
        await gw.stop()


async def test_a_serial_sender_feeding_a_blocked_listener_is_dropped_and_counted(
    socat: SocatPairs, rig: SerialRig
) -> None:
    pair = socat.pair("dev")
    gw = await rig.gateway(pair.a, high_water=HIGH_WATER, tcp_keepalive=60)
    slow = RawListener(gw.port, POLICY_BLOCK, sender="sensor1")
    await slow.open(gw)
    sim = await rig.device(pair.b, events=["v"])
    await sim.wait_for("REGISTERED", DEADLINE)
    try:
        blob = "y" * 200
        sent = 0
        for _ in range(400):  # bounded: 400 x 50 x ~220 B = 4.4 MB at most
            for _ in range(50):
                assert sim.trigger("v", [sent, blob])
                sent += 1
            await until(lambda n=sent: rig.link(pair.a)["triggers"] >= n, what="device events in")
            if gw.core.counters["dropped_unpausable"] > 20:
                break
        else:
            raise AssertionError("the blocked listener never dropped a serial event")
        serial_row = rig.link(pair.a)
        assert not serial_row["reading_paused"] and serial_row.get("flow_pauses", 0) == 0
        row = slow.row(gw)
        assert row is not None and row["dropped"] >= gw.core.counters["dropped_unpausable"]
        assert gw.core.counters["sender_pauses"] == 0
        # What was queued still arrives, in order.
        await slow.read_until(1 << 16, lambda: len(slow.events) + row["dropped"] >= sent)
        seqs = [d[0] for _, e, d in slow.events if e == "v"]
        assert seqs == sorted(seqs) and len(seqs) + row["dropped"] == sent
    finally:
        slow.close()


async def test_no_local_skips_the_listeners_own_link(gw: ServerRouter) -> None:
    a = AsyncClientRouter("127.0.0.1", gw.port, name="a", auto_reconnect=False)
    b = AsyncClientRouter("127.0.0.1", gw.port, name="b", auto_reconnect=False)
    await a.connect()
    await b.connect()
    try:
        mine = await a.add_sender("a", ["#chat"])
        theirs = await b.add_sender("b", ["#chat"])
        a_nolocal: list[Any] = []
        a_all: list[Any] = []
        await a.add_listener(lambda i, d: a_nolocal.append(d), None, "#chat", no_local=True)
        b_got: list[Any] = []
        await b.add_listener(lambda i, d: b_got.append(d), None, "#chat")
        mine.trigger("#chat", "from a 1")
        theirs.trigger("#chat", "from b 1")
        await until(lambda: len(b_got) == 2 and a_nolocal, what="both deliveries")
        assert a_nolocal == ["from b 1"]
        row = next(r for r in gw.links() if r["peer"] == "a")
        assert row["events_out"] == 1  # the gateway did not send a its own event
        # A second, plain listener of the same key on the same link: the link
        # gets its own events again, and the client keeps them from the no_local one.
        await a.add_listener(lambda i, d: a_all.append(d), None, "#chat")
        mine.trigger("#chat", "from a 2")
        theirs.trigger("#chat", "from b 2")
        await until(lambda: len(a_all) == 2 and len(b_got) == 4, what="the second round")
        assert a_all == ["from a 2", "from b 2"]
        assert a_nolocal == ["from b 1", "from b 2"]
    finally:
        await a.close()
        await b.close()


async def test_every_client_api_carries_the_policy_and_keeps_it_across_reconnects(
    gw: ServerRouter,
) -> None:
    def options_of(peer: str) -> set[int]:
        return {
            opts
            for session, rules in gw.core.delivery.links.items()
            if session.peer == peer
            for opts in rules.options.values()
        }

    client = AsyncClientRouter("127.0.0.1", gw.port, name="async", auto_reconnect=True)
    await client.connect()
    loop = asyncio.get_running_loop()
    sync = ClientRouter(host="127.0.0.1", port=gw.port, name="sync", auto_reconnect=False)
    await loop.run_in_executor(None, sync.connect)
    try:
        await client.add_listener(lambda i, d: None, "x", policy="latest")
        await client.add_listener(lambda i, d: None, "y", policy="block", no_local=True)
        await until(lambda: options_of("async") == {POLICY_LATEST, POLICY_BLOCK | LISTEN_NO_LOCAL})
        await loop.run_in_executor(
            None, lambda: sync.add_listener(lambda i, d: None, "x", policy="block")
        )
        assert options_of("sync") == {POLICY_BLOCK}
        with pytest.raises(ValueError, match="unknown delivery policy"):
            await client.add_listener(lambda i, d: None, "x", policy="never")  # type: ignore[arg-type]
        # The gateway drops the link; the client replays its listeners, options included.
        (session,) = [s for s in gw.core.sessions if s.peer == "async"]
        session.link.abort()  # type: ignore[attr-defined]
        await until(lambda: session not in gw.core.sessions, what="the old session gone")
        await until(
            lambda: options_of("async") == {POLICY_LATEST, POLICY_BLOCK | LISTEN_NO_LOCAL},
            what="the listeners replayed with their options",
        )
        # In one process the policy is accepted and changes nothing.
        got: list[Any] = []
        gw.add_listener(lambda i, d: got.append(d), "local", "e", policy="block", no_local=True)
        gw.add_sender("local", ["e"]).trigger("e", 1)
        assert got == [1]
    finally:
        await loop.run_in_executor(None, sync.close)
        await client.close()


async def test_sig_listen_policy_flag_registers_the_policy(gw: ServerRouter) -> None:
    proc = Proc(
        [sys.executable, "-m", "sig", "listen", "--port", str(gw.port), "--sender", "cli",
         "--event", "e", "--policy", "latest", "--no-local", "--count", "1", "--timeout", "30"],
    )  # fmt: skip
    try:

        def listening() -> bool:
            return any(
                POLICY_LATEST | LISTEN_NO_LOCAL in rules.options.values()
                for rules in gw.core.delivery.links.values()
            )

        await until(listening, what="sig listen's LISTEN with its options")
        gw.add_sender("cli", ["e"]).trigger("e", 7)
        line = await asyncio.get_running_loop().run_in_executor(
            None, lambda: proc.wait_line(lambda x: '"event": "e"' in x)
        )
        assert json.loads(line)["data"] == 7
        assert await asyncio.get_running_loop().run_in_executor(None, proc.wait) == 0
    finally:
        proc.kill()


async def test_two_links_that_block_each_other_both_get_everything(gw: ServerRouter) -> None:
    """Each is a sender and a block listener of the other's events: a held link is still
    written to, so both drain as their peers read, and nothing is lost."""
    a, b = await senders(gw, 2)
    got: dict[int, list[Any]] = {0: [], 1: []}
    try:
        await a.add_listener(lambda i, d: got[0].append(d), "s1", "v", policy="block")
        await b.add_listener(lambda i, d: got[1].append(d), "s0", "v", policy="block")
        send_all([a, b])
        await until(
            lambda: len(got[0]) == len(got[1]) == PER_SENDER, what="both got all the other's"
        )
        assert [seq for _, seq, _ in got[0]] == list(range(PER_SENDER))
        assert [seq for _, seq, _ in got[1]] == list(range(PER_SENDER))
        assert gw.core.counters["dropped_events"] == 0
        # Everything released once both queues drained (the last writes taken).
        await until(lambda: not gw.flow.holds and not gw.flow.held_by, what="no hold left")
    finally:
        await close_all([a, b])
