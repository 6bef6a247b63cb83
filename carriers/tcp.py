"""TCP carrier: a listener and client links carrying sig frames.

The gateway accepts connections itself (:class:`TcpListener`) rather than
through ``loop.create_server``, for two reasons:

* admission: every accepted socket is offered to an ``admit`` callback before
  any transport exists, so a connection limit is enforced at the door (the
  gateway refuses or evicts there, see ``ServerRouter``);
* resource errors: when ``accept()`` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM,
  asyncio logs a traceback per failed attempt (hundreds a second). Here the
  listener stops accepting for a back-off delay (50 ms doubling to 2 s, reset
  by the next successful accept), counts the error and reports it to
  ``exhausted`` (the gateway logs it, one line a minute at most, and frees a
  descriptor if it can): the carrier itself logs nothing about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from sig.errors import ConnectError

from .stream import FrameHandler, S, StreamLink

logger = logging.getLogger(f"sig.{__name__}")

#: accept() errors that mean "out of descriptors or memory": back off, do not spin.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = (0.05, 2.0)  #: first and largest pause after a resource error, seconds
ACCEPT_BATCH = 16  #: connections accepted per readable event at most
LISTEN_BACKLOG = 128
#: Accepted sockets still becoming links at most; past that, new connections
#: wait in the kernel's backlog (this bounds the descriptors over the limit).
MAX_STARTING = 16


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


def errno_name(exc: OSError) -> str:
    """The symbolic name of ``exc``'s errno (``EMFILE``), or ``?``."""
    return errno.errorcode.get(exc.errno or 0, "?")


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


class TcpListener:
    """Listening sockets whose accepted connections become StreamLinks.

    ``admit()`` is asked for every accepted socket: False closes it at once
    (refused). ``starting`` is how many accepted sockets are still becoming
    links (their ``link_up`` has not run yet). ``exhausted(exc)`` is told of every accept error
    (after one in :data:`RESOURCE_ERRNOS`, the handler may free a descriptor); it is
    the only report of it (:func:`errno_name` and :func:`describe` help word it).
    """

    def __init__(
        self,
        factory: Callable[[], StreamLink[Any]],
        *,
        admit: Callable[[], bool] = lambda: True,
        exhausted: Callable[[OSError], None] = lambda exc: None,
    ) -> None:
        self.factory = factory
        self.admit = admit
        self.exhausted = exhausted
        self.sockets: list[socket.socket] = []
        self.accept_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delay = ACCEPT_BACKOFF[0]
        self._retry: asyncio.TimerHandle | None = None
        self._starting: set[asyncio.Task[None]] = set()
        self._watching = False

    async def start(self, host: str | None, port: int) -> None:
        """Bind and listen on every address of ``host``; raises sig.ConnectError."""
        loop = self._loop = asyncio.get_running_loop()
        with map_exceptions({OSError: ConnectError}):
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            try:
                for family, kind, proto, _, address in dict.fromkeys(infos):
                    sock = socket.socket(family, kind, proto)
                    self.sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(address)
                    sock.listen(LISTEN_BACKLOG)
                    sock.setblocking(False)
            except BaseException:
                self._close_sockets()
                raise
        self._update_watch()

    def _update_watch(self) -> None:
        """Watch the sockets unless backing off or too many links are still starting."""
        want = bool(self.sockets) and self._retry is None and len(self._starting) < MAX_STARTING
        if want == self._watching or self._loop is None:
            return
        self._watching = want
        for sock in self.sockets:
            if want:
                self._loop.add_reader(sock.fileno(), self._accept, sock)
            else:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if len(self._starting) >= MAX_STARTING:  # the rest wait in the kernel's backlog
                self._update_watch()
                return
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while queued: nothing to do
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._delay = ACCEPT_BACKOFF[0]
            if not self.admit():
                conn.close()
                continue
            task = asyncio.get_running_loop().create_task(self._start_link(conn))
            self._starting.add(task)
            task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        self._update_watch()

    def _accept_failed(self, exc: OSError) -> None:
        """Count, tell ``exhausted``, pause accepting for a while; never spin."""
        self.accept_errors += 1
        self.exhausted(exc)
        assert self._loop is not None
        self._retry = self._loop.call_later(self._delay, self._resume)
        self._update_watch()
        self._delay = min(self._delay * 2, ACCEPT_BACKOFF[1])

    def _resume(self) -> None:
        self._retry = None
        self._update_watch()

    @property
    def starting(self) -> int:
        return len(self._starting)

    async def _start_link(self, conn: socket.socket) -> None:
        link: StreamLink[Any] | None = None

        def make() -> StreamLink[Any]:
            nonlocal link
            link = self.factory()
            return link

        try:
            conn.setblocking(False)
            await asyncio.get_running_loop().connect_accepted_socket(make, conn)
        except (Exception, asyncio.CancelledError) as exc:
            if link is None or link.transport is None:  # the link never came up
                conn.close()
            logger.debug("accepted connection failed to start: %r", exc)

    def close(self) -> None:
        """Stop listening (links already up are the handler's to close)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._close_sockets()
        for task in list(self._starting):
            task.cancel()

    def _close_sockets(self) -> None:
        if self._watching and self._loop is not None:
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())
        self._watching = False
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    async def wait_closed(self) -> None:
        """Wait for links still being set up when the listener closed."""
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)


async def connect_tcp(
    handler: FrameHandler[S], host: str, port: int, timeout: float = 5.0, **link_options: Any
) -> StreamLink[S]:
    """Open a client link; raises ConnectError (refused, unreachable, timed out)."""
    loop = asyncio.get_running_loop()
    link = StreamLink(handler, name=f"tcp:{host}:{port}", **link_options)
    with map_exceptions({OSError: ConnectError, asyncio.TimeoutError: ConnectError}):
        await asyncio.wait_for(loop.create_connection(lambda: link, host, port), timeout)
    return link
