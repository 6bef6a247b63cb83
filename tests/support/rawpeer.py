"""A hand-driven TCP peer for tests: sends any bytes or messages, decodes replies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from sig.errors import ErrorCode
from sig.protocol import messages as w
from sig.protocol.frame import FrameDecoder, encode_frame


class Raw:
    """A hand-driven TCP peer: sends any bytes or messages, decodes what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.inbox: list[w.Message] = []

    @classmethod
    async def open(cls, port: int, name: str | None = None, max_body: int = 65535) -> Raw:
        """Connect; with ``name``, also say HELLO and wait for WELCOME."""
        raw = cls(*await asyncio.open_connection("127.0.0.1", port))
        if name is not None:
            await raw.msg(w.Hello(name, max_body, 0))
            await raw.expect(lambda m: isinstance(m, w.Welcome))
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def msg(self, *msgs: w.Message) -> None:
        await self.send(b"".join(encode_frame(w.encode(m)) for m in msgs))

    async def body(self, body: bytes) -> None:
        await self.send(encode_frame(body))

    async def expect(self, pred: Callable[[w.Message], bool], timeout: float = 10.0) -> w.Message:
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.inbox):
                if pred(m):
                    del self.inbox[: i + 1]
                    return m
            data = await asyncio.wait_for(self.reader.read(1 << 20), deadline - time.monotonic())
            if not data:
                raise AssertionError(f"connection closed; got {self.inbox[-5:]}")
            self.inbox += [w.decode(b) for b in self.decoder.feed(data)]

    async def response(self, rid: int) -> w.Response:
        m = await self.expect(lambda m: isinstance(m, w.Response) and m.request_id == rid)
        assert isinstance(m, w.Response)
        return m

    async def alive(self, token: int) -> None:
        """The gateway still answers this link."""
        await self.msg(w.Ping(token))
        await self.expect(lambda m: m == w.Pong(token))

    async def error(self, code: ErrorCode) -> w.Error:
        m = await self.expect(lambda m: isinstance(m, w.Error))
        assert isinstance(m, w.Error) and m.code == code, m
        return m

    async def closed(self, timeout: float = 5.0) -> None:
        """Read until the gateway closes the connection."""

        async def drain() -> None:
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionResetError:
                pass

        await asyncio.wait_for(drain(), timeout)
        self.close()

    async def hello(self, name: str = "raw") -> None:
        await self.msg(w.Hello(name, 65535, 0))
        await self.expect(lambda m: isinstance(m, w.Welcome))

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
