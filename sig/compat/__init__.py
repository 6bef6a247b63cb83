"""The seed's (pysig 0.7.3) names, as thin aliases over sig's own API.

Kept in this one module so camelCase never leaks into the core. The logging
names (``SimpleLogger``, ``LOG_LEVELS``, ``setup_logger``) sit on top of the
standard :mod:`logging` module: sig logs through ``logging.getLogger("sig")``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Protocol

from sig.core import endpoints

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sig.core.endpoints import Handlers, Listener, ListenerCallback, Sender, Signal


# --- logging --------------------------------------------------------------


class LOG_LEVELS:
    """The seed's level names, mapped to :mod:`logging` levels."""

    LEVEL_DEBUG = logging.DEBUG
    LEVEL_INFO = logging.INFO
    LEVEL_WARN = logging.WARNING
    LEVEL_WARNING = logging.WARNING
    LEVEL_ERROR = logging.ERROR
    LEVEL_CRITICAL = logging.CRITICAL


_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def SimpleLogger(level: int = logging.INFO, name: str = "sig.app") -> logging.Logger:
    """A standard logger printing to stderr at ``level`` (the seed's SimpleLogger)."""
    log = logging.getLogger(name)
    log.setLevel(level)
    if not any(getattr(h, "_sig_simple", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._sig_simple = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    return log


def setup_logger(log: logging.Logger | int | None = None) -> logging.Logger:
    """Send sig's own log records to ``log``'s handlers at its level.

    Accepts a logger (e.g. from :func:`SimpleLogger`), a level, or None (INFO).
    Returns the ``sig`` package logger.
    """
    root = logging.getLogger("sig")
    if log is None or isinstance(log, int):
        log = SimpleLogger(logging.INFO if log is None else log)
    root.setLevel(log.level or logging.INFO)
    if log is not root:
        root.handlers = list(log.handlers)
        root.propagate = False
        if log.name.startswith("sig."):
            log.propagate = False  # it prints with its own handlers already
    return root


# --- objects --------------------------------------------------------------


class _HasSignals(Protocol):
    name: str
    events: tuple[str, ...]

    def get_signal(self, event: str) -> Signal: ...


class SenderAliases:
    """``getSignal``, ``getName``, ``getEvents`` on a Sender."""

    __slots__ = ()

    def getSignal(self: _HasSignals, event: str) -> Signal:
        return self.get_signal(event)

    def getName(self: _HasSignals) -> str:
        return self.name

    def getEvents(self: _HasSignals) -> list[str]:
        return list(self.events)


class SeedSender(SenderAliases, endpoints.Sender):
    """The sender every router hands out (``sig.Sender``): the core's, with the seed's names."""

    __slots__ = ()


class _LocalLike(Protocol):
    def add_sender(
        self, name: str, events: Iterable[str], requests: Handlers | None = None
    ) -> Sender: ...
    def remove_sender(self, sender: str | Sender) -> bool: ...
    def get_sender(self, name: str) -> Sender | None: ...
    def add_listener(
        self, callback: ListenerCallback, sender: str | None = None, event: str | None = None
    ) -> Listener: ...
    def remove_listener(
        self,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool: ...
    def list_senders(self) -> dict[str, dict[str, list[str]]]: ...


def flatten_events(events: Any) -> list[Any]:
    """The article passes ``[["tick", "tac"]]``; accept one level of nesting."""
    if (
        isinstance(events, (list, tuple))
        and len(events) == 1
        and isinstance(events[0], (list, tuple))
    ):
        return list(events[0])
    return list(events) if isinstance(events, (list, tuple)) else events


class LocalRouterAliases:
    """The seed's router methods: ``addSender``, ``addListener`` and friends."""

    __slots__ = ()

    def addSender(
        self: _LocalLike, name: str, events: Iterable[Any], requests: Handlers | None = None
    ) -> Sender:
        return self.add_sender(name, flatten_events(events), requests)

    def removeSender(self: _LocalLike, sender: str | Sender) -> bool:
        return self.remove_sender(sender)

    def getSender(self: _LocalLike, name: str) -> Sender | None:
        return self.get_sender(name)

    def addListener(
        self: _LocalLike,
        callback: ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> Listener:
        return self.add_listener(callback, sender, event)

    def removeListener(
        self: _LocalLike,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        return self.remove_listener(listener, sender, event)

    def listSenders(self: _LocalLike) -> dict[str, dict[str, list[str]]]:
        return self.list_senders()


class _ClientLike(_LocalLike, Protocol):
    @property
    def is_connected(self) -> bool: ...
    def close(self) -> None: ...
    def request(
        self, sender: str, method: str, params: Any = None, timeout: float | None = None
    ) -> Any: ...


class ClientRouterAliases(LocalRouterAliases):
    """The seed's ClientRouter names: ``addRemoteSender``, ``remoteRequest`` and friends.

    On a client router every registration is network-wide, so ``addSender`` and
    ``addRemoteSender`` (likewise the listener names) are the same call.
    """

    __slots__ = ()

    def addRemoteSender(
        self: _ClientLike, name: str, events: Iterable[Any], requests: Handlers | None = None
    ) -> Sender:
        return self.add_sender(name, flatten_events(events), requests)

    def removeRemoteSender(self: _ClientLike, sender: str | Sender) -> bool:
        return self.remove_sender(sender)

    def addRemoteListener(
        self: _ClientLike,
        callback: ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> Listener:
        return self.add_listener(callback, sender, event)

    def removeRemoteListener(
        self: _ClientLike,
        listener: Listener | ListenerCallback,
        sender: str | None = None,
        event: str | None = None,
    ) -> bool:
        return self.remove_listener(listener, sender, event)

    def remoteRequest(self: _ClientLike, sender: str, method: str, params: Any = None) -> Any:
        return self.request(sender, method, params)

    def isConnected(self: _ClientLike) -> bool:
        return self.is_connected

    def disconnect(self: _ClientLike) -> None:
        self.close()
