"""The seed's TCP carrier object: ``CarrierTCPClient().connect(host, port)``.

It holds the connection settings and hooks of the seed's API and hands the work
to the :class:`sig.ClientRouter` it is given to (``ClientRouter(carrier)``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carriers.tcp import client_context
from sig.errors import SigError
from sig.protocol.constants import DEFAULT_PORT

if TYPE_CHECKING:
    from sig.routers.sync import ClientRouter

__all__ = ["CarrierTCPClient"]


class CarrierTCPClient:
    """TCP connection to a sig gateway, in the seed's shape.

    ``username``/``password``: the login sent in HELLO (see :class:`sig.ClientRouter`).
    ``tls`` and ``cafile``: as for :class:`sig.AsyncClientRouter` (``tls=True``,
    a CA file, or an ``ssl.SSLContext``); give them before ``ClientRouter(carrier)``.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        cafile: str | None = None,
    ) -> None:
        self.username, self.password = username, password
        #: The TLS context the connection uses (None: plain TCP).
        self.tls = client_context(tls, cafile)
        #: Called after every (re)connect, once the router re-registered everything.
        self.on_connected: Callable[[], Any] | None = None
        #: Called when the connection is lost.
        self.on_disconnected: Callable[[], Any] | None = None
        self._router: ClientRouter | None = None

    def _bind(self, router: ClientRouter) -> None:
        if self._router is not None and self._router is not router:
            raise SigError("this carrier already belongs to another ClientRouter")
        self._router = router
        client = router._client
        if client.username is None:  # the router's own login wins over the carrier's
            client.username, client.password = self.username, self.password
        if client.tls is None:  # and its own TLS context
            client.tls = self.tls

    def _need_router(self) -> ClientRouter:
        if self._router is None:
            raise SigError("create sig.ClientRouter(carrier) before connecting the carrier")
        return self._router

    def connect(
        self, host: str = "localhost", port: int = DEFAULT_PORT, auto_reconnect: bool = True
    ) -> bool:
        """Connect; with auto_reconnect it keeps retrying in the background."""
        return self._need_router().connect(host, port, auto_reconnect=auto_reconnect)

    def isConnected(self) -> bool:
        return self._router is not None and self._router.is_connected

    is_connected = property(isConnected)

    def disconnect(self) -> None:
        if self._router is not None:
            self._router.close()
