"""ServerRouter: the gateway. Binds the sans-I/O core to TCP (and serial) carriers.

In-process senders and listeners work on the gateway too (the demo ``timer``
sender of ``sig serve`` is one), with the same API as :class:`sig.LocalRouter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from carriers.stream import DEFAULT_HIGH_WATER, DEFAULT_STALL_TIMEOUT, StreamLink
from carriers.tcp import serve_tcp

from ._api import (
    Handlers,
    Listener,
    ListenerCallback,
    Sender,
    check_sender_args,
    subscribe_listener,
    unsubscribe_listener,
)
from ._compat import LocalRouterAliases
from ._data import pack, unpack
from ._gateway import GatewayCore, Limits
from ._session import Session
from .errors import NoSuchSender, RequestTimeout, request_error_for

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.1  #: seconds between keepalive / timeout checks


class ServerRouter(LocalRouterAliases):
    """The gateway: accepts TCP clients (and serial links) and routes between them."""

    def __init__(
        self,
        host: str | None = "0.0.0.0",
        port: int = 3000,
        *,
        name: str = "sig-gateway",
        request_timeout: float = 10.0,
        high_water: int = DEFAULT_HIGH_WATER,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        limits: Limits | None = None,
        serial_name_grace: float | None = None,
    ) -> None:
        """``serial_name_grace``: seconds a serial device's sender names stay
        reserved for its port after it goes quiet (None: twice its link timeout)."""
        self.host = host
        self.port = port
        self.core = GatewayCore(
            name,
            request_timeout=request_timeout,
            limits=limits,
            serial_name_grace=serial_name_grace,
        )
        self._link_options = {"high_water": high_water, "stall_timeout": stall_timeout}
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._links: set[StreamLink] = set()
        self._senders: dict[str, Sender] = {}
        self._extra_tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Bind the TCP port; raises sig.ConnectError if it cannot."""
        self._server = await serve_tcp(self, self.host, self.port, **self._link_options)
        sockets = getattr(self._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick(), name="sig-gateway-poll")
        logger.info("gateway %s listening on %s:%s", self.core.name, self.host, self.port)

    async def stop(self) -> None:
        """Graceful stop: #disconnect for every sender, links flushed and closed."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in list(self._extra_tasks):
            task.cancel()
        for name in list(self._senders):
            self.remove_sender(name)
        for session in list(self.core.sessions):
            self.core._end_session(session, "gateway shutting down")
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
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
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                self.core.poll()
            except Exception:  # a bug here must not stop keepalive for everyone
                logger.exception("gateway poll failed")

    def listen_addresses(self) -> list[str]:
        """The addresses the TCP server is bound to (``0.0.0.0`` / ``::`` for all)."""
        sockets = getattr(self._server, "sockets", None) or []
        return [str(sock.getsockname()[0]) for sock in sockets]

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run a background task owned by the gateway (cancelled on stop)."""
        task = asyncio.create_task(coro, name=name)
        self._extra_tasks.add(task)
        task.add_done_callback(self._extra_tasks.discard)
        return task

    # --- FrameHandler (carriers call these) -------------------------------

    def link_up(self, link: StreamLink) -> None:
        self._links.add(link)
        link.session = self.core.attach(link)

    def frames(self, link: StreamLink, bodies: list[bytes]) -> None:
        session: Session = link.session
        receive = self.core.receive
        for body in bodies:
            receive(session, body)

    def link_down(self, link: StreamLink, exc: BaseException | None) -> None:
        self._links.discard(link)
        if link.session is not None:
            self.core.detach(link.session)

    # --- in-process API ---------------------------------------------------

    def add_sender(
        self, name: str, events: Iterable[str], requests: Handlers | None = None
    ) -> Sender:
        name, event_list, handlers = check_sender_args(name, events, requests)
        self.core.add_local_sender(name, event_list, handlers)
        sender = Sender(self, name, event_list, handlers)
        self._senders[name] = sender
        return sender

    def remove_sender(self, sender: str | Sender) -> bool:
        name = sender.name if isinstance(sender, Sender) else sender
        self._senders.pop(name, None)
        return self.core.remove_local_sender(name)

    def get_sender(self, name: str) -> Sender | None:
        return self._senders.get(name)

    def _emit(self, sender: Sender, event: str, data: Any) -> None:
        if self._senders.get(sender.name) is not sender:
            raise NoSuchSender(f"sender {sender.name!r} was removed from this gateway")
        self.core.route(sender.name, event, pack(data))

    def add_listener(
        self, callback: ListenerCallback, sender: str | None = None, event: str | None = None
    ) -> Listener:
        """Call ``callback(info, data)`` for every matching event."""
        return subscribe_listener(self.core.table, callback, sender, event)

    def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        """Remove a registration by handle, or by (callback, sender, event)."""
        return unsubscribe_listener(self.core.table, listener, sender, event)

    def list_senders(self) -> dict[str, dict[str, list[str]]]:
        return {name: info.announcement() for name, info in self.core.table.senders.items()}

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
