"""LocalRouter: the routing core used inside one process, no network."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sig.compat import LocalRouterAliases
from sig.core.endpoints import (
    Handlers,
    Listener,
    ListenerCallback,
    Sender,
    check_sender_args,
    deliver,
    handler_error,
    resolve_handler,
    subscribe_listener,
    unsubscribe_listener,
)
from sig.core.routing import RoutingTable, SenderInfo
from sig.errors import NoSuchSender

logger = logging.getLogger(__name__)


class LocalRouter(LocalRouterAliases):
    """Senders, listeners and requests inside one process.

    Delivery is synchronous: ``signal.trigger(data)`` returns after every
    matching listener ran. A listener that raises is logged and counted in
    ``listener_errors``; the others still run.
    """

    def __init__(self) -> None:
        self._table: RoutingTable[Listener] = RoutingTable(self._announce)
        self._senders: dict[str, Sender] = {}
        self.listener_errors = 0

    # --- senders ----------------------------------------------------------

    def add_sender(
        self, name: str, events: Iterable[str], requests: Handlers | None = None
    ) -> Sender:
        """Declare a sender; raises DuplicateSenderError if the name is taken."""
        name, event_list, handlers = check_sender_args(name, events, requests)
        sender = Sender(self, name, event_list, handlers)
        self._table.add_sender(
            name,
            event_list,
            sender.methods,
            default_handler=sender.default_handler,
            owner=sender,
        )
        self._senders[name] = sender
        return sender

    def remove_sender(self, sender: str | Sender) -> bool:
        """Remove a sender (fires its ``#disconnect``); False if it was not there."""
        name = sender.name if isinstance(sender, Sender) else sender
        if name not in self._senders:
            return False
        del self._senders[name]
        self._table.remove_sender(name)
        return True

    def get_sender(self, name: str) -> Sender | None:
        return self._senders.get(name)

    def list_senders(self) -> dict[str, dict[str, list[str]]]:
        """Live senders with their events and request methods."""
        return {name: info.announcement() for name, info in self._table.senders.items()}

    # --- listeners --------------------------------------------------------

    def add_listener(
        self, callback: ListenerCallback, sender: str | None = None, event: str | None = None
    ) -> Listener:
        """Call ``callback(info, data)`` for every matching event."""
        return subscribe_listener(self._table, callback, sender, event)

    def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        """Remove a registration by handle, or by (callback, sender, event)."""
        return unsubscribe_listener(self._table, listener, sender, event)

    # --- events and requests ----------------------------------------------

    def _emit(self, sender: Sender, event: str, data: Any) -> None:
        if self._senders.get(sender.name) is not sender:
            raise NoSuchSender(f"sender {sender.name!r} was removed from this router")
        self.listener_errors += deliver(
            self._table.match(sender.name, event), sender.name, event, data
        )

    def _announce(self, info: SenderInfo, event: str) -> None:
        data = info.announcement()
        self.listener_errors += deliver(self._table.match(info.name, event), info.name, event, data)

    def request(self, sender: str, method: str, params: Any = None) -> Any:
        """Call a sender's request handler; raises a RequestError subclass on failure."""
        target = self._senders.get(sender)
        if target is None:
            raise NoSuchSender(f"no sender named {sender!r} is connected")
        handler = resolve_handler(target.handlers, sender, method)
        try:
            return handler(params)
        except Exception as exc:
            raise handler_error(exc, sender, method) from exc
