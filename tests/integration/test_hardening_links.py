"""Issue 9, links: bounded output of every kind, stalls, connection limits, deadlines.

Every peer here is a real socket on 127.0.0.1. A flooder is a raw socket with
a tiny receive buffer that sends HELLO and then requests, PINGs or
``$gateway links`` calls without ever reading. The gateway must:

* keep what it queues for the flooder within ``max_queued`` plus one reply,
  stop reading it (so TCP pushes back), and keep answering a good client;
* after ``stall_timeout``, abort the flooder, count why (``closed_stalled``)
  and count what it discarded (``discarded_frames`` / ``discarded_bytes``);
* never drop a reply: a peer that floods, then reads, gets every answer in order;
* bound connections (``max_connections``: evict a pre-HELLO link, else refuse),
  survive EMFILE without a traceback flood, close peers that never send HELLO
  and HELLO-only peers that never answer PING;
* report the event-loop lag in ``$gateway stats`` and ``sig links``.

Every loop is bounded; waits are on conditions (``until``), never on time.
"""

from __future__ import annotations

import asyncio
import math
import re
import resource
import select
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from procs import ROOT, Proc, child_env, until

from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.protocol.frame import FrameDecoder, encode_frame
from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import FD_RESERVE, ServerRouter

HIGH_WATER = 32 * 1024
MAX_QUEUED = 64 * 1024
FLOOD_LIMIT = 64 << 20  #: bytes a flooder may send before the test gives up
HELLO_FRAME = encode_frame(w.encode(w.Hello("x", 65535, 0)))


def frame(msg: w.Message) -> bytes:
    return encode_frame(w.encode(msg))


