"""sig: an event-dispatching gateway for Python applications and microcontrollers.

Senders declare named events and trigger them; listeners register for exactly
the events they want; request handlers answer requests by method name. The
gateway connects TCP peers and UART devices and tells everyone who is there
(``#connect`` / ``#disconnect``).
"""

from typing import TYPE_CHECKING, Any

from sig.compat import LOG_LEVELS, SimpleLogger, setup_logger
from sig.compat import SeedSender as Sender
from sig.core.endpoints import Listener, Signal
from sig.core.gateway import Limits
from sig.core.routing import CONNECT, DISCONNECT
from sig.errors import (
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
from sig.routers.local import LocalRouter

__version__ = "0.1.0"

# The network routers pull in asyncio; import them only when asked for, so that
# the codec and routing core stay importable without any I/O machinery.
_LAZY = {
    "AsyncClientRouter": "sig.routers.client",
    "Backoff": "sig.routers.retry",
    "ClientRouter": "sig.routers.sync",
    "DiscoveredGateway": "sig.routers.discovery",
    "discover": "sig.routers.discovery",
    "discover_async": "sig.routers.discovery",
    "ServerRouter": "sig.routers.gateway",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sig' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from sig.routers.client import AsyncClientRouter
    from sig.routers.discovery import DiscoveredGateway, discover, discover_async
    from sig.routers.gateway import ServerRouter
    from sig.routers.retry import Backoff
    from sig.routers.sync import ClientRouter

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
