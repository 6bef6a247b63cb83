"""One carrier contract, three carriers: the same tests over TCP, a socat pty and memory.

Each test gets a :class:`Rig`: the link under test (a StreamLink as the
gateway would hold it: accepted on 127.0.0.1, opened on a pty, or one end of
:func:`carriers.memory.memory_pair`) and a raw peer on the other side, which
writes bytes and decodes what it reads with the public codec. What differs
by carrier is stated, not skipped: a UART counts bad frames and goes on, TCP
and memory close; a UART's peer "hangs up" by vanishing (socat killed), the
others by closing their end.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import serial_asyncio_fast as serial_asyncio
from cobs import cobs
from procs import until
from socat import SocatPairs

import carriers
import carriers.link
import sig.core.session
from carriers.memory import memory_pair
from carriers.serial import SerialSettings, open_serial
from carriers.stream import StreamLink
from sig.errors import ReadError
from sig.protocol.frame import FrameDecoder, crc16, encode_frame

HIGH_WATER = 16 << 10  #: small, so that a peer that does not read reaches it soon
#: The keys every link's stats have (sig links and /metrics read them).
STATS_KEYS = {
    "frames_in", "bytes_in", "frames_out", "bytes_out", "crc_errors", "framing_errors",
    "oversize", "dropped", "queued_bytes", "reading_paused", "read_pauses",
    "discarded_frames", "discarded_bytes",
}  # fmt: skip
#: Sends tried at most before the high water must have been reached (bounds the loop).
MAX_SENDS = 200_000


def body(i: int, size: int = 16) -> bytes:
    """A frame body numbered ``i`` (type byte 0x10, then the number, then padding)."""
    return b"\x10" + i.to_bytes(4, "big") + bytes(size)


class Handler:
    """The link's handler: keeps what it is given, and gives the link a session."""

    def __init__(self) -> None:
        self.session = object()
        self.bodies: list[bytes] = []
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.exc: BaseException | None = None
        self.link: StreamLink[object] | None = None

    def link_up(self, link: StreamLink[object]) -> object:
        self.link = link
        self.up.set()
        return self.session

    def frames(self, link: StreamLink[object], bodies: list[bytes]) -> None:
        self.bodies.extend(bodies)

    def link_down(self, link: StreamLink[object], exc: BaseException | None) -> None:
        self.exc = exc
        self.down.set()


class Peer:
    """The far side of the link, as raw bytes: it writes, and decodes what it reads."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.bodies: list[bytes] = []
        self.eof = False
        self.reading = asyncio.Event()
        self.reading.set()

    def received(self, data: bytes) -> None:
        self.bodies.extend(self.decoder.feed(data))

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        """Stop reading: what the link sends piles up on its side."""
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    async def hang_up(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class StreamPeer(Peer):
    """A peer on asyncio streams (a TCP socket, the other pty of a socat pair)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader, self.writer = reader, writer
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await self.reading.wait()  # not reading: the stream's buffer fills, then ours
                data = await self.reader.read(1 << 16)
                if not data:
                    self.eof = True
                    return
                self.received(data)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def pause(self) -> None:
        self.reading.clear()

    def resume(self) -> None:
        self.reading.set()

    async def hang_up(self) -> None:
        self.writer.close()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()


class MemoryPeer(Peer):
    """The other end of a memory pair, used raw: its transport writes bytes as they are."""

    def __init__(self, link: StreamLink[object]) -> None:
        super().__init__()
        self.link = link

    def frames(self, link: StreamLink[object], bodies: list[bytes]) -> None:
        self.bodies.extend(bodies)

    def link_up(self, link: StreamLink[object]) -> None:
        return None

    def link_down(self, link: StreamLink[object], exc: BaseException | None) -> None:
        self.eof = True

    async def write(self, data: bytes) -> None:
        assert self.link.transport is not None
        self.link.transport.write(data)

    def pause(self) -> None:
        assert self.link.transport is not None
        self.link.transport.pause_reading()

    def resume(self) -> None:
        assert self.link.transport is not None
        self.link.transport.resume_reading()

    async def hang_up(self) -> None:
        self.link.close()

    async def close(self) -> None:
        self.link.abort()


