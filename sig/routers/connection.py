"""The asyncio side of a client's session: the link, the reconnect loop, the timer, the futures.

:class:`ClientConnection` runs one :class:`sig.core.client.ClientSession` over
TCP for an :class:`sig.routers.client.AsyncClientRouter`: it keeps a link open
with :func:`sig.routers.retry.keep_open` (connect, HELLO and the replay, serve
until the link closes, reconnect with backoff), hands the session what the
link decodes, arms one timer at the session's next deadline, and settles the
futures the router's callers wait on. Events and requests for the
application go back to the router, which runs the callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from carriers.stream import StreamLink
from carriers.tcp import connect_tcp, describe
from sig.core import client as core
from sig.core.auth import encode_credentials
from sig.errors import ConnectError, ConnectionLost, NotAuthorised, SigError
from sig.protocol import messages as w
from sig.routers.callbacks import Dispatch, SenderRefused, deliver_retained
from sig.routers.retry import Backoff, keep_open

logger = logging.getLogger(__name__)

_INF = float("inf")
_EVENT = w.MessageType.EVENT.value


class Stop(Exception):
    """The reconnect loop ends (closing, or a failed first attempt without auto_reconnect)."""


class Answer(Protocol):
    """What a request's RESPONSE settles: an asyncio or a ``concurrent.futures`` Future.

    Only the loop's thread settles it, and nobody else cancels it.
    """

    def done(self) -> bool: ...
    def set_result(self, result: w.Response, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...
    def exception(self) -> BaseException | None: ...


class ConnectionClient(Protocol):
    """What a :class:`ClientConnection` uses of its :class:`~sig.routers.client.AsyncClientRouter`.

    Its settings (read at every attempt: the sync API may change them between
    two), its hooks and how it runs them, and where events and requests go.
    A type only: the client hands itself over, and this module never imports it.
    """

    @property
    def session(self) -> core.ClientSession: ...
    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def tls(self) -> ssl.SSLContext | None: ...
    @property
    def keepalive(self) -> float: ...
    @property
    def auto_reconnect(self) -> bool: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def backoff(self) -> Backoff: ...
    @property
    def stats(self) -> dict[str, int]: ...
    @property
    def on_connected(self) -> Callable[[], Any] | None: ...
    @property
    def on_disconnected(self) -> Callable[[], Any] | None: ...
    @property
    def on_sender_refused(self) -> SenderRefused | None: ...
    @property
    def dispatch(self) -> Dispatch: ...
    @property
    def _closing(self) -> bool: ...
    def _on_event(self, sender: str, event: str, data: bytes) -> None: ...
    @property
    def dispatch_event(self) -> Dispatch: ...
    def _on_request(self, ev: core.RequestReceived) -> None: ...


class ClientConnection:
    """Keeps the client's link up and its session fed; a FrameHandler for the link."""

    def __init__(self, client: ConnectionClient) -> None:
        self.client = client
        self.session = client.session
        self.link: StreamLink | None = None
        #: True from the end of the replay until the link is lost.
        self.connected = False
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.requests: dict[int, Answer] = {}
        self.ready: asyncio.Future[core.Opened] | None = None
        self.first: asyncio.Future[None] | None = None
        self._opened = core.Opened(0)
        self._failure: BaseException | None = None
        self._refusal_logged = False  #: the current run of refused logins was logged
        self._timer: asyncio.TimerHandle | None = None
        self.timer_due = _INF
        self._deliver = client._on_event

    # --- the reconnect loop -----------------------------------------------

    async def run(self, first: asyncio.Future[None]) -> None:
        """Keep a session open until the client closes (or gives up, without auto_reconnect)."""
        self.first = first
        with contextlib.suppress(Stop):
            await keep_open(
                self._open_once, self._serve, self.client.backoff, waiting=self._waiting
            )

    def _waiting(self, delay: float) -> None:
        client = self.client
        logger.info(
            "cannot reach gateway %s:%s (%s); retrying in %.1f s",
            client.host,
            client.port,
            self._failure,
            delay,
        )

    async def _open_once(self) -> StreamLink | None:
        """Connect and replay the registrations; None when this attempt failed."""
        client = self.client
        if client._closing:
            raise Stop
        link = None
        try:
            link = await connect_tcp(
                self, client.host, client.port, client.connect_timeout, tls=client.tls
            )
            self.link = link
            await self._handshake(link)
        except (ConnectError, SigError, OSError) as exc:
            if link is not None:
                link.abort()  # never leave a half-registered connection behind
            self.drop_link()
            if self._gives_up(exc):
                self._settle_first(exc if isinstance(exc, SigError) else ConnectError(str(exc)))
                raise Stop from None
            self._failure = exc
            self._refused(exc)
            return None
        return link

    def _gives_up(self, exc: BaseException) -> bool:
        """True if this failure ends the loop: no auto_reconnect, or refused credentials
        at the first attempt (they will not get better by retrying: connect() raises)."""
        if not self.client.auto_reconnect:
            return True
        first = self.first
        return isinstance(exc, NotAuthorised) and first is not None and not first.done()

    def _refused(self, exc: BaseException) -> None:
        """Refused credentials at a reconnect: one warning per run of refusals (then backoff)."""
        if not isinstance(exc, NotAuthorised):
            return
        if not self._refusal_logged:
            self._refusal_logged = True
            client = self.client
            logger.warning(
                "gateway %s:%s refused our login as %r (%s); retrying with backoff",
                client.host,
                client.port,
                client.username,
                exc,
            )

    async def _handshake(self, link: StreamLink) -> None:
        """HELLO, WELCOME and the replay (what it refused is told once connected)."""
        client, session = self.client, self.session
        self.ready = asyncio.get_running_loop().create_future()
        session.name, session.keepalive = client.name, client.keepalive
        session.credentials = encode_credentials(client.username, client.password)
        session.handshake_timeout = client.connect_timeout
        session.start(link)
        self.arm()
        self._opened = await self.ready

    async def _serve(self, link: StreamLink) -> bool:
        """The session is open: run until the link closes; True to reconnect."""
        client = self.client
        self.connected = True
        self._refusal_logged = False
        if not self._settle_first(None):
            client.stats["reconnects"] += 1
        logger.info("connected to gateway %s:%s", client.host, client.port)
        for name, exc in self._opened.refused:
            if client.on_sender_refused is not None:
                client.dispatch(client.on_sender_refused, (name, exc))
        if client.on_connected is not None:
            client.dispatch(client.on_connected, ())
        try:
            await link.closed.wait()
        finally:
            was_connected = self.connected
            self.drop_link()
        if was_connected:
            logger.info("disconnected from gateway %s:%s", client.host, client.port)
            if client.on_disconnected is not None:
                client.dispatch(client.on_disconnected, ())
        return client.auto_reconnect and not client._closing

    def _settle_first(self, exc: BaseException | None) -> bool:
        """Tell connect() how the first attempt went; False if it was told already."""
        first = self.first
        if first is None or first.done():
            return False
        if exc is None:
            first.set_result(None)
        else:
            first.set_exception(exc)
        return True

    def drop_link(self) -> None:
        """The link is gone: the session forgets it, every waiter gets ConnectionLost."""
        self.connected = False
        self.link = None
        self.session.connection_lost()
        self.arm()
        lost = ConnectionLost("connection to the gateway was lost")
        pending: list[Answer | asyncio.Future[Any]] = [
            *self.waiters.values(),
            *self.requests.values(),
        ]
        if self.ready is not None:
            pending.append(self.ready)
        for fut in pending:
            if not fut.done():
                fut.set_exception(lost)
                fut.exception()  # mark retrieved: nobody may be waiting any more
        self.waiters.clear()
        self.requests.clear()

    # --- futures and the timer --------------------------------------------

    def arm(self) -> None:
        """Have the timer fire at the session's next deadline (or not at all)."""
        due = self.session.next_deadline()
        if self._timer is not None:
            if due >= self.timer_due:
                return  # it fires sooner; tick() arms it again
            self._timer.cancel()
            self._timer = None
        self.timer_due = due
        if due < _INF:
            delay = max(0.0, due - self.session.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer, self.timer_due = None, _INF
        events = self.session.poll(self.session.clock())
        if events:
            self.handle(events)
        self.arm()

    async def wait(self, ref: int, timeout: float) -> None:
        """Wait for the answer to the registration sent under ``ref``."""
        fut = self.waiters.get(ref)
        if fut is None:
            fut = self.waiters[ref] = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(asyncio.shield(fut), timeout)

    def track(self, request_id: int, deadline: float, fut: Answer | None = None) -> Answer:
        """The future a request's RESPONSE (or its timeout) settles: ``fut``, or a new one."""
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
        self.requests[request_id] = fut
        if deadline < self.timer_due:
            self.arm()
        return fut

    # --- FrameHandler -----------------------------------------------------

    def link_up(self, link: StreamLink) -> None:
        """Nothing to do yet: the session starts once connect_tcp returned."""

    def link_down(self, link: StreamLink, exc: BaseException | None) -> None:
        if exc is not None:
            logger.debug("link to gateway lost: %s", exc)
        ready = self.ready
        if ready is not None and not ready.done():  # lost during the handshake
            ready.set_exception(ConnectError(self._lost_why(exc)))

    def _lost_why(self, exc: BaseException | None) -> str:
        """Why the link went during the handshake, as the ConnectError says it."""
        closed = exc is None or isinstance(exc, (ConnectionResetError, ConnectionAbortedError))
        if closed and self.client.tls is not None:  # a gateway refusing a TLS peer just closes
            return (
                "the gateway closed the connection after the TLS handshake"
                " (does it want a client certificate?)"
            )
        if exc is not None:
            return f"connection lost during the handshake: {describe(exc)}"
        return "connection lost during the handshake"

    def frames(self, link: StreamLink, bodies: list[bytes]) -> None:
        session = self.session
        session.last_rx = session.clock()
        for body in bodies:
            if body[0] == _EVENT:  # the hot path: no message object for an EVENT
                fields = w.split_event(body)
                if fields is not None:
                    self._deliver(*fields)
                    continue
            events = session.receive(body)
            if events:
                self.handle(events)

    # --- what the session says ----------------------------------------------

    def handle(self, events: list[core.ClientEvent]) -> None:
        """Act on the session's events: settle futures, deliver, drop the link."""
        rearm = False
        for ev in events:
            if type(ev) is w.Response:  # the hot path: the timer stays as it is
                fut = self.requests.pop(ev.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            else:
                _ACTIONS[type(ev)](self, ev)
                rearm = True
        if rearm:
            self.arm()

    def _on_opened(self, ev: core.Opened) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(ev)

    def _on_handshake_failed(self, ev: core.HandshakeFailed) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ev.error or ConnectError(ev.reason))
        if self.link is not None:
            self.link.close()

    def _on_answer(self, ev: core.Registered | core.Refused) -> None:
        fut = self.waiters.pop(ev.ref, None)
        if fut is None or fut.done():
            return
        if isinstance(ev, core.Refused):
            fut.set_exception(ev.error)
            fut.exception()  # retrieved: a caller that timed out waits no more
        else:
            fut.set_result(None)

    def _on_timed_out(self, ev: core.RequestTimedOut) -> None:
        fut = self.requests.pop(ev.request_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(ev.error)

    def _on_link_over(self, ev: core.LinkTimeout | core.Invited) -> None:
        link = self.link
        if link is None:
            return
        if isinstance(ev, core.LinkTimeout):
            link.abort()
        else:
            link.close()  # the reconnect path replays everything

    def _on_event(self, ev: core.EventReceived) -> None:
        self._deliver(ev.sender, ev.event, ev.data)

    def _on_request(self, ev: core.RequestReceived) -> None:
        self.client._on_request(ev)

    def _on_retained(self, ev: core.RetainedReceived) -> None:
        client = self.client
        deliver_retained(self.session.table, client.dispatch_event, client.stats, ev)


_ACTIONS: dict[type, Callable[[ClientConnection, Any], None]] = {
    core.Opened: ClientConnection._on_opened,
    core.HandshakeFailed: ClientConnection._on_handshake_failed,
    core.Registered: ClientConnection._on_answer,
    core.Refused: ClientConnection._on_answer,
    core.EventReceived: ClientConnection._on_event,
    core.RetainedReceived: ClientConnection._on_retained,
    core.RequestReceived: ClientConnection._on_request,
    core.RequestTimedOut: ClientConnection._on_timed_out,
    core.LinkTimeout: ClientConnection._on_link_over,
    core.Invited: ClientConnection._on_link_over,
}
