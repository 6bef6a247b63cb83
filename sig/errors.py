"""Every exception sig raises, grouped by meaning.

Callers catch by meaning (``except sig.RequestError``), never by string or by
integer status. Wire error codes (:class:`ErrorCode`) travel in ERROR and
RESPONSE messages; :func:`request_error_for` maps a received code back to the
matching exception class at the API boundary.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Error codes carried on the wire (PROTOCOL.md, "Error codes")."""

    OK = 0  #: only in RESPONSE: the request succeeded
    MALFORMED = 1  #: a body that does not parse as its type says
    UNKNOWN_TYPE = 2  #: message type this peer does not know
    UNSUPPORTED_VERSION = 3  #: HELLO with a protocol version the gateway does not speak
    NO_SESSION = 4  #: a message other than HELLO before the session was opened
    DUPLICATE_SENDER = 5  #: another live sender already has this name
    INVALID_NAME = 6  #: empty, too long, not UTF-8, or reserved name
    DUPLICATE_REF = 7  #: sender_ref / event_ref / listener_id already in use on this link
    UNKNOWN_REF = 8  #: TRIGGER/UNREGISTER/UNLISTEN names an id this link never registered
    NO_SUCH_SENDER = 9  #: request or trigger for a sender that is not connected
    NO_SUCH_METHOD = 10  #: the sender has no handler for the method and no default
    HANDLER_ERROR = 11  #: the request handler raised
    TIMEOUT = 12  #: no response within the request timeout
    SENDER_GONE = 13  #: the handler's peer went away before answering
    NOT_AUTHORISED = 14  #: credentials refused, or a peer acted for a sender it does not own
    TOO_LARGE = 15  #: the message exceeds the receiver's max_body
    UNSUPPORTED_FEATURE = 16  #: a header flag or feature bit that was not negotiated
    BUSY = 17  #: too many requests pending on this link
    UNKNOWN_EVENT = 18  #: trigger of an event the sender did not declare
    LIMIT_REACHED = 19  #: a per-link limit (senders, listeners, events per sender) is reached


class SigError(Exception):
    """Base class of every error raised by sig."""


# --- protocol -------------------------------------------------------------


class ProtocolError(SigError):
    """The bytes or messages exchanged break PROTOCOL.md."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot express."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class SignatureError(RemoteProtocolError):
    """A frame on a signed link failed verification (PROTOCOL.md section 5).

    ``reason`` is the counter it is counted in: ``unsigned`` (no AUTH flag),
    ``auth_failed`` (bad tag, too short, or no session to check it against)
    or ``replayed`` (a good tag with a counter already seen).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, ErrorCode.NOT_AUTHORISED)
        self.reason = reason


class EncodeError(SigError, TypeError):
    """A value cannot be carried as event data (not representable in CBOR)."""


class DecodeError(SigError, ValueError):
    """Event data received from the wire is not a valid CBOR item."""


# --- routing --------------------------------------------------------------


class RoutingError(SigError):
    """A routing rule was broken by the caller (names, registrations)."""


class DuplicateSenderError(RoutingError):
    """Two live senders may not share a name."""


class InvalidNameError(RoutingError, ValueError):
    """A sender, event or method name is empty, too long or reserved."""


class UnknownEventError(RoutingError):
    """A sender triggered an event it did not declare."""


class NotConnectedError(SigError):
    """The operation needs a connection to the gateway and there is none."""


# --- carriers -------------------------------------------------------------


class CarrierError(SigError):
    """A byte transport failed."""


class ConnectError(CarrierError):
    """Could not open the connection or port."""


class ReadError(CarrierError):
    """Reading from the transport failed."""


class WriteError(CarrierError):
    """Writing to the transport failed."""


# --- requests -------------------------------------------------------------


class RequestError(SigError):
    """A request ended without a result. ``code`` is the wire error code."""

    code: ErrorCode = ErrorCode.HANDLER_ERROR

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)


class NoSuchSender(RequestError):
    """No connected sender has that name."""

    code = ErrorCode.NO_SUCH_SENDER


class NoSuchMethod(RequestError):
    """The sender has no handler for that method and no default handler."""

    code = ErrorCode.NO_SUCH_METHOD


class HandlerError(RequestError):
    """The request handler raised an exception."""

    code = ErrorCode.HANDLER_ERROR


class RequestTimeout(RequestError):
    """No response arrived within the request timeout."""

    code = ErrorCode.TIMEOUT


class SenderGone(RequestError):
    """The sender went away before it answered."""

    code = ErrorCode.SENDER_GONE


class NotAuthorised(RequestError):
    """The peer is not allowed to do this."""

    code = ErrorCode.NOT_AUTHORISED


class UsersFileError(SigError):
    """A users file (``sig serve --users``) that cannot be used: unreadable or a bad line."""


class RequestTooLarge(RequestError):
    """The request or its result is larger than the receiving link accepts."""

    code = ErrorCode.TOO_LARGE


class ConnectionLost(RequestError, NotConnectedError):
    """The connection to the gateway was lost before the response arrived.

    The handler may or may not have run; like SenderGone, the outcome is unknown.
    """

    code = ErrorCode.SENDER_GONE


class GatewayBusy(RequestError):
    """Too many requests are pending on the handler's link, or from this requester."""

    code = ErrorCode.BUSY


class LimitReached(RequestError, RoutingError):
    """A per-link limit of the gateway is reached (senders, listeners, events per sender)."""

    code = ErrorCode.LIMIT_REACHED


_REQUEST_ERRORS: dict[int, type[RequestError]] = {
    cls.code: cls
    for cls in (
        NoSuchSender,
        NoSuchMethod,
        HandlerError,
        RequestTimeout,
        SenderGone,
        NotAuthorised,
        RequestTooLarge,
        GatewayBusy,
        LimitReached,
    )
}


def request_error_for(code: int, message: str) -> RequestError:
    """Return the exception that a RESPONSE with error ``code`` stands for."""
    cls = _REQUEST_ERRORS.get(code)
    if cls is None:
        err = RequestError(f"{message} (error code {code})")
        return err
    return cls(message)
