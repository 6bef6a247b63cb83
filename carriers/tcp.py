"""TCP carrier: asyncio server and client links carrying sig frames."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from sig.errors import ConnectError

from .stream import FrameHandler, StreamLink


@contextlib.contextmanager
def map_exceptions(mapping: dict[type[BaseException], type[Exception]]) -> Iterator[None]:
    """Re-raise library/OS exceptions as sig's own, keeping the cause."""
    try:
        yield
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                raise target(describe(exc)) from exc
        raise


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if isinstance(exc, socket.gaierror):
        return f"bad address ({exc.strerror})"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's strerror is "Connect call failed (...)"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


async def serve_tcp(
    handler: FrameHandler, host: str | None, port: int, **link_options: Any
) -> asyncio.Server:
    """Listen on host:port; every accepted connection becomes a StreamLink."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], StreamLink] = lambda: StreamLink(handler, **link_options)  # noqa: E731
    with map_exceptions({OSError: ConnectError}):
        return await loop.create_server(factory, host, port, reuse_address=True)


async def connect_tcp(
    handler: FrameHandler, host: str, port: int, timeout: float = 5.0, **link_options: Any
) -> StreamLink:
    """Open a client link; raises ConnectError (refused, unreachable, timed out)."""
    loop = asyncio.get_running_loop()
    link = StreamLink(handler, name=f"tcp:{host}:{port}", **link_options)
    with map_exceptions({OSError: ConnectError, asyncio.TimeoutError: ConnectError}):
        await asyncio.wait_for(loop.create_connection(lambda: link, host, port), timeout)
    return link
