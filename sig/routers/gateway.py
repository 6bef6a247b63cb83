"""ServerRouter: the gateway. Binds the sans-I/O core to TCP (and serial) carriers.

In-process senders and listeners work on the gateway too (the demo ``timer``
sender of ``sig serve`` is one), with the same API as :class:`sig.LocalRouter`.

Connections are bounded: at most ``max_connections`` TCP links (by default the
descriptor limit, RLIMIT_NOFILE, minus :data:`FD_RESERVE` for everything else
the process opens). A connection that arrives at the limit evicts the oldest
link that has not sent HELLO yet (those are cheap to open and hold nothing);
when every link has a session, the new connection is refused (closed at once).
Either way the gateway keeps serving the sessions it has, counts what it did
(``closed_evicted``, ``refused_connections``) and logs one line a minute.

Every link that ends is counted by reason in ``$gateway stats``:
``closed_<reason>`` for the reasons in :data:`CLOSE_REASONS`. The poll ticker
also measures how late it runs, which is how long the event loop was busy
with something else (``loop_lag_ms`` now, ``max_loop_lag_ms`` since start).

Secure defaults: the gateway listens on 127.0.0.1 unless told otherwise, and
:meth:`ServerRouter.start` refuses to listen on any address that is not
loopback unless clients must log in (``users`` are configured, or mutual TLS,
where every client shows a certificate the configured CA signed) or anonymous
clients are allowed there on purpose (``allow_anonymous``, which then logs a
warning at every start, with users or without). With ``tls`` (an ``ssl.SSLContext``, see
:func:`carriers.tcp.server_context`) every TCP client must open with a TLS
handshake, which counts against the HELLO deadline and the connection limit
like everything else a link does before HELLO; one that fails is counted
(``closed_tls``) and logged one line a minute, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from carriers.stream import (
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_QUEUED,
    DEFAULT_STALL_TIMEOUT,
    StreamLink,
)
from carriers.tcp import (
    RESOURCE_ERRNOS,
    TLS_FAILED,
    TcpListener,
    TlsServerLink,
    describe,
    errno_name,
)
from sig.compat import LocalRouterAliases, SeedSender
from sig.core.acl import Policy
from sig.core.endpoints import EndpointsAPI
from sig.core.gateway import DEFAULT_HELLO_TIMEOUT, DEFAULT_TCP_KEEPALIVE_MS, GatewayCore, Limits
from sig.core.session import Session, State
from sig.errors import ConnectError, RequestTimeout, request_error_for
from sig.logs import LogThrottle
from sig.protocol.constants import DEFAULT_PORT
from sig.protocol.data import pack, unpack
from sig.routers.auth import GatewaySecurity
from sig.routers.flow import FlowControl

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.1  #: seconds between keepalive / timeout checks
#: CPU time one link's frames may take per loop turn before the link waits a turn.
TURN_BUDGET = 0.002
#: Descriptors kept for what is not a TCP connection: stdio, the event loop and
#: its self-pipe, listening sockets, log files, DNS, future listeners.
FD_RESERVE = 64
#: Descriptors one serial port takes (pyserial: the port and two abort pipes).
FDS_PER_SERIAL_PORT = 5
#: Why links end, as counted in ``$gateway stats`` (``closed_<reason>``):
#: peer (hung up, reset, port lost), stalled (took nothing for stall_timeout),
#: hello_timeout (no HELLO in time), link_timeout (silent for 3 keepalives),
#: breach (protocol breach), not_sig (framing garbage on TCP), evicted (made
#: room for a new connection at the limit), shutdown (the gateway stopped),
#: tls (the TLS handshake failed: wrong CA, plain TCP on a TLS port...).
CLOSE_REASONS = (
    "peer",
    TLS_FAILED,
    "stalled",
    "hello_timeout",
    "link_timeout",
    "breach",
    "not_sig",
    "evicted",
    "shutdown",
)


def default_max_connections(extra_fds: int = 0) -> int:
    """TCP connections the descriptor limit allows, minus a reserve (at least 1)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(1, soft - FD_RESERVE - extra_fds)


class ExposedError(ConnectError):
    """The gateway would serve anonymous clients beyond loopback without allow_anonymous."""


