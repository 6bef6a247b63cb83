"""In-process endpoints: the senders, signals and listener handles user code holds.

They are the same for every router (local, gateway, asyncio client,
synchronous client): a :class:`Sender` asks its host router to deliver,
whatever that router does with it (call listeners in-process, or send a
TRIGGER frame). This module also holds what every router does with them the
same way: argument checks, listener delivery (:func:`deliver`) and the one
mapping from a request handler's exception to the error that answers it
(:func:`handler_error`), and the one registry of a router's in-process
senders and listeners (:class:`Endpoints`, with :class:`EndpointsAPI` the
methods both LocalRouter and the gateway offer over it).

The seed's camelCase names are not here: :mod:`sig.compat` adds them to the
senders the routers hand out (``sender_class``), the core never imports it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from sig.core.delivery import Policy, listen_options
from sig.core.meta import Describe, local_meta
from sig.core.retained import LOCAL_OWNER, RetainedStore, deliver_retained
from sig.core.routing import RoutingTable, check_declared_event, check_name
from sig.errors import (
    HandlerError,
    InvalidNameError,
    NoSuchMethod,
    NoSuchSender,
    RequestError,
    UnknownEventError,
)

logger = logging.getLogger(__name__)

#: A listener callback: ``callback(info, data)``, info has "sender" and "event".
ListenerCallback = Callable[[dict[str, Any], Any], Any]
#: Named request handler ``handler(params)`` or default ``handler(method, params)``.
RequestHandler = Callable[..., Any]
Handlers = Mapping["str | None", RequestHandler]


class SenderHost(Protocol):
    """What a Sender needs from the router that owns it."""

    def _emit(self, sender: Sender, event: str, data: Any) -> None: ...


class Signal:
    """One declared event of one sender; ``trigger(data)`` sends it."""

    __slots__ = ("_sender", "event")

    def __init__(self, sender: Sender, event: str) -> None:
        self._sender = sender
        self.event = event

    @property
    def sender(self) -> Sender:
        return self._sender

    def trigger(self, data: Any = None) -> None:
        """Deliver ``data`` to everyone listening to this event."""
        sender = self._sender
        sender._host._emit(sender, self.event, data)

    def __repr__(self) -> str:
        return f"<Signal {self._sender.name}:{self.event}>"


class Sender:
    """A named source of events, owned by a router."""

    __slots__ = ("_host", "_signals", "events", "handlers", "name")

    def __init__(
        self, host: SenderHost, name: str, events: Iterable[str], handlers: Handlers
    ) -> None:
        self._host = host
        self.name = name
        self.events: tuple[str, ...] = tuple(events)
        self.handlers: dict[str | None, RequestHandler] = dict(handlers)
        self._signals = {e: Signal(self, e) for e in self.events}

    @property
    def methods(self) -> tuple[str, ...]:
        """Named request methods (the default handler is not one)."""
        return tuple(m for m in self.handlers if m is not None)

    @property
    def default_handler(self) -> bool:
        return None in self.handlers

    def get_signal(self, event: str) -> Signal:
        """The signal of a declared event; raises UnknownEventError otherwise."""
        try:
            return self._signals[event]
        except KeyError:
            raise UnknownEventError(
                f"sender {self.name!r} did not declare event {event!r}"
                f" (declared: {', '.join(self.events) or 'none'})"
            ) from None

    def trigger(self, event: str, data: Any = None) -> None:
        self.get_signal(event).trigger(data)

    def __repr__(self) -> str:
        return f"<Sender {self.name} events={list(self.events)}>"


class Listener:
    """Handle of one listener registration; pass it to ``remove_listener``."""

    __slots__ = ("callback", "event", "options", "sender")

    def __init__(
        self,
        callback: ListenerCallback,
        sender: str | None,
        event: str | None,
        options: int = 0,
    ) -> None:
        self.callback = callback
        self.sender = sender
        self.event = event
        #: LISTEN options (delivery policy, no_local); in one process, nothing waits: 0.
        self.options = options

    def __repr__(self) -> str:
        name = getattr(self.callback, "__qualname__", repr(self.callback))
        return f"<Listener {name} on ({self.sender!r}, {self.event!r})>"


def check_sender_args(
    name: object, events: object, requests: Handlers | None
) -> tuple[str, tuple[str, ...], dict[str | None, RequestHandler]]:
    """Validate add_sender's arguments; clear errors for wrong types."""
    check_name("sender", name)
    assert isinstance(name, str)
    if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
        raise InvalidNameError(f"events must be a list of event names, not {type(events).__name__}")
    # "#connect" / "#disconnect" are refused here too, so a client learns it at
    # once rather than from the gateway's INVALID_NAME after a round trip.
    event_list = tuple(dict.fromkeys(check_declared_event(e) for e in events))
    handlers: dict[str | None, RequestHandler] = {}
    for method, handler in (requests or {}).items():
        if method is not None:
            check_name("method", method)
        if not callable(handler):
            raise TypeError(f"request handler for {method!r} is not callable: {handler!r}")
        handlers[method] = handler
    return name, event_list, handlers