class Rig:
    """The link under test, its handler, its peer, and what its carrier does differently."""

    def __init__(self, kind: str, link: StreamLink[object], handler: Handler, peer: Peer) -> None:
        self.kind = kind
        self.link = link
        self.handler = handler
        self.peer = peer
        #: A UART survives bad frames and outlives its peer's sessions.
        self.persistent = kind == "pty"
        self.closers: list[Any] = []

    async def hang_up(self) -> None:
        """The peer goes away: closes its end, or (a UART) its port vanishes."""
        if self.kind == "pty":
            self.unplug()
        else:
            await self.peer.hang_up()

    def unplug(self) -> None:
        raise NotImplementedError


async def tcp_rig(options: dict[str, Any]) -> Rig:
    handler = Handler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StreamLink(handler, **options), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.wait_for(handler.up.wait(), 10)
    assert handler.link is not None
    rig = Rig("tcp", handler.link, handler, StreamPeer(reader, writer))
    rig.closers.append(server)
    return rig


async def pty_rig(socat: SocatPairs, options: dict[str, Any]) -> Rig:
    pair = socat.pair("conformance")
    handler = Handler()
    link = await open_serial(handler, SerialSettings(str(pair.a)), **options)
    reader, writer = await serial_asyncio.open_serial_connection(url=str(pair.b), baudrate=115200)
    await asyncio.wait_for(handler.up.wait(), 10)
    rig = Rig("pty", link, handler, StreamPeer(reader, writer))
    rig.unplug = pair.unplug  # type: ignore[method-assign]
    return rig


async def memory_rig(options: dict[str, Any]) -> Rig:
    handler = Handler()
    far: list[MemoryPeer] = []

    class Far:
        """The far end's handler until its MemoryPeer exists (link_up runs in memory_pair)."""

        def link_up(self, link: StreamLink[object]) -> None:
            return None

        def frames(self, link: StreamLink[object], bodies: list[bytes]) -> None:
            far[0].frames(link, bodies)

        def link_down(self, link: StreamLink[object], exc: BaseException | None) -> None:
            far[0].link_down(link, exc)

    link, other = memory_pair(handler, Far(), name="conformance", options_a=options)
    far.append(MemoryPeer(other))
    return Rig("memory", link, handler, far[0])


CARRIERS = ["tcp", "pty", "memory"]


@pytest.fixture
def link_options() -> dict[str, Any]:
    """StreamLink options of the link under test (a test overrides this fixture)."""
    return {"high_water": HIGH_WATER}


@pytest.fixture(params=CARRIERS)
async def rig(
    request: pytest.FixtureRequest, socat: SocatPairs, link_options: dict[str, Any]
) -> AsyncIterator[Rig]:
    options = link_options
    kind = request.param
    if kind == "tcp":
        r = await tcp_rig(options)
    elif kind == "pty":
        r = await pty_rig(socat, options)
    else:
        r = await memory_rig(options)
    try:
        yield r
    finally:
        await r.peer.close()
        r.link.abort()
        await until(r.handler.down.is_set, what=f"{r.kind} link down after the test")
        for closer in r.closers:
            closer.close()
            await closer.wait_closed()


# --- the contract -------------------------------------------------------------


def members(protocol: type) -> set[str]:
    """A Protocol's public attributes and methods (its annotations and its functions)."""
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


def test_the_core_link_is_a_subset_of_the_carrier_contract() -> None:
    assert members(sig.core.session.Link) <= members(carriers.link.Link)