def exposed(addresses: Iterable[str]) -> list[str]:
    """The addresses that are not loopback (``0.0.0.0`` and ``::`` are every address)."""
    out = []
    for address in addresses:
        try:
            loopback = ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            out.append(address)
    return out


def check_exposure(
    addresses: Iterable[str], port: int, *, authenticated: bool, allow_anonymous: bool
) -> None:
    """Beyond loopback: refuse (:class:`ExposedError`) to serve anonymous clients
    unless clients must authenticate, and warn, at every start, where they are
    allowed on purpose (``allow_anonymous``, with users or without)."""
    beyond = exposed(addresses)
    if not beyond or (authenticated and not allow_anonymous):
        return
    where = ", ".join(f"{a}:{port}" for a in beyond)
    if not allow_anonymous:
        raise ExposedError(
            f"refusing to serve anonymous clients on {where} (not loopback): configure users"
            " (--users FILE, [auth] users) or mutual TLS (--tls-client-ca), or allow it on"
            " purpose (--allow-anonymous, [auth] allow_anonymous = true); or listen on 127.0.0.1"
        )
    logger.warning(
        "anonymous clients allowed on %s (allow_anonymous): anyone who reaches it"
        " can send, listen to and call everything",
        where,
    )


async def resolve(host: str | None, port: int) -> list[str]:
    """The addresses ``host`` stands for (none if it does not resolve: the
    listener then says why it cannot bind)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


def link_factory(
    handler: Any, options: dict[str, Any], tls: ssl.SSLContext | None, hello_timeout: float
) -> Callable[[], StreamLink]:
    """What makes a link of each accepted connection: a TLS one with ``tls``."""
    if tls is None:
        return lambda: StreamLink(handler, **options)
    # A backstop only: the core closes a link without HELLO at hello_timeout,
    # handshake included, a poll tick before this fires.
    timeout = (hello_timeout or DEFAULT_HELLO_TIMEOUT) + 2 * POLL_INTERVAL
    return lambda: TlsServerLink(handler, context=tls, handshake_timeout=timeout, **options)


class ConnectionLimit:
    """At most ``maximum`` TCP links: admit, evict the oldest link without HELLO, or refuse.

    The listener asks :meth:`admit` at the door; every TCP link that comes up
    is counted (:meth:`up`) until it goes (:meth:`forget`). Links that may
    still lack a session are kept in the order they came, so the oldest of
    them is found in amortised O(1) (:meth:`free_one`).
    """

    def __init__(self, maximum: int, counters: dict[str, int], gauges: dict[str, float]) -> None:
        self.maximum = maximum
        self.counters = counters
        self.gauges = gauges
        self.tcp: dict[StreamLink, None] = {}  # TCP links up
        #: TCP links in the order they came up that may still lack a session.
        self.pre_hello: dict[StreamLink, None] = {}
        self._log_limit = LogThrottle(logger)
        gauges.update({"connections": 0, "max_connections": maximum})

    def admit(self) -> bool:
        """At the door: room, or fewer sessions than the limit (checked again in :meth:`up`).

        Over the limit, every link that comes up evicts the oldest pre-HELLO
        one, so a connection is refused only when the links with a session
        fill the limit. (The listener starts :data:`carriers.tcp.MAX_STARTING`
        links at most at a time, which bounds the descriptors over the limit.)
        """
        if len(self.tcp) < self.maximum:
            return True
        if len(self.tcp) - len(self.pre_hello) < self.maximum:
            return True  # pre_hello may hold opened links not swept yet: up() decides
        self._refused()
        return False

    def up(self, link: StreamLink) -> None:
        """A TCP link came up: count it; over the limit, make room or refuse it."""
        self.tcp[link] = None
        self.pre_hello[link] = None
        self.gauges["connections"] = len(self.tcp)
        if len(self.tcp) > self.maximum:
            self._over_limit(link)

    def forget(self, link: StreamLink) -> None:
        """No longer count ``link`` as a connection (it is gone, or being aborted)."""
        self.tcp.pop(link, None)
        self.pre_hello.pop(link, None)
        self.gauges["connections"] = len(self.tcp)

    def _over_limit(self, link: StreamLink) -> None:
        """``link`` came up over the limit: evict the oldest pre-HELLO link, or refuse it."""
        victim = self._oldest_without_hello()
        if victim is not None and victim is not link:
            self._evict(victim, "connection limit")
            return
        self.forget(link)
        link.close_reason = "refused"
        link.abort()
        self._refused()

    def _refused(self) -> None:
        self.counters["refused_connections"] += 1
        self._log_limit(
            "%d connections (the limit), all with sessions: refusing new ones",
            self.maximum,
        )

    def free_one(self, why: str) -> None:
        """Evict the oldest link without a session, if there is one (``why`` is logged)."""
        victim = self._oldest_without_hello()
        if victim is not None:
            self._evict(victim, why)

    def _oldest_without_hello(self) -> StreamLink | None:
        """The oldest TCP link still without a session (amortised O(1)).

        Links leave ``pre_hello`` for good when found with a session (a TCP
        link never goes back to AWAIT_HELLO), so each is skipped only once.
        """
        pre = self.pre_hello
        while pre:
            link = next(iter(pre))
            session = link.session
            waiting = session is not None and session.state is State.AWAIT_HELLO
            if waiting and not link.close_reason:
                return link
            del pre[link]  # opened (or closing): never a candidate again
        return None

    def _evict(self, link: StreamLink, why: str) -> None:
        link.close_reason = "evicted"
        self.forget(link)
        self._log_limit("%s: evicting %s, which has not sent HELLO", why, link.name)
        link.abort()


def count_close(counters: dict[str, int], link: StreamLink, session: Session | None) -> None:
    """Count a link that ended by its reason (``closed_<reason>``) and what it discarded."""
    reason = link.close_reason
    if reason == "refused":  # never admitted: counted as refused_connections
        return
    if not reason and session is not None:
        reason = session.close_reason or ("breach" if session.state is State.ERROR else "")
    key = f"closed_{reason or 'peer'}"
    counters[key] = counters.get(key, 0) + 1
    counters["discarded_frames"] += link.discarded_frames
    counters["discarded_bytes"] += link.discarded_bytes


class ServerRouter(EndpointsAPI, LocalRouterAliases):
    """The gateway: accepts TCP clients (and serial links) and routes between them."""

    def __init__(
        self,
        host: str | None = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        name: str = "sig-gateway",
        tls: ssl.SSLContext | None = None,
        request_timeout: float = 10.0,
        high_water: int = DEFAULT_HIGH_WATER,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        limits: Limits | None = None,
        serial_name_grace: float | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_connections: int | None = None,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        tcp_keepalive: float = DEFAULT_TCP_KEEPALIVE_MS / 1000,
        users: str | None = None,
        allow_anonymous: bool = False,
        tls_principal: str = "none",
    ) -> None:
        """``serial_name_grace``: seconds a serial device's sender names stay
        reserved for its port after it goes quiet (None: twice its link timeout).

        ``users``: a users file (``sig passwd``); clients then log in, and only
        with ``allow_anonymous`` may one that does not. ``tls_principal="subject"``:
        a client certificate's subject is the principal of a HELLO without a user.
        Raises :class:`sig.errors.UsersFileError` if the users file cannot be used.
        ``tls``, and which addresses need ``users`` or ``allow_anonymous``: see
        the module docstring."""
        self.host = host
        self.port = port
        #: The TLS context of the listener (None: plain TCP).
        self.tls = tls
        self.core = GatewayCore(
            name,
            request_timeout=request_timeout,
            limits=limits,
            serial_name_grace=serial_name_grace,
            sender_class=SeedSender,
        )
        #: The gateway's in-process senders and listeners (add_sender, add_listener...).
        self.endpoints = self.core.endpoints
        #: The users file and the password checks' threads (sig.routers.auth).
        self.security = GatewaySecurity(
            self.core.auth, users, allow_anonymous=allow_anonymous, tls_principal=tls_principal
        )
        self.core.hello_timeout = hello_timeout
        self.core.tcp_keepalive_ms = round(tcp_keepalive * 1000)
        self.flow = FlowControl(self.core)  #: pauses the senders of block listeners
        #: Options every link of this gateway gets (serial ports too).
        self.link_options: dict[str, Any] = {
            "high_water": high_water,
            "stall_timeout": stall_timeout,
            "max_queued": max_queued,
        }
        self._server: TcpListener | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._links: set[StreamLink] = set()
        self.loop_lag = 0.0  #: seconds the last poll tick ran late
        self.max_loop_lag = 0.0  #: the worst since start
        counters = self.core.counters
        for reason in CLOSE_REASONS:
            counters[f"closed_{reason}"] = 0
        for key in ("refused_connections", "accept_errors", "discarded_frames", "discarded_bytes"):
            counters[key] = 0
        self.connections = ConnectionLimit(
            default_max_connections() if max_connections is None else max(1, max_connections),
            counters,
            self.core.gauges,
        )
        self.core.gauges.update({"loop_lag_ms": 0.0, "max_loop_lag_ms": 0.0})
        self._log_limit = LogThrottle(logger)  #: accept errors: one line a minute
        self._log_tls = LogThrottle(logger)  #: failed TLS handshakes: one line a minute
        self._extra_tasks: set[asyncio.Task[Any]] = set()
        #: Reads the ACLs again on SIGHUP (``sig serve`` sets it); None: nothing to reload.
        self.acl_reloader: Callable[[], Policy | None] | None = None

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Bind the TCP port; raises sig.ConnectError if it cannot, and
        :class:`ExposedError` (before binding anything) for anonymous clients
        beyond loopback (see the module docstring)."""
        mutual = self.tls is not None and self.tls.verify_mode == ssl.CERT_REQUIRED
        check_exposure(
            await resolve(self.host, self.port),
            self.port,
            authenticated=self.security.users_file is not None or mutual,
            allow_anonymous=self.security.allow_anonymous,
        )
        listener = TcpListener(
            link_factory(self, self.link_options, self.tls, self.core.hello_timeout),
            admit=self.connections.admit,
            exhausted=self._exhausted,
        )
        await listener.start(self.host, self.port)
        self._server = listener
        if listener.sockets:
            self.port = listener.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick(), name="sig-gateway-poll")
        self.security.start()
        logger.info(
            "gateway %s listening on %s:%s (%s, at most %d TCP connections)",
            self.core.name,
            self.host,
            self.port,
            "TLS" if self.tls else "plain TCP",
            self.max_connections,
        )

    async def stop(self) -> None:
        """Graceful stop: #disconnect for every sender, links flushed and closed."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in list(self._extra_tasks):
            task.cancel()
        self.security.stop()
        for sender in self.endpoints.senders():
            self.endpoints.remove_sender(sender, on_purpose=False)  # retained values: stale
        for session in list(self.core.sessions):
            self.core.end_session(session, "gateway shutting down")
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close_reason = link.close_reason or "shutdown"
            link.close()
        for link in list(self._links):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(link.closed.wait(), 2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        logger.info("gateway stopped")

    async def __aenter__(self) -> ServerRouter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _tick(self) -> None:
        """Poll the core every POLL_INTERVAL, and measure how late each tick runs.

        The lateness is the event-loop lag: how long the loop was busy with
        other callbacks when this one was due (a teardown, a big request...).
        """
        loop = asyncio.get_running_loop()
        gauges = self.core.gauges
        due = loop.time() + POLL_INTERVAL
        while True:
            await asyncio.sleep(due - loop.time())
            now = loop.time()
            lag = self.loop_lag = max(0.0, now - due)
            gauges["loop_lag_ms"] = round(lag * 1000, 3)
            if lag > self.max_loop_lag:
                self.max_loop_lag = lag
                gauges["max_loop_lag_ms"] = round(lag * 1000, 3)
            due = now + POLL_INTERVAL
            try:
                self.core.poll()
            except Exception:  # a bug here must not stop keepalive for everyone
                logger.exception("gateway poll failed")

    def listen_addresses(self) -> list[str]:
        """The addresses the TCP server is bound to (``0.0.0.0`` / ``::`` for all)."""
        sockets = getattr(self._server, "sockets", None) or []
        return [str(sock.getsockname()[0]) for sock in sockets]

    def reload_security(self) -> bool:
        """Read the users file again (SIGHUP); open sessions stay. False if it was bad.

        A bad file keeps the users loaded before (and logs why). ACLs reload here
        too, from ``acl_reloader`` (``sig serve`` sets it): a config that no longer
        parses keeps the ACLs in force. What sessions registered stays; every later
        listen, request, registration and delivery follows the new ACLs.
        """
        users_ok = self.security.reload()
        if self.acl_reloader is None:
            return users_ok
        policy = self.acl_reloader()
        if policy is not None:
            self.core.access.install(policy)
        return users_ok and policy is not None

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run a background task owned by the gateway (cancelled on stop)."""
        task = asyncio.create_task(coro, name=name)
        self._extra_tasks.add(task)
        task.add_done_callback(self._extra_tasks.discard)
        return task

    # --- FrameHandler (carriers call these) -------------------------------

    def link_up(self, link: StreamLink[Session]) -> Session:
        """A link is up: its session (the link keeps it as ``link.session``)."""
        self._links.add(link)
        session = self.core.attach(link)
        if not link.persistent:
            self.connections.up(link)
        return session

    def frames(self, link: StreamLink, bodies: list[bytes]) -> int | None:
        """Hand bodies to the core; stop when the link pauses or its turn is used up.

        The link pauses when its queue goes over the cap; the turn is
        :data:`TURN_BUDGET` seconds of CPU time (one frame at least). Either way the link holds
        the rest (for the resume, or the next loop turn, after other links).
        """
        session: Session = link.session
        receive = self.core.receive
        if len(bodies) == 1:
            receive(session, bodies[0])
            return None
        wall, cpu = time.perf_counter, time.thread_time  # wall: cheap; CPU: exact
        cpu0 = cpu()
        end = wall() + TURN_BUDGET
        for done, body in enumerate(bodies, 1):
            receive(session, body)
            if link.reading_paused:
                return done
            if wall() > end:  # on the wall clock; a preempted turn goes on for its rest
                used = cpu() - cpu0
                if used >= TURN_BUDGET:
                    return done
                end = wall() + TURN_BUDGET - used
        return None

    def link_down(self, link: StreamLink, exc: BaseException | None) -> None:
        if link.close_reason == TLS_FAILED:
            self._log_tls("%s: TLS handshake failed: %s", link.name, describe(exc or OSError()))
        self._links.discard(link)
        session: Session | None = link.session
        count_close(self.core.counters, link, session)
        self.flow.link_down(link)
        if not link.persistent:
            self.connections.forget(link)
        if session is not None:
            self.core.detach(session)

    # --- connection limit (the TcpListener calls these) -------------------

    @property
    def max_connections(self) -> int:
        """TCP connections at most (see :class:`ConnectionLimit`)."""
        return self.connections.maximum

    def _exhausted(self, exc: OSError) -> None:
        """accept() failed (the listener backs off): count it, log one line a minute,
        and when out of descriptors free one held by a pre-HELLO link, if any."""
        self.core.counters["accept_errors"] += 1
        self._log_limit(
            "accept failed: %s (%s); pausing new connections", describe(exc), errno_name(exc)
        )
        if exc.errno not in RESOURCE_ERRNOS:
            return
        self.connections.free_one("out of file descriptors")

    # --- in-process API (add_sender, add_listener... come from EndpointsAPI) --

    async def request(
        self, sender: str, method: str, params: Any = None, timeout: float | None = None
    ) -> Any:
        """Call any sender's handler (remote or local); raises a RequestError subclass."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str, bytes]] = loop.create_future()

        def done(status: int, message: str, data: bytes) -> None:
            if not future.done():
                future.set_result((status, message, data))

        wait = self.core.request_timeout if timeout is None else timeout
        self.core.start_request(sender, method, pack(params), done, timeout=wait)
        try:
            status, message, data = await asyncio.wait_for(future, wait + 1.0)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no response from {sender}.{method}") from None
        if status:
            raise request_error_for(status, message)
        return unpack(data)

    def links(self) -> list[dict[str, Any]]:
        """Per-link state and counters (closed serial ports included)."""
        return self.core.links()