def check_listener_args(callback: object, sender: object, event: object) -> None:
    if not callable(callback):
        raise TypeError(f"listener callback is not callable: {callback!r}")
    if sender is not None:
        check_name("sender", sender)
    if event is not None:
        check_name("event", event)


def resolve_handler(
    handlers: Mapping[str | None, RequestHandler], sender: str, method: str
) -> Callable[[Any], Any]:
    """The one-argument callable that answers ``method``; raises NoSuchMethod."""
    handler = handlers.get(method)
    if handler is not None:
        return handler
    default = handlers.get(None)
    if default is None:
        raise NoSuchMethod(f"sender {sender!r} has no request handler for {method!r}")
    return functools.partial(default, method)


def subscribe_listener(
    table: RoutingTable[Any],
    callback: ListenerCallback,
    sender: str | None,
    event: str | None,
    options: int = 0,
) -> Listener:
    """Validate and register an in-process listener in ``table`` (``options``: LISTEN's)."""
    check_listener_args(callback, sender, event)
    listener = Listener(callback, sender, event, options)
    table.subscribe(listener, sender, event)
    return listener


def unsubscribe_listener(
    table: RoutingTable[Any],
    listener: Listener | ListenerCallback,
    sender: str | None,
    event: str | None,
) -> bool:
    """Remove a registration by handle, or by (callback, sender, event)."""
    if isinstance(listener, Listener):
        return table.unsubscribe(listener, listener.sender, listener.event)
    for sub in table.subscribers(sender, event):
        if isinstance(sub, Listener) and sub.callback == listener:
            return table.unsubscribe(sub, sender, event)
    return False


def deliver(listeners: Iterable[Listener], sender: str, event: str, data: Any) -> int:
    """Call each listener; one that raises is logged and skipped. Returns the failures."""
    failures = 0
    for listener in listeners:
        try:
            listener.callback({"sender": sender, "event": event}, data)
        except Exception:
            failures += 1
            logger.exception("listener %r raised on %s:%s", listener, sender, event)
    return failures


def call_handler(handlers: Handlers, sender: str, method: str, params: Any) -> Any:
    """Run ``sender``'s handler of ``method``; any failure raises the error that answers it."""
    handler = resolve_handler(handlers, sender, method)
    try:
        return handler(params)
    except Exception as exc:
        raise handler_error(exc, sender, method) from exc


def handler_error(exc: BaseException, sender: str, method: str) -> RequestError:
    """The error that answers a request whose handler raised ``exc`` (logged if unexpected).

    A RequestError (NoSuchMethod, or one the handler raised on purpose) answers
    as it is; anything else is a HANDLER_ERROR naming the handler and the
    exception, with the traceback in the log rather than on the wire.
    """
    if isinstance(exc, RequestError):
        return exc
    logger.error("request handler %s.%s raised", sender, method, exc_info=exc)
    return HandlerError(f"{sender}.{method} raised {type(exc).__name__}: {exc}")


#: What an Endpoints registry does with a trigger: ``emit(sender, event, data)``.
Emit = Callable[[str, str, Any], None]
#: Raises unless an in-process sender may take this name now (the gateway's reservations).
NameCheck = Callable[[str], None]


