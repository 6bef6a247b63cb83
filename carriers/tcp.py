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

TLS (the standard :mod:`ssl` module, TLS 1.2 at least): a gateway link made by
:class:`TlsServerLink` is up, with its session, from the moment it is accepted,
and only then does its TLS handshake run (``loop.start_tls``), so the handshake
counts against everything a link before HELLO is held to: the connection limit
(and its eviction), the HELLO deadline, the stall timeout. Nothing passes
either way until the handshake is done; one that fails closes the link with
``close_reason`` :data:`TLS_FAILED`, and the handshake's error as the
``link_down`` exception. On the client side :func:`connect_tcp` takes an
``ssl.SSLContext`` (:func:`client_context` makes one that checks the
gateway's certificate and name).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any, cast

from sig.errors import CarrierError, ConnectError

from .stream import FrameHandler, S, StreamLink, limit_writes

logger = logging.getLogger(f"sig.{__name__}")

#: accept() errors that mean "out of descriptors or memory": back off, do not spin.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = (0.05, 2.0)  #: first and largest pause after a resource error, seconds
ACCEPT_BATCH = 16  #: connections accepted per readable event at most
LISTEN_BACKLOG = 128
#: Accepted sockets still becoming links at most; past that, new connections
#: wait in the kernel's backlog (this bounds the descriptors over the limit).
MAX_STARTING = 16
#: ``Link.close_reason`` of a TLS link whose handshake failed (counted as ``closed_tls``).
TLS_FAILED = "tls"


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
    """One line for a connection error, as a person reads it (TLS errors too)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the certificate is not trusted ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc.strerror or exc})"
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
    handler: FrameHandler[S],
    host: str,
    port: int,
    timeout: float = 5.0,
    *,
    tls: ssl.SSLContext | None = None,
    **link_options: Any,
) -> StreamLink[S]:
    """Open a client link, over TLS with a ``tls`` context (its handshake within
    ``timeout``, the server's name checked against ``host`` if the context checks
    names); raises ConnectError (refused, unreachable, timed out, TLS refused)."""
    loop = asyncio.get_running_loop()
    link = StreamLink(handler, name=f"tcp:{host}:{port}", **link_options)
    extra: dict[str, Any] = {}
    if tls is not None:
        extra = {"ssl": tls, "server_hostname": host, "ssl_handshake_timeout": timeout}
    with map_exceptions({OSError: ConnectError, asyncio.TimeoutError: ConnectError}):
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: link, host, port, **extra), timeout
            )
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            if tls is None:
                raise
            raise ConnectError(
                "the gateway closed the connection in the TLS handshake"
                " (does it speak TLS on this port?)"
            ) from exc
    return link


# --- TLS ----------------------------------------------------------------------


def _tls_context(purpose: ssl.Purpose, cafile: str | None = None) -> ssl.SSLContext:
    """``ssl.create_default_context`` for ``purpose``, TLS 1.2 at least."""
    context = ssl.create_default_context(purpose, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The gateway's TLS context: its certificate chain and key; with ``client_ca``,
    mutual TLS (every client must show a certificate that CA signed).

    Raises :class:`sig.errors.CarrierError` naming the file that cannot be used.
    """
    context = _tls_context(ssl.Purpose.CLIENT_AUTH)
    context.options |= ssl.OP_NO_RENEGOTIATION  # TLS 1.2: no handshakes a peer can repeat
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:
        raise CarrierError(f"cannot load TLS certificate {cert} / key {key}: {_why(exc)}") from exc
    if client_ca:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ValueError) as exc:
            raise CarrierError(f"cannot load TLS client CA {client_ca}: {_why(exc)}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    tls: bool | ssl.SSLContext | None, cafile: str | None = None
) -> ssl.SSLContext | None:
    """A client's TLS context: ``tls`` itself if it is one; for ``tls=True`` (or a
    ``cafile``) the system CAs (or ``cafile``'s), certificate and host name checked;
    None for plain TCP. Raises :class:`sig.errors.CarrierError` for a bad ``cafile``."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not tls and cafile is None:
        return None
    try:
        return _tls_context(ssl.Purpose.SERVER_AUTH, cafile)
    except (OSError, ValueError) as exc:
        raise CarrierError(f"cannot load TLS CA file {cafile}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def subject_cn(cert: Any) -> str | None:
    """The commonName of a certificate's subject (``getpeercert()``'s dict), or None."""
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TlsServerLink(StreamLink[S]):
    """A gateway link whose peer must open with a TLS handshake (see the module docstring).

    The handler's ``link_up`` runs at accept, as for plain TCP; frames the
    handler sends before the handshake is done wait for it (nothing goes out in
    clear), and the peer's bytes reach the handler only once it is done.
    Closing the link during the handshake aborts it (there is nothing to flush).
    """

    __slots__ = ("_context", "_handshake", "_handshake_timeout")

    def __init__(
        self,
        handler: FrameHandler[S],
        *,
        context: ssl.SSLContext,
        handshake_timeout: float,
        **options: Any,
    ) -> None:
        super().__init__(handler, **options)
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._handshake: asyncio.Task[None] | None = None

    @property
    def handshaking(self) -> bool:
        """True from accept until the TLS handshake is done (or failed)."""
        return self._handshake is None or not self._handshake.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # the handler's link_up: counted, deadline running
        raw = cast(asyncio.Transport, transport)
        if raw.is_closing():  # refused at the connection limit
            return
        raw.pause_reading()  # no byte of the handshake may reach the frame decoder
        self._write_paused = True  # what the handler sends waits for the handshake
        assert self._loop is not None
        self._handshake = self._loop.create_task(self._upgrade(raw), name=f"tls {self.name}")

    async def _upgrade(self, raw: asyncio.Transport) -> None:
        """Run the handshake on ``raw``; on success the link writes and reads through TLS."""
        assert self._loop is not None
        try:
            tls = await self._loop.start_tls(
                raw,
                self,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (Exception, asyncio.CancelledError) as exc:  # ssl.SSLError, timeout, reset
            self._failed(raw, exc)
            return
        if tls is None or self.closed.is_set():  # the link was aborted meanwhile
            self._failed(raw, ConnectionAbortedError("closed during the TLS handshake"))
            return
        self.transport = tls
        outer = tls.get_write_buffer_size
        inner = raw.get_write_buffer_size
        self._buffered = lambda: outer() + inner()
        limit_writes(tls)
        self.peer_subject = subject_cn(tls.get_extra_info("peercert"))
        self.resume_writing()  # what waited for the handshake goes out now

    def _failed(self, raw: asyncio.Transport, exc: BaseException) -> None:
        """The handshake failed (or the link was closed during it): the link is down."""
        if not self._closing:  # not closed by its owner (who says why on the session)
            self.close_reason = self.close_reason or TLS_FAILED
        raw.abort()
        self.connection_lost(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed.is_set():  # asyncio's TLS layer may report a failed handshake too
            return
        super().connection_lost(exc)

    def close(self) -> None:
        if self.handshaking:
            self._closing = True
            self.abort()
        else:
            super().close()

    def stats(self) -> dict[str, Any]:
        """The link's counters, with ``tls`` (``handshake`` until it is done, then the
        TLS version) and ``peer_subject`` (the client certificate's CN, or None)."""
        row = super().stats()
        tls = self.transport if not self.handshaking else None
        ssl_object = tls.get_extra_info("ssl_object") if tls is not None else None
        row["tls"] = ssl_object.version() if ssl_object is not None else "handshake"
        row["peer_subject"] = self.peer_subject
        return row