def raw_socket(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A connected, non-blocking socket with a small receive buffer (set before connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def writable(sock: socket.socket) -> bool:
    return bool(select.select([], [sock], [], 0)[1])


def gone(sock: socket.socket) -> bool:
    """True once the gateway has closed ``sock`` (EOF or reset); drains what arrived."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def row(gw: ServerRouter, peer: str) -> dict[str, Any] | None:
    for link in gw.links():
        if link["peer"] == peer:
            return link
    return None


def link_of(gw: ServerRouter, peer: str) -> Any:
    return next(s.link for s in gw.core.sessions if s.peer == peer)


class Flooder:
    """Sends frames without reading, keeping frame boundaries across partial sends."""

    def __init__(self, gw: ServerRouter, name: str) -> None:
        self.gw, self.name = gw, name
        self.sock = raw_socket(gw.port)
        self.sock.sendall(frame(w.Hello(name, 65535, 0)))
        self.sent = 0
        self.closed = False

    async def opened(self) -> None:
        await until(lambda: row(self.gw, self.name) is not None, what=f"{self.name} open")

    async def run(self, make: Callable[[int], bytes], done: Callable[[], bool]) -> int:
        """Send ``make(i)`` for i = 0, 1, ... until ``done()`` or the gateway closes us.

        Returns how many frames went out whole (a frame cut by the stop is not one).
        """
        pending = b""
        i = 0
        while not done():
            assert self.sent < FLOOD_LIMIT, f"{self.name}: {self.sent} bytes and not done"
            if not pending:
                pending = b"".join(make(i + k) for k in range(64))
                i += 64
            try:
                n = self.sock.send(pending)
            except BlockingIOError:
                await until(
                    lambda: done() or writable(self.sock), what=f"{self.name}: paused or writable"
                )
                continue
            except OSError:  # reset: the gateway aborted us
                self.closed = True
                break
            pending = pending[n:]
            self.sent += n
            await asyncio.sleep(0)  # one loop turn for the gateway (a yield, not a wait)
        return i - pending.count(0)  # every frame ends with its only 0x00

    def fill(self, make: Callable[[int], bytes]) -> int:
        """Send until the kernel takes no more (both sides' buffers full); bytes sent."""
        chunk = b"".join(make(k) for k in range(64))
        start = self.sent
        pending = chunk
        while True:
            assert self.sent - start < FLOOD_LIMIT, f"{self.name}: the gateway keeps reading"
            try:
                n = self.sock.send(pending)
            except BlockingIOError:
                return self.sent - start
            self.sent += n
            pending = pending[n:] or chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def gw(request: pytest.FixtureRequest) -> AsyncIterator[ServerRouter]:
    options = {"high_water": HIGH_WATER, "max_queued": MAX_QUEUED, **getattr(request, "param", {})}
    router = ServerRouter("127.0.0.1", 0, **options)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@pytest.fixture
async def good(gw: ServerRouter) -> AsyncIterator[AsyncClientRouter]:
    client = AsyncClientRouter("127.0.0.1", gw.port, name="good", auto_reconnect=False)
    await client.connect()
    await client.add_sender("filler", ["a", "b", "c"])  # so that links answers are not tiny
    try:
        yield client
    finally:
        await client.close()


FLOODS: dict[str, Callable[[int], bytes]] = {
    "gateway-links": lambda i: frame(w.Request(i, "$gateway", "links")),
    "ping": lambda i: frame(w.Ping(7)),
    "no-such-sender": lambda i: frame(w.Request(i, "nobody", "x")),
}


def largest_reply(gw: ServerRouter, kind: str) -> int:
    """The largest frame one flood message can make the gateway queue (plus slack)."""
    if kind == "gateway-links":
        return len(frame(w.Response(0xFFFFFFFF, 0, "", pack(gw.links())))) + 512
    if kind == "ping":
        return len(frame(w.Pong(7)))
    return len(frame(w.Response(0xFFFFFFFF, 9, "no sender named 'nobody' is connected"))) + 64


@pytest.mark.parametrize("kind", sorted(FLOODS))
async def test_non_reading_flooder_is_bounded_and_not_read(
    gw: ServerRouter, good: AsyncClientRouter, kind: str
) -> None:
    flooder = Flooder(gw, "flood")
    await flooder.opened()
    answers = 0

    def paused() -> bool:
        link = row(gw, "flood")
        return link is not None and link["reading_paused"]

    try:
        await flooder.run(FLOODS[kind], paused)
        link = row(gw, "flood")
        assert link is not None and link["read_pauses"] >= 1
        # Bounded: the cap, plus the one reply that crossed it.
        bound = MAX_QUEUED + largest_reply(gw, kind)
        assert MAX_QUEUED < link["queued_bytes"] <= bound, (link["queued_bytes"], bound)
        # Not read any more, while the loop demonstrably runs: a good client is
        # answered over and over, the flooder's counters do not move.
        before = (link["bytes_in"], link["frames_in"], link["queued_bytes"])
        flooder.fill(FLOODS[kind])  # TCP pushes back: the kernel buffers fill up
        for _ in range(20):
            stats = await good.request("$gateway", "stats")
            answers += 1
            assert stats["links"] == 2
        after = row(gw, "flood")
        assert after is not None and after["reading_paused"]
        assert (after["bytes_in"], after["frames_in"], after["queued_bytes"]) == before
        assert not writable(flooder.sock)  # and stay full: the gateway reads nothing
        assert after["dropped"] == 0  # nothing dropped: replies are never dropped
    finally:
        flooder.close()
    assert answers == 20


async def test_flood_then_read_gets_every_reply_in_order(gw: ServerRouter) -> None:
    """Bodies held while paused are handled on resume, in order; no reply is lost."""
    flooder = Flooder(gw, "flood")
    await flooder.opened()

    def paused() -> bool:
        link = row(gw, "flood")
        return link is not None and link["reading_paused"]

    try:
        sent = await flooder.run(lambda i: frame(w.Request(i + 1, "$gateway", "stats")), paused)
        assert paused()
        decoder = FrameDecoder()
        ids: list[int] = []
        loop = asyncio.get_running_loop()

        async def read_all() -> None:
            while len(ids) < sent:
                data = await loop.sock_recv(flooder.sock, 1 << 16)
                assert data, f"closed after {len(ids)} of {sent} replies"
                for body in decoder.feed(data):
                    msg = w.decode(body)
                    if isinstance(msg, w.Response):
                        assert msg.status == ErrorCode.OK, msg
                        ids.append(msg.request_id)

        await asyncio.wait_for(read_all(), 30)
        assert ids == list(range(1, sent + 1))
        link = row(gw, "flood")
        assert link is not None and not link["reading_paused"] and link["read_pauses"] >= 1
    finally:
        flooder.close()


async def test_half_closed_peer_gets_every_reply(gw: ServerRouter) -> None:
    """A burst larger than one turn, then EOF: the held requests are still answered."""
    n = 500  # far more than one turn's 64 frames
    sock = raw_socket(gw.port, rcvbuf=1 << 20)
    burst = frame(w.Hello("half", 65535, 0))
    burst += b"".join(frame(w.Request(i, "$gateway", "stats")) for i in range(1, n + 1))
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, burst)
    sock.shutdown(socket.SHUT_WR)
    decoder = FrameDecoder()
    ids: list[int] = []

    async def read_to_eof() -> None:
        while data := await loop.sock_recv(sock, 1 << 16):
            for body in decoder.feed(data):
                msg = w.decode(body)
                if isinstance(msg, w.Response):
                    ids.append(msg.request_id)

    try:
        await asyncio.wait_for(read_to_eof(), 30)
    finally:
        sock.close()
    assert ids == list(range(1, n + 1))


@pytest.mark.parametrize("gw", [{"stall_timeout": 0.5}], indirect=True)
async def test_stalled_flooder_is_closed_counted_and_its_queue_counted(
    gw: ServerRouter, good: AsyncClientRouter
) -> None:
    flooder = Flooder(gw, "flood")
    await flooder.opened()
    link = link_of(gw, "flood")
    pong = len(frame(w.Pong(7)))
    try:
        await flooder.run(FLOODS["ping"], link.closed.is_set)
        await until(link.closed.is_set, what="stalled flooder closed")
    finally:
        flooder.close()
    assert link.close_reason == "stalled"
    # What was queued when it was aborted is counted, frame by frame: only
    # PONGs were queued (WELCOME went long before), a cut one counts as one.
    assert 0 < link.discarded_bytes <= MAX_QUEUED + pong
    assert link.discarded_frames == math.ceil(link.discarded_bytes / pong)
    stats = await good.request("$gateway", "stats")
    assert stats["closed_stalled"] == 1
    assert stats["discarded_frames"] == link.discarded_frames
    assert stats["discarded_bytes"] == link.discarded_bytes
    assert stats["links"] == 1 and stats["connections"] == 1
    links = await good.request("$gateway", "links")
    assert [x["peer"] for x in links] == ["good"]


# --- connection limits ---------------------------------------------------------


@pytest.mark.parametrize("gw", [{"max_connections": 3}], indirect=True)
async def test_limit_evicts_the_oldest_pre_hello_link_then_refuses(
    gw: ServerRouter, good: AsyncClientRouter
) -> None:
    silent = [raw_socket(gw.port) for _ in range(2)]  # 3 of 3: good + 2 without HELLO
    await until(lambda: gw.core.gauges["connections"] == 3, what="3 connections")
    newcomer = AsyncClientRouter("127.0.0.1", gw.port, name="newcomer", auto_reconnect=False)
    await newcomer.connect()  # evicts the oldest silent one
    try:
        await until(lambda: gone(silent[0]), what="oldest pre-HELLO link evicted")
        assert not gone(silent[1])
        stats = await newcomer.request("$gateway", "stats")
        assert stats["closed_evicted"] == 1 and stats["connections"] == 3
        # silent[1] is the only one without HELLO: the next newcomer evicts it too.
        third = AsyncClientRouter("127.0.0.1", gw.port, name="third", auto_reconnect=False)
        await third.connect()
        await until(lambda: gone(silent[1]), what="second pre-HELLO link evicted")
        # Now every link has a session: a fourth is refused, and nobody is hurt.
        refused = raw_socket(gw.port)
        silent.append(refused)
        await until(lambda: gone(refused), what="connection over the limit refused")
        stats = await third.request("$gateway", "stats")
        assert stats["refused_connections"] == 1 and stats["closed_evicted"] == 2
        assert await good.request("$gateway", "stats")
        await third.close()
    finally:
        await newcomer.close()
        for sock in silent:
            sock.close()


def limited(nofile: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return apply


_LISTENING = re.compile(r"listening on \S+:(\d+)")


def serve_limited(nofile: int, *args: str) -> tuple[Proc, int]:
    """``sig serve`` with RLIMIT_NOFILE lowered to ``nofile``; (process, port)."""
    argv = [sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1", "--port", "0"]
    proc = Proc([*argv, "--no-timer", *args], env=child_env(), cwd=ROOT, preexec_fn=limited(nofile))
    match = _LISTENING.search(proc.wait_line(lambda s: _LISTENING.search(s) is not None))
    assert match is not None
    return proc, int(match.group(1))


async def stats_of(port: int) -> dict[str, Any]:
    client = AsyncClientRouter("127.0.0.1", port, name="real", auto_reconnect=False)
    await client.connect()
    try:
        stats: dict[str, Any] = await client.request("$gateway", "stats")
        return stats
    finally:
        await client.close()


async def test_default_limit_from_rlimit_keeps_a_real_client_served() -> None:
    nofile = 160
    proc, port = serve_limited(nofile, "--hello-timeout", "60")
    idle: list[socket.socket] = []
    try:
        for _ in range(150):  # more than the limit: the gateway evicts, never stalls
            idle.append(raw_socket(port))
        await until(lambda: sum(gone(s) for s in idle) >= 150 - (nofile - FD_RESERVE))
        stats = await stats_of(port)
        assert stats["max_connections"] == nofile - FD_RESERVE
        assert stats["closed_evicted"] >= 150 - (nofile - FD_RESERVE) + 1, stats
        assert stats["refused_connections"] == 0 and stats["accept_errors"] == 0
    finally:
        for sock in idle:
            sock.close()
        proc.signal(15)
        proc.wait()
    err = proc.stderr_text()
    assert "Traceback" not in err
    assert len(re.findall("evicting", err)) == 1, err  # one line a minute, not one per link


async def test_out_of_descriptors_backs_off_with_one_log_line_and_serves() -> None:
    # The limit above the descriptors: accept() itself fails with EMFILE.
    proc, port = serve_limited(48, "--max-connections", "1000", "--hello-timeout", "60")
    idle: list[socket.socket] = []
    try:
        for _ in range(80):
            idle.append(raw_socket(port))
        stats = await stats_of(port)  # served: EMFILE frees a pre-HELLO link's descriptor
        assert stats["accept_errors"] >= 1 and stats["closed_evicted"] >= 1
    finally:
        for sock in idle:
            sock.close()
        proc.signal(15)
        proc.wait()
    err = proc.stderr_text()
    assert "Traceback" not in err
    assert len(re.findall("accept failed", err)) == 1, err
    assert len(err) < 4096, err  # before: 170 KB of tracebacks in 3 s


# --- deadlines -----------------------------------------------------------------


@pytest.mark.parametrize("gw", [{"hello_timeout": 0.3}], indirect=True)
async def test_hello_deadline_closes_silent_dribbling_and_ping_only_peers(
    gw: ServerRouter, good: AsyncClientRouter
) -> None:
    silent = raw_socket(gw.port)
    dribbler = raw_socket(gw.port)
    pinger = raw_socket(gw.port)
    dribble = iter(HELLO_FRAME[:-1] * 1000)  # a HELLO that never ends

    def dribbled_out() -> bool:
        """One more byte of the endless HELLO per poll, until the gateway hangs up."""
        if gone(dribbler):
            return True
        dribbler.send(bytes([next(dribble)]))
        return False

    def pinged_out() -> bool:
        if gone(pinger):
            return True
        pinger.send(frame(w.Ping(1)))  # answered (PONG) but opens nothing
        return False

    try:
        await until(dribbled_out, what="dribbler closed")
        await until(pinged_out, what="ping-only peer closed")
        await until(lambda: gone(silent), what="silent peer closed")
        stats = await good.request("$gateway", "stats")
        assert stats["closed_hello_timeout"] == 3
        assert stats["connections"] == 1  # the good client, which sent HELLO at once
    finally:
        for sock in (silent, dribbler, pinger):
            sock.close()


@pytest.mark.parametrize("gw", [{"tcp_keepalive": 0.5}], indirect=True)
async def test_hello_only_peer_that_never_answers_ping_is_closed(
    gw: ServerRouter, good: AsyncClientRouter
) -> None:
    sock = raw_socket(gw.port)
    sock.sendall(frame(w.Hello("idle", 65535, 0)))  # asks for no keepalive at all
    decoder = FrameDecoder()
    got: list[w.Message] = []

    def closed() -> bool:
        try:
            while data := sock.recv(65536):
                got.extend(w.decode(b) for b in decoder.feed(data))
            return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    try:
        await until(closed, what="idle HELLO-only peer closed")
    finally:
        sock.close()
    assert got[0] == w.Welcome(gw.core.name, gw.core.max_body, 500)  # the gateway's keepalive
    assert w.Ping(0) in got  # it was asked, and did not answer
    stats = await good.request("$gateway", "stats")
    assert stats["closed_link_timeout"] == 1 and stats["connections"] == 1


# --- event-loop lag --------------------------------------------------------------


async def test_loop_lag_is_measured_and_reported(gw: ServerRouter, good: AsyncClientRouter) -> None:
    stats = await good.request("$gateway", "stats")
    assert stats["loop_lag_ms"] >= 0 and 0 <= stats["max_loop_lag_ms"] < 60_000
    # Block the event loop on purpose: this is the stall to measure. The tick due
    # in it is due at most POLL_INTERVAL (0.1 s) after it began, so it runs
    # at least 0.25 s late.
    time.sleep(0.35)
    await until(lambda: gw.max_loop_lag >= 0.25, what="the stall measured")
    stats = await good.request("$gateway", "stats")
    assert stats["max_loop_lag_ms"] >= 250 and stats["max_loop_lag_ms"] >= stats["loop_lag_ms"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sig",
        "links",
        "--port",
        str(gw.port),
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    last = out.decode().strip().splitlines()[-1]
    match = re.search(r"loop lag ([\d.]+) ms \(max ([\d.]+) ms\)", last)
    assert last.startswith("gateway: ") and match is not None, last
    assert float(match.group(2)) >= 250
    assert "closed: " in last and "/" in last.split()[1]  # connections/max_connections
