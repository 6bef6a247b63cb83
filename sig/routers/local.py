"""LocalRouter: the routing core used inside one process, no network."""

from __future__ import annotations

import logging
from typing import Any

from sig.compat import LocalRouterAliases, SeedSender
from sig.core.endpoints import Endpoints, EndpointsAPI, Listener, call_handler, deliver
from sig.core.retained import RetainedStore
from sig.core.routing import RoutingTable, SenderInfo
from sig.errors import EncodeError, NoSuchSender
from sig.protocol.data import pack

logger = logging.getLogger(__name__)


class LocalRouter(EndpointsAPI, LocalRouterAliases):
    """Senders, listeners and requests inside one process.

    Delivery is synchronous: ``signal.trigger(data)`` returns after every
    matching listener ran. A listener that raises is logged and counted in
    ``listener_errors``; the others still run. The senders and listeners are
    kept by :class:`~sig.core.endpoints.Endpoints`, as on the gateway.
    """

    def __init__(self) -> None:
        self._table: RoutingTable[Listener] = RoutingTable(self._announce)
        self.endpoints = Endpoints(self._table, self._deliver, sender_class=SeedSender)
        self.listener_errors = 0
        #: Last values of the retained events (``add_sender(..., retained=...)``).
        self.retained = self.endpoints.retained = RetainedStore()

    def _deliver(self, sender: str, event: str, data: Any) -> None:
        self.listener_errors += deliver(self._table.match(sender, event), sender, event, data)
        kept = self.retained.kept.get(sender)
        if kept is not None and event in kept:
            try:
                self.retained.update(sender, event, pack(data))
            except EncodeError as exc:  # delivered in-process; not kept as a value
                logger.warning("retained %s:%s not kept: %s", sender, event, exc)

    def _announce(self, info: SenderInfo, event: str) -> None:
        self._deliver(info.name, event, info.presence())

    def request(self, sender: str, method: str, params: Any = None) -> Any:
        """Call a sender's request handler; raises a RequestError subclass on failure."""
        target = self.endpoints.get_sender(sender)
        if target is None:
            raise NoSuchSender(f"no sender named {sender!r} is connected")
        return call_handler(target.handlers, sender, method, params)