def test_carriers_import_only_the_protocol_and_the_errors() -> None:
    allowed = ("sig.protocol", "sig.errors")
    seen = set()
    for path in Path(carriers.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                seen.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                seen.update((path.name, alias.name) for alias in node.names)
    sig_imports = {(f, m) for f, m in seen if m == "sig" or m.startswith("sig.")}
    assert sig_imports and all(m.startswith(allowed) for _, m in sig_imports), sig_imports


async def test_link_keeps_the_contract_and_the_session_its_handler_gave(rig: Rig) -> None:
    assert isinstance(rig.link, carriers.link.Link)
    assert rig.link.session is rig.handler.session
    with pytest.raises(AttributeError):  # given by link_up, never assigned from outside
        rig.link.session = object()  # type: ignore[misc]
    assert rig.link.persistent is rig.persistent
    assert not rig.link.closing and not rig.link.reading_paused
    stats = rig.link.stats()
    assert set(stats) >= STATS_KEYS, STATS_KEYS - set(stats)
    assert stats["dropped"] == stats["discarded_frames"] == 0


# --- frames both ways -----------------------------------------------------------


async def test_frames_round_trip_in_order(rig: Rig) -> None:
    sent = [body(i, size=i % 300) for i in range(200)]
    for i, b in enumerate(sent):
        assert rig.link.send(b, urgent=i % 7 == 0)
    await until(lambda: len(rig.peer.bodies) >= len(sent), what="the peer reads every frame")
    assert rig.peer.bodies == sent
    await rig.peer.write(b"".join(encode_frame(b) for b in sent))
    await until(lambda: len(rig.handler.bodies) >= len(sent), what="the link decodes every frame")
    assert rig.handler.bodies == sent
    stats = rig.link.stats()
    assert stats["frames_out"] == stats["frames_in"] == len(sent)
    assert stats["bytes_out"] == sum(len(encode_frame(b)) for b in sent) == stats["bytes_in"]


async def test_a_body_split_across_reads_and_many_bodies_in_one_read(rig: Rig) -> None:
    frame = encode_frame(body(1, size=100))
    half = len(frame) // 2
    await rig.peer.write(frame[:half])
    await until(lambda: rig.link.decoder.stats.bytes_in >= half, what="the first half read")
    assert rig.handler.bodies == []  # half a frame is no frame
    await rig.peer.write(frame[half:])
    await until(lambda: rig.handler.bodies, what="the second half completes the frame")
    many = [body(i) for i in range(2, 102)]
    await rig.peer.write(b"".join(encode_frame(b) for b in many))  # one write
    await until(lambda: len(rig.handler.bodies) >= 101, what="a hundred frames from one write")
    assert rig.handler.bodies == [body(1, size=100), *many]


@pytest.mark.parametrize(
    ("bad", "counter"),
    [
        (cobs.encode(body(9) + (crc16(body(9)) ^ 1).to_bytes(2, "big")) + b"\0", "crc_errors"),
        (b"\x05\x10\x00", "framing_errors"),  # COBS code runs past the delimiter
    ],
    ids=["crc", "framing"],
)
async def test_a_bad_frame_is_counted_fatal_on_tcp_survived_on_a_uart(
    rig: Rig, bad: bytes, counter: str
) -> None:
    good = body(10)
    await rig.peer.write(bad + encode_frame(good))
    await until(lambda: rig.link.stats()[counter] == 1, what=f"{counter} counted")
    if rig.persistent:
        await until(lambda: rig.handler.bodies, what="the good frame after the bad one")
        assert rig.handler.bodies == [good] and not rig.link.closing
    else:
        await until(rig.handler.down.is_set, what="a peer that does not speak sig closed")
        assert rig.link.close_reason == carriers.link.NOT_SIG
        assert rig.handler.exc is None


# --- output bounds --------------------------------------------------------------


async def fill_to_high_water(rig: Rig) -> int:
    """Send events while the peer does not read, until the link drops one; how many it took."""
    rig.peer.pause()
    for n in range(MAX_SENDS):
        if not rig.link.send(body(n, size=1000), droppable=True):
            return n
        if n % 16 == 15:
            await asyncio.sleep(0)  # a loop turn: the link writes, the kernel fills
    raise AssertionError(f"{MAX_SENDS} events queued with a peer that does not read")


async def test_events_above_high_water_are_dropped_and_counted_others_never(rig: Rig) -> None:
    accepted = await fill_to_high_water(rig)
    assert rig.link.queued_bytes() > HIGH_WATER
    assert rig.link.dropped == rig.link.stats()["dropped"] == 1
    assert not rig.link.send(body(0), droppable=True)  # still full: dropped again
    assert rig.link.dropped == 2
    replies = [b"\x11" + i.to_bytes(4, "big") for i in range(50)]
    for i, reply in enumerate(replies):  # never dropped, however full
        assert rig.link.send(reply, urgent=i % 2 == 0)
    rig.peer.resume()
    total = accepted + len(replies)
    await until(lambda: len(rig.peer.bodies) >= total, what="everything accepted arrives")
    assert rig.peer.bodies[accepted:] == replies  # after every accepted event, in order
    assert rig.link.dropped == 2 and rig.link.discarded_frames == 0


async def test_urgent_frames_go_out_without_waiting_for_the_loop_turn(rig: Rig) -> None:
    before = rig.link.frames_out
    assert rig.link.send(body(1))
    assert rig.link.frames_out == before  # coalesced: written at the end of the turn
    assert rig.link.send(body(2), urgent=True)
    assert rig.link.frames_out == before + 2  # at once, with what was queued before it
    await until(lambda: len(rig.peer.bodies) >= 2, what="both frames at the peer")
    assert rig.peer.bodies == [body(1), body(2)]


async def test_close_flushes_what_is_queued(rig: Rig) -> None:
    sent = [body(i, size=200) for i in range(300)]
    for b in sent:
        assert rig.link.send(b)
    rig.link.close()
    assert rig.link.closing and not rig.link.send(body(999))  # closed for sending
    await until(rig.handler.down.is_set, what="the link closed itself")
    await until(lambda: len(rig.peer.bodies) >= len(sent), what="every frame before the close")
    assert rig.peer.bodies == sent
    assert rig.link.discarded_frames == 0 and rig.link.close_reason == ""


async def test_the_peer_going_away_ends_the_link(rig: Rig) -> None:
    await rig.hang_up()
    await until(rig.handler.down.is_set, what="the link noticed its peer gone")
    assert rig.link.closed.is_set() and rig.link.closing
    assert rig.link.close_reason == ""  # the peer did it: counted as closed_peer
    if rig.persistent:
        assert isinstance(rig.handler.exc, ReadError)  # the port vanished
    else:
        assert rig.handler.exc is None  # an orderly end of file
    assert not rig.link.send(body(1), droppable=True) and rig.link.dropped == 1


MAX_QUEUED = 2 * HIGH_WATER


@pytest.mark.parametrize("link_options", [{"high_water": HIGH_WATER, "max_queued": MAX_QUEUED}])
async def test_over_max_queued_the_link_stops_reading_until_its_queue_drains(rig: Rig) -> None:
    rig.peer.pause()
    sent = 0
    while not rig.link.reading_paused:  # replies are never dropped: the link stops reading
        assert rig.link.send(body(sent, size=1000)) and sent < MAX_SENDS
        sent += 1
        if sent % 16 == 0:
            await asyncio.sleep(0)  # a loop turn: the link writes, the kernel fills
    assert rig.link.queued_bytes() > MAX_QUEUED and rig.link.stats()["read_pauses"] == 1
    asked = [body(i) for i in range(5)]
    await rig.peer.write(b"".join(encode_frame(b) for b in asked))
    assert rig.handler.bodies == []  # not read while paused
    rig.peer.resume()
    await until(lambda: len(rig.peer.bodies) >= sent, what="the peer reads the backlog")
    await until(lambda: not rig.link.reading_paused, what="reading resumes once drained")
    await until(lambda: len(rig.handler.bodies) >= len(asked), what="the held frames")
    assert rig.handler.bodies == asked and rig.link.read_pauses == 1
    assert rig.link.dropped == rig.link.discarded_frames == 0
