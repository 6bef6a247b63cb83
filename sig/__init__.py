"""sig: an event-dispatching gateway for Python applications and microcontrollers.

Senders declare named events and trigger them; listeners register for exactly
the events they want; request handlers answer requests by method name. The
gateway connects TCP peers and UART devices and tells everyone who is there
(``#connect`` / ``#disconnect``).
"""

from typing import TYPE_CHECKING, Any

from ._api import Listener, Sender, Signal
from ._compat import LOG_LEVELS, SimpleLogger, setup_logger
from ._gateway import Limits
from ._local import LocalRouter
from ._routing import CONNECT, DISCONNECT
from .errors import (
    ConnectError,
    ConnectionLost,
    DecodeError,
    DuplicateSenderError,
    EncodeError,
    ErrorCode,
    GatewayBusy,
    HandlerError,
    InvalidNameError,
    LimitReached,
    NoSuchMethod,
    NoSuchSender,
    NotAuthorised,
    NotConnectedError,
    ProtocolError,
    RequestError,
    RequestTimeout,
    RequestTooLarge,
    SenderGone,
    SigError,
    UnknownEventError,
)

__version__ = "0.1.0"

# The network routers pull in asyncio; import them only when asked for, so that
# the codec and routing core stay importable without any I/O machinery.
_LAZY = {
    "AsyncClientRouter": ".client",
    "Backoff": ".client",
    "ClientRouter": "._sync",
    "DiscoveredGateway": "._discovery",
    "discover": "._discovery",
    "discover_async": "._discovery",
    "ServerRouter": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sig' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from ._discovery import DiscoveredGateway, discover, discover_async
    from ._sync import ClientRouter
    from .client import AsyncClientRouter, Backoff
    from .server import ServerRouter

__all__ = [
    "CONNECT",
    "DISCONNECT",
    "LOG_LEVELS",
    "AsyncClientRouter",
    "Backoff",
    "ClientRouter",
    "ConnectError",
    "ConnectionLost",
    "DecodeError",
    "DiscoveredGateway",
    "DuplicateSenderError",
    "EncodeError",
    "ErrorCode",
    "GatewayBusy",
    "HandlerError",
    "InvalidNameError",
    "LimitReached",
    "Limits",
    "Listener",
    "LocalRouter",
    "NoSuchMethod",
    "NoSuchSender",
    "NotAuthorised",
    "NotConnectedError",
    "ProtocolError",
    "RequestError",
    "RequestTimeout",
    "RequestTooLarge",
    "Sender",
    "SenderGone",
    "ServerRouter",
    "SigError",
    "Signal",
    "SimpleLogger",
    "UnknownEventError",
    "__version__",
    "discover",
    "discover_async",
    "setup_logger",
]
