"""sig: an event-dispatching gateway for Python applications and microcontrollers.

Senders declare named events and trigger them; listeners register for exactly
the events they want; request handlers answer requests by method name. The
gateway connects TCP peers and UART devices and tells everyone who is there
(``#connect`` / ``#disconnect``).
"""

from ._api import Listener, Sender, Signal
from ._compat import LOG_LEVELS, SimpleLogger, setup_logger
from ._local import LocalRouter
from ._routing import CONNECT, DISCONNECT
from .errors import (
    ConnectError,
    DecodeError,
    DuplicateSenderError,
    EncodeError,
    ErrorCode,
    GatewayBusy,
    HandlerError,
    InvalidNameError,
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

__all__ = [
    "CONNECT",
    "DISCONNECT",
    "LOG_LEVELS",
    "ConnectError",
    "DecodeError",
    "DuplicateSenderError",
    "EncodeError",
    "ErrorCode",
    "GatewayBusy",
    "HandlerError",
    "InvalidNameError",
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
    "SigError",
    "Signal",
    "SimpleLogger",
    "UnknownEventError",
    "__version__",
    "setup_logger",
]