class Endpoints:
    """The in-process senders and listeners of one router, kept in its routing table.

    A sender is the ``owner`` of its :class:`~sig.core.routing.SenderInfo`, so
    the table is the one map of who is live (remote senders have a session as
    owner). ``emit`` is what the router does with a trigger of a live sender:
    LocalRouter calls its listeners, the gateway routes the event to links too.
    """

    def __init__(
        self,
        table: RoutingTable[Any],
        emit: Emit,
        *,
        check: NameCheck | None = None,
        sender_class: type[Sender] = Sender,
        where: str = "router",
    ) -> None:
        self.table = table
        self._emit_to = emit
        self._check = check
        self.sender_class = sender_class
        self._where = where
        #: The router's retained last values (None: the router keeps none).
        self.retained: RetainedStore | None = None

    def add_sender(
        self,
        name: str,
        events: Iterable[str],
        requests: Handlers | None = None,
        *,
        retained: bool | Iterable[str] = False,
        describe: Describe | None = None,
    ) -> Sender:
        """Declare a sender; raises DuplicateSenderError if the name is taken.

        ``retained``: True (every event) or the events whose last value the
        router keeps for new listeners; ``describe``: event -> descriptive keys.
        """
        name, event_list, handlers = check_sender_args(name, events, requests)
        meta = local_meta(event_list, retained, describe)
        if self._check is not None:
            self._check(name)
        sender = self.sender_class(self, name, event_list, handlers)
        self.table.add_sender(
            name,
            event_list,
            sender.methods,
            default_handler=sender.default_handler,
            owner=sender,
            meta=meta,
        )
        if self.retained is not None:
            self.retained.registered(name, meta.retained, LOCAL_OWNER)
        return sender

    def remove_sender(self, sender: str | Sender, *, on_purpose: bool = True) -> bool:
        """Remove an in-process sender (fires its ``#disconnect``); False if it was not there.

        Its retained values go; with ``on_purpose=False`` (the router shutting
        down) they stay, stale.
        """
        name = sender.name if isinstance(sender, Sender) else sender
        if self.get_sender(name) is None:
            return False  # not there, or a remote sender: not this registry's to remove
        if self.retained is not None:
            if on_purpose:
                self.retained.unregistered(name)
            else:
                self.retained.disconnected([name])
        self.table.remove_sender(name)
        return True

    def get_sender(self, name: str) -> Sender | None:
        """The in-process sender named ``name``, or None."""
        info = self.table.sender(name)
        owner = info.owner if info is not None else None
        return owner if isinstance(owner, Sender) else None

    def senders(self) -> list[Sender]:
        """Every live in-process sender (O(all senders): for shutdown, not per event)."""
        return [i.owner for i in self.table.senders.values() if isinstance(i.owner, Sender)]

    def list_senders(self) -> dict[str, dict[str, list[str]]]:
        """Live senders (remote ones too) with their events and request methods."""
        return {name: info.announcement() for name, info in self.table.senders.items()}

    def add_listener(
        self,
        callback: ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
        *,
        policy: Policy = "drop",
        no_local: bool = False,
    ) -> Listener:
        """Call ``callback(info, data)`` for every matching event.

        ``policy`` and ``no_local`` are checked and accepted for the same code
        to run against a gateway; in one process they change nothing: delivery
        is a direct call, nothing queues, and no event comes from a link.
        """
        listen_options(policy, no_local)
        listener = subscribe_listener(self.table, callback, sender, event)
        if self.retained is not None and self.retained.values:
            deliver_retained(self.retained, listener)  # retained values at once
        return listener

    def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        """Remove a registration by handle, or by (callback, sender, event)."""
        return unsubscribe_listener(self.table, listener, sender, event)

    def _emit(self, sender: Sender, event: str, data: Any) -> None:
        """A Signal fired: hand it to the router, if ``sender`` is still live here."""
        info = self.table.sender(sender.name)
        if info is None or info.owner is not sender:
            raise NoSuchSender(f"sender {sender.name!r} was removed from this {self._where}")
        self._emit_to(sender.name, event, data)


class EndpointsAPI:
    """The in-process API of a router (LocalRouter, the gateway), over ``self.endpoints``."""

    endpoints: Endpoints

    def add_sender(
        self,
        name: str,
        events: Iterable[str],
        requests: Handlers | None = None,
        *,
        retained: bool | Iterable[str] = False,
        describe: Describe | None = None,
    ) -> Sender:
        """Declare a sender; raises DuplicateSenderError if the name is taken.

        ``retained``: True or the events whose last value new listeners get at
        once (``info["retained"]``); ``describe``: event -> descriptive keys.
        """
        return self.endpoints.add_sender(
            name, events, requests, retained=retained, describe=describe
        )

    def remove_sender(self, sender: str | Sender) -> bool:
        """Remove a sender (fires its ``#disconnect``); False if it was not there."""
        return self.endpoints.remove_sender(sender)

    def get_sender(self, name: str) -> Sender | None:
        return self.endpoints.get_sender(name)

    def list_senders(self) -> dict[str, dict[str, list[str]]]:
        """Live senders with their events and request methods."""
        return self.endpoints.list_senders()

    def add_listener(
        self,
        callback: ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
        *,
        policy: Policy = "drop",
        no_local: bool = False,
    ) -> Listener:
        """Call ``callback(info, data)`` for every matching event (``policy``,
        ``no_local``: accepted, a no-op in one process; see :class:`Endpoints`)."""
        return self.endpoints.add_listener(
            callback, sender, event, policy=policy, no_local=no_local
        )

    def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        """Remove a registration by handle, or by (callback, sender, event)."""
        return self.endpoints.remove_listener(listener, sender, event)
