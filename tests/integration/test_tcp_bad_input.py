"""Bad input over TCP: each gets an ERROR or a disconnect, is logged once, and
a well-behaved client connected at the same time keeps receiving."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from rawpeer import Raw

from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.frame import encode_frame
from sig.routers.client import AsyncClientRouter
from sig.routers.gateway import ServerRouter


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self, text: str) -> list[str]:
        out = [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]
        return [m for m in out if text in m]


@pytest.fixture
def logs() -> Iterator[Records]:
    # sig.setup_logger (used by other tests) may stop "sig" from propagating to
    # the root logger, so listen on the package loggers themselves.
    handler = Records()
    logs = [logging.getLogger(name) for name in ("sig", "carriers")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.INFO)
        log.addHandler(handler)
    yield handler
    for log, level in zip(logs, levels, strict=True):
        log.removeHandler(handler)
        log.setLevel(level)


class Bystander:
    """A good client that must keep receiving while others misbehave."""

    def __init__(self, gw: ServerRouter, client: AsyncClientRouter) -> None:
        self.gw, self.client = gw, client
        self.got: list[Any] = []
        self.sent = 0

    async def check(self) -> None:
        """One more event reaches it, after everything that came before."""
        self.sent += 1
        sender = self.gw.get_sender("beacon")
        assert sender is not None
        sender.trigger("ping", self.sent)
        deadline = time.monotonic() + 5
        while len(self.got) < self.sent:
            assert time.monotonic() < deadline, self.got
            await asyncio.sleep(0.005)
        assert self.got == list(range(1, self.sent + 1))


@pytest.fixture
async def gw() -> AsyncIterator[ServerRouter]:
    async with ServerRouter("127.0.0.1", 0) as router:
        router.add_sender("beacon", ["ping"])
        yield router


@pytest.fixture
async def bystander(gw: ServerRouter) -> AsyncIterator[Bystander]:
    client = AsyncClientRouter("127.0.0.1", gw.port, name="bystander", auto_reconnect=False)
    await client.connect()
    b = Bystander(gw, client)
    await client.add_listener(lambda info, data: b.got.append(data), "beacon", "ping")
    await b.check()
    yield b
    await b.check()
    assert client.is_connected
    await client.close()


async def test_random_bytes_close_the_link_and_log_once(
    gw: ServerRouter, bystander: Bystander, logs: Records
) -> None:
    raw = await Raw.open(gw.port)
    rng = bytes(range(1, 256)) + os.urandom(4000) + b"\x00" + os.urandom(4000) + b"\x00"
    await raw.send(rng)
    await raw.closed()
    assert len(logs.warnings("not speaking sig")) == 1
    await bystander.check()


async def test_oversize_frame_closes_the_link(
    gw: ServerRouter, bystander: Bystander, logs: Records
) -> None:
    raw = await Raw.open(gw.port)
    await raw.hello()
    await raw.send(b"\x01" * (gw.core.max_body + 1000))
    await raw.closed()
    assert len(logs.warnings("oversize 1")) == 1
    await bystander.check()


@pytest.mark.parametrize(
    ("body", "code", "ref"),
    [
        (b"\x3f", ErrorCode.UNKNOWN_TYPE, 0x3F),
        (b"\x3f\x01\x02", ErrorCode.UNKNOWN_TYPE, 0x3F),
        (b"\x13\x01", ErrorCode.MALFORMED, 0),  # LISTEN cut short
        (b"\x03\xff\xff\xff\xff\xff\x01", ErrorCode.MALFORMED, 0),  # PING, varint too long
        (bytes([0x03 | 0x80, 1]), ErrorCode.UNSUPPORTED_FEATURE, 0),  # SEQ flag not agreed
        (b"\x10\x01\x00\x00\x00\x00", ErrorCode.INVALID_NAME, 0),  # empty sender name
    ],
)
async def test_nonsense_messages_get_an_error_and_the_link_stays(
    gw: ServerRouter,
    bystander: Bystander,
    logs: Records,
    body: bytes,
    code: ErrorCode,
    ref: int,
) -> None:
    raw = await Raw.open(gw.port)
    await raw.hello()
    for _ in range(3):
        await raw.body(body)
        err = await raw.error(code)
        assert err.ref == ref or code is not ErrorCode.UNKNOWN_TYPE
    await bystander.check()
    # Still a working session: it can ping and listen.
    await raw.msg(w.Ping(7))
    assert await raw.expect(lambda m: isinstance(m, w.Pong)) == w.Pong(7)
    assert len(logs.warnings(code.name)) == 1  # three errors, one log line
    raw.close()


async def test_trigger_before_hello_gets_no_session_and_invite(
    gw: ServerRouter, bystander: Bystander, logs: Records
) -> None:
    raw = await Raw.open(gw.port)
    await raw.msg(w.Trigger(1, b"\x01"))
    await raw.error(ErrorCode.NO_SESSION)
    await raw.expect(lambda m: isinstance(m, w.Invite))
    await raw.msg(w.Listen(1, None, None))
    await raw.error(ErrorCode.NO_SESSION)
    await raw.hello()  # and the session can still be opened
    await bystander.check()
    assert len(logs.warnings("NO_SESSION")) == 1
    raw.close()


async def test_trigger_for_an_event_ref_of_another_link_is_unknown_ref(
    gw: ServerRouter, bystander: Bystander, logs: Records
) -> None:
    owner = await Raw.open(gw.port)
    await owner.hello("owner")
    await owner.msg(w.RegisterSender(1, "owned", ((5, "e"),)))
    await owner.expect(lambda m: isinstance(m, w.SenderRegistered))
    owned: list[Any] = []
    await bystander.client.add_listener(lambda info, data: owned.append(data), "owned", "e")
    thief = await Raw.open(gw.port)
    await thief.hello("thief")
    await thief.msg(w.Trigger(5, b"\x18\x2a"))  # owner's event_ref 5
    await thief.msg(w.Trigger(200, b"\x01"))  # a multi-byte varint ref, never registered
    assert (await thief.error(ErrorCode.UNKNOWN_REF)).ref == 5
    assert (await thief.error(ErrorCode.UNKNOWN_REF)).ref == 200
    await owner.msg(w.Trigger(5, b"\x01"))
    deadline = time.monotonic() + 5
    while not owned:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    assert owned == [1]  # the thief's trigger (42) was never routed
    assert len(logs.warnings("UNKNOWN_REF")) == 1
    owner.close()
    thief.close()


async def test_too_many_protocol_errors_close_the_link(
    gw: ServerRouter, bystander: Bystander, logs: Records
) -> None:
    raw = await Raw.open(gw.port)
    await raw.hello()
    await raw.send(encode_frame(b"\x3f") * 100)
    await raw.closed()
    assert len(logs.warnings("UNKNOWN_TYPE")) == 1
    assert len(logs.warnings("protocol errors")) == 1
    await bystander.check()
