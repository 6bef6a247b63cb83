"""Message layer: message objects <-> frame bodies (sans-I/O).

A body is one header byte (message type in bits 0-5, flags in bits 6-7), then
the fields of that type: unsigned LEB128 varints, length-prefixed UTF-8 names,
and, last, the event/request data as the raw bytes of one CBOR item (no bytes
meaning None). Data stays bytes here: the gateway forwards it untouched, and
only the API layer turns it into Python values (:mod:`sig.protocol.data`).

Each message type has one writer and one reader, picked by a table keyed by
:class:`MessageType` (every message class names its type in ``TYPE``). The
fast paths (:func:`split_event`, :func:`split_trigger`, :func:`trigger_prefix`,
:func:`event_head`) handle the hot EVENT and TRIGGER bodies without a message
object; they live here so that they cannot drift from the full codec.

PROTOCOL.md specifies every byte; ``tests/vectors.json`` holds the test vectors
shared with the C library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, ClassVar

from sig.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

# The constants live in sig.protocol.constants; these names stay importable from here.
from sig.protocol.constants import FLAG_AUTH as FLAG_AUTH
from sig.protocol.constants import FLAG_SEQ as FLAG_SEQ
from sig.protocol.constants import LISTEN_OPTIONS_MASK, POLICY_MASK, RETAINED_STALE
from sig.protocol.constants import MAX_NAME as MAX_NAME
from sig.protocol.constants import MAX_VARINT as MAX_VARINT
from sig.protocol.constants import PROTOCOL_VERSION as PROTOCOL_VERSION
from sig.protocol.constants import TYPE_MASK as TYPE_MASK


class MessageType(IntEnum):
    """Message types; mirrors ``sig_msg_type_t`` in firmware_bridge."""

    HELLO = 0x01  #: peer -> gateway: open a session
    WELCOME = 0x02  #: gateway -> peer: session open, agreed parameters
    PING = 0x03  #: either way: keepalive probe
    PONG = 0x04  #: answer to PING, same token
    INVITE = 0x05  #: gateway -> peer: (re)send HELLO and all registrations
    ERROR = 0x06  #: either way: something about a previous message was wrong
    ACK = 0x07  #: either way, reliable mode: cumulative acknowledgement of sequenced frames
    REGISTER_SENDER = 0x10  #: peer -> gateway: declare a sender, its events and methods
    SENDER_REGISTERED = 0x11  #: gateway -> peer: the sender is live
    UNREGISTER_SENDER = 0x12  #: peer -> gateway: the sender goes away
    LISTEN = 0x13  #: peer -> gateway: register a listener (sender, event)
    LISTENING = 0x14  #: gateway -> peer: the listener is live
    UNLISTEN = 0x15  #: peer -> gateway: remove a listener
    TRIGGER = 0x20  #: peer -> gateway: a registered event happened
    EVENT = 0x21  #: gateway -> peer: delivery of an event to a listening peer
    REQUEST = 0x22  #: either way: call a method of a sender
    RESPONSE = 0x23  #: either way: outcome of a REQUEST
    RETAINED = 0x24  #: gateway -> peer: a retained last value, sent to a new listener


class Feature(IntFlag):
    """Feature bits negotiated in HELLO/WELCOME; none is required in version 1."""

    NONE = 0
    RELIABLE = 0x01  #: sequence numbers, ACK, retransmission on serial (sig.protocol.reliable)
    AUTH = 0x02  #: signed frames on a keyed serial port (sig.protocol.signing)


# --- message classes ------------------------------------------------------
# One per MessageType; ``TYPE`` is the header byte encode() writes for it.


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[MessageType] = MessageType.HELLO

    name: str
    max_body: int
    keepalive_ms: int
    version: int = PROTOCOL_VERSION
    features: int = 0
    credentials: bytes = b""


@dataclass(frozen=True, slots=True)
class Welcome:
    TYPE: ClassVar[MessageType] = MessageType.WELCOME

    name: str
    max_body: int
    keepalive_ms: int
    version: int = PROTOCOL_VERSION
    features: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[MessageType] = MessageType.PING

    token: int = 0


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[MessageType] = MessageType.PONG

    token: int = 0


@dataclass(frozen=True, slots=True)
class Invite:
    TYPE: ClassVar[MessageType] = MessageType.INVITE


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[MessageType] = MessageType.ERROR

    code: int
    #: The id of the failed message, by its type ``about`` (PROTOCOL.md section 2, "Errors").
    ref: int = 0
    message: str = ""
    #: The type (header bits 0-5) of the message this ERROR answers; 0 when none.
    about: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[MessageType] = MessageType.ACK

    seq: int


@dataclass(frozen=True, slots=True)
class RegisterSender:
    TYPE: ClassVar[MessageType] = MessageType.REGISTER_SENDER

    sender_ref: int
    name: str
    events: tuple[tuple[int, str], ...]  #: (event_ref, event name)
    methods: tuple[str, ...] = ()
    default_handler: bool = False
    #: One CBOR map describing the sender (retained events, units, ...), or b"" for none.
    meta: bytes = b""


@dataclass(frozen=True, slots=True)
class SenderRegistered:
    TYPE: ClassVar[MessageType] = MessageType.SENDER_REGISTERED

    sender_ref: int


@dataclass(frozen=True, slots=True)
class UnregisterSender:
    TYPE: ClassVar[MessageType] = MessageType.UNREGISTER_SENDER

    sender_ref: int


@dataclass(frozen=True, slots=True)
class Listen:
    TYPE: ClassVar[MessageType] = MessageType.LISTEN

    listener_id: int
    sender: str | None
    event: str | None
    #: Delivery policy (bits 0-1, POLICY_*) and LISTEN_NO_LOCAL; 0 is written as nothing.
    options: int = 0


@dataclass(frozen=True, slots=True)
class Listening:
    TYPE: ClassVar[MessageType] = MessageType.LISTENING

    listener_id: int


@dataclass(frozen=True, slots=True)
class Unlisten:
    TYPE: ClassVar[MessageType] = MessageType.UNLISTEN

    listener_id: int


@dataclass(frozen=True, slots=True)
class Trigger:
    TYPE: ClassVar[MessageType] = MessageType.TRIGGER

    event_ref: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Event:
    TYPE: ClassVar[MessageType] = MessageType.EVENT

    sender: str
    event: str
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Request:
    TYPE: ClassVar[MessageType] = MessageType.REQUEST

    request_id: int
    sender: str
    method: str
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    TYPE: ClassVar[MessageType] = MessageType.RESPONSE

    request_id: int
    status: int = 0  #: ErrorCode.OK, or the error code
    message: str = ""  #: error text; empty when status is OK
    data: bytes = b""  #: the result when status is OK


@dataclass(frozen=True, slots=True)
class Retained:
    """A sender's retained last value, sent at once to a listener that registers.

    Like EVENT, plus ``stale``: the sender is not connected now (the value is
    what it last sent before its ``#disconnect``).
    """

    TYPE: ClassVar[MessageType] = MessageType.RETAINED

    sender: str
    event: str
    data: bytes = b""
    stale: bool = False


Message = (
    Hello
    | Welcome
    | Ping
    | Pong
    | Invite
    | Error
    | Ack
    | RegisterSender
    | SenderRegistered
    | UnregisterSender
    | Listen
    | Listening
    | Unlisten
    | Trigger
    | Event
    | Request
    | Response
    | Retained
)


# --- primitive writers ----------------------------------------------------


def write_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as unsigned LEB128."""
    if 0 <= value < 0x80:  # one byte: most ids, counts and every short name's length
        out.append(value)
        return
    if not 0 <= value <= MAX_VARINT:
        raise LocalProtocolError(f"varint out of range: {value!r}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _write_name(out: bytearray, name: str) -> None:
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME:
        raise LocalProtocolError(f"name must be 1..{MAX_NAME} UTF-8 bytes: {name!r}")
    write_varint(out, len(raw))
    out += raw


def _write_optional_name(out: bytearray, name: str | None) -> None:
    if name is None:
        out.append(0)
    else:
        _write_name(out, name)


def _write_text(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    write_varint(out, len(raw))
    out += raw


def _write_bytes(out: bytearray, raw: bytes) -> None:
    write_varint(out, len(raw))
    out += raw


# --- encoder: one writer per message type, picked by MessageType ------------

_WriteFn = Callable[[bytearray, Any], None]


def encode(msg: Message) -> bytes:
    """Return the frame body of ``msg``. Raises LocalProtocolError on bad fields."""
    try:
        kind = msg.TYPE
        write = _WRITERS[kind]
    except (AttributeError, KeyError):
        raise LocalProtocolError(f"not a message: {msg!r}") from None
    out = bytearray((kind,))
    write(out, msg)
    return bytes(out)


def _write_hello(out: bytearray, msg: Hello) -> None:
    write_varint(out, msg.version)
    _write_name(out, msg.name)
    write_varint(out, msg.max_body)
    write_varint(out, msg.keepalive_ms)
    write_varint(out, msg.features)
    _write_bytes(out, msg.credentials)


def _write_welcome(out: bytearray, msg: Welcome) -> None:
    write_varint(out, msg.version)
    _write_name(out, msg.name)
    write_varint(out, msg.max_body)
    write_varint(out, msg.keepalive_ms)
    write_varint(out, msg.features)


def _write_token(out: bytearray, msg: Ping | Pong) -> None:
    write_varint(out, msg.token)


def _write_nothing(out: bytearray, msg: Invite) -> None:
    """INVITE is its type byte alone."""


def _write_error(out: bytearray, msg: Error) -> None:
    write_varint(out, msg.code)
    write_varint(out, msg.about)
    write_varint(out, msg.ref)
    _write_text(out, msg.message)


def _write_ack(out: bytearray, msg: Ack) -> None:
    write_varint(out, msg.seq)


def _write_register(out: bytearray, msg: RegisterSender) -> None:
    write_varint(out, msg.sender_ref)
    _write_name(out, msg.name)
    out.append(1 if msg.default_handler else 0)
    write_varint(out, len(msg.events))
    for ref, name in msg.events:
        write_varint(out, ref)
        _write_name(out, name)
    write_varint(out, len(msg.methods))
    for method in msg.methods:
        _write_name(out, method)
    out += msg.meta


def _write_sender_ref(out: bytearray, msg: SenderRegistered | UnregisterSender) -> None:
    write_varint(out, msg.sender_ref)


def _write_listen(out: bytearray, msg: Listen) -> None:
    write_varint(out, msg.listener_id)
    _write_optional_name(out, msg.sender)
    _write_optional_name(out, msg.event)
    if msg.options:
        write_varint(out, msg.options)


def _write_listener_id(out: bytearray, msg: Listening | Unlisten) -> None:
    write_varint(out, msg.listener_id)


def _write_trigger(out: bytearray, msg: Trigger) -> None:
    write_varint(out, msg.event_ref)
    out += msg.data


def _write_event(out: bytearray, msg: Event) -> None:
    _write_name(out, msg.sender)
    _write_name(out, msg.event)
    out += msg.data


def _write_request(out: bytearray, msg: Request) -> None:
    write_varint(out, msg.request_id)
    _write_name(out, msg.sender)
    _write_name(out, msg.method)
    out += msg.data


def _write_response(out: bytearray, msg: Response) -> None:
    write_varint(out, msg.request_id)
    write_varint(out, msg.status)
    _write_text(out, msg.message)
    out += msg.data


def _write_retained(out: bytearray, msg: Retained) -> None:
    _write_name(out, msg.sender)
    _write_name(out, msg.event)
    out.append(RETAINED_STALE if msg.stale else 0)
    out += msg.data


#: MessageType -> the writer of that type's fields (after the header byte).
_WRITERS: dict[MessageType, _WriteFn] = {
    MessageType.HELLO: _write_hello,
    MessageType.WELCOME: _write_welcome,
    MessageType.PING: _write_token,
    MessageType.PONG: _write_token,
    MessageType.INVITE: _write_nothing,
    MessageType.ERROR: _write_error,
    MessageType.ACK: _write_ack,
    MessageType.REGISTER_SENDER: _write_register,
    MessageType.SENDER_REGISTERED: _write_sender_ref,
    MessageType.UNREGISTER_SENDER: _write_sender_ref,
    MessageType.LISTEN: _write_listen,
    MessageType.LISTENING: _write_listener_id,
    MessageType.UNLISTEN: _write_listener_id,
    MessageType.TRIGGER: _write_trigger,
    MessageType.EVENT: _write_event,
    MessageType.REQUEST: _write_request,
    MessageType.RESPONSE: _write_response,
    MessageType.RETAINED: _write_retained,
}


# --- fast paths: the hot messages without a message object ------------------

_TRIGGER = int(MessageType.TRIGGER)
_EVENT = int(MessageType.EVENT)


def trigger_prefix(event_ref: int) -> bytes:
    """TRIGGER type byte + ``event_ref`` varint: append a CBOR item to get the body.

    A sender computes it once per event, so a trigger costs one concatenation.
    Raises LocalProtocolError when ``event_ref`` is not a varint.
    """
    out = bytearray((_TRIGGER,))
    write_varint(out, event_ref)
    return bytes(out)


def event_head(sender: str, event: str) -> bytes:
    """The EVENT body up to its data: ``event_head(s, e) + data == encode(Event(s, e, data))``.

    The gateway caches it per (sender, event) pair, so routing an event does
    not encode names. Raises LocalProtocolError on a bad name.
    """
    out = bytearray((_EVENT,))
    _write_name(out, sender)
    _write_name(out, event)
    return bytes(out)


def split_trigger(body: bytes) -> tuple[int, bytes] | None:
    """(event_ref, data) of a TRIGGER body whose event_ref is below 128, else None.

    The common case of :func:`decode` for TRIGGER without a message object;
    anything else (a longer ref, a short body, another type) returns None so
    that :func:`decode` handles and reports it.
    """
    if len(body) < 2 or body[0] != _TRIGGER:
        return None
    ref = body[1]
    if not 0 < ref < 0x80:  # 0 is MALFORMED: decode() reports it
        return None
    return ref, body[2:]


def split_event(body: bytes) -> tuple[str, str, bytes] | None:
    """(sender, event, data) of an EVENT body whose names are 1..127 bytes, else None.

    The common case of :func:`decode` for EVENT without a message object;
    anything unusual (longer names, a short or bad body, another type) returns
    None so that :func:`decode` handles and reports it.
    """
    size = len(body)
    if size < 2 or body[0] != _EVENT:
        return None
    n = body[1]
    if not 0 < n < 0x80 or 2 + n >= size:
        return None
    m = body[2 + n]
    end = 3 + n + m
    if not 0 < m < 0x80 or end > size:
        return None
    try:
        return body[2 : 2 + n].decode(), body[3 + n : end].decode(), body[end:]
    except UnicodeDecodeError:
        return None


_REQUEST = int(MessageType.REQUEST)
_RESPONSE = int(MessageType.RESPONSE)


def _quick_id(body: bytes) -> tuple[int, int]:
    """The request_id after the header byte, if it is a shortest-form varint of 1-3
    bytes: (id, position after it); else (0, len(body)), which the callers refuse."""
    size, pos, rid, shift = len(body), 1, 0, 0
    while pos < 4 and pos < size:
        byte = body[pos]
        rid |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            if byte == 0 and pos > 2:  # padded (``81 00``): the cursor reports it
                break
            return rid, pos
        shift += 7
    return 0, size


def _quick_request(body: bytes) -> Request | None:
    """:func:`decode` of a REQUEST whose id is below 2**21 and names 1..127 bytes, else None.

    Each request crosses the codec four times (requester, gateway twice,
    handler): this is :func:`_read_request` without the :class:`_Reader`
    calls. Anything unusual returns None, and the cursor decodes and reports it.
    """
    size = len(body)
    rid, pos = _quick_id(body)
    if pos >= size:
        return None
    n = body[pos]
    end = pos + 1 + n
    if not 0 < n < 0x80 or end >= size:
        return None
    m = body[end]
    stop = end + 1 + m
    if not 0 < m < 0x80 or stop > size:
        return None
    try:
        sender, method = body[pos + 1 : end].decode(), body[end + 1 : stop].decode()
    except UnicodeDecodeError:
        return None
    return Request(rid, sender, method, body[stop:])


def _quick_response(body: bytes) -> Response | None:
    """:func:`decode` of a RESPONSE with an id below 2**21, status and text length below 128."""
    size = len(body)
    rid, pos = _quick_id(body)
    if pos + 1 >= size:
        return None
    status, n = body[pos], body[pos + 1]
    end = pos + 2 + n
    if status >= 0x80 or n >= 0x80 or end > size:
        return None
    if not n:
        return Response(rid, status, "", body[end:])
    try:
        return Response(rid, status, body[pos + 2 : end].decode(), body[end:])
    except UnicodeDecodeError:
        return None


_QUICK: dict[int, Callable[[bytes], Message | None]] = {
    _REQUEST: _quick_request,
    _RESPONSE: _quick_response,
}


# --- decoder --------------------------------------------------------------


class _Reader:
    """Cursor over one body; every read checks bounds and raises RemoteProtocolError."""

    __slots__ = ("body", "pos")

    def __init__(self, body: bytes, pos: int) -> None:
        self.body = body
        self.pos = pos

    def varint(self) -> int:
        body, pos = self.body, self.pos
        result = 0
        shift = 0
        for i in range(5):
            if pos + i >= len(body):
                raise RemoteProtocolError("varint runs past the end of the body")
            byte = body[pos + i]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                if result > MAX_VARINT:
                    break
                if byte == 0 and i:  # `80 00`: padded, not the one shortest form
                    raise RemoteProtocolError("varint is not in its shortest form")
                self.pos = pos + i + 1
                return result
            shift += 7
        raise RemoteProtocolError("varint longer than 5 bytes or above 2**32-1")

    def ref(self) -> int:
        """A sender_ref, event_ref or listener_id: a varint of at least 1."""
        value = self.varint()
        if not value:
            raise RemoteProtocolError("id 0: sender, event and listener ids are at least 1")
        return value

    def raw(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.body):
            raise RemoteProtocolError("field runs past the end of the body")
        chunk = self.body[self.pos : end]
        self.pos = end
        return chunk

    def text(self) -> str:
        try:
            return self.raw(self.varint()).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("text is not valid UTF-8") from None

    def name(self) -> str:
        name = self.optional_name()
        if name is None:
            raise RemoteProtocolError("empty name", ErrorCode.INVALID_NAME)
        return name

    def optional_name(self) -> str | None:
        n = self.varint()
        if n == 0:
            return None
        if n > MAX_NAME:
            raise RemoteProtocolError(f"name longer than {MAX_NAME} bytes", ErrorCode.INVALID_NAME)
        try:
            return self.raw(n).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("name is not valid UTF-8", ErrorCode.INVALID_NAME) from None

    def byte(self) -> int:
        if self.pos >= len(self.body):
            raise RemoteProtocolError("body ends early")
        value = self.body[self.pos]
        self.pos += 1
        return value

    def rest(self) -> bytes:
        chunk = self.body[self.pos :]
        self.pos = len(self.body)
        return chunk

    def end(self) -> None:
        if self.pos != len(self.body):
            raise RemoteProtocolError(f"{len(self.body) - self.pos} unexpected bytes after fields")


def decode(body: bytes) -> Message:
    """Parse one frame body. Raises RemoteProtocolError with the wire error code."""
    if not body:
        raise RemoteProtocolError("empty body")
    if body[0] in _QUICK:  # a request's hops: without the cursor when the body is plain
        msg = _QUICK[body[0]](body)
        if msg is not None:
            return msg
    read = _READERS.get(body[0])
    if read is None:
        raise _bad_header(body[0])
    r = _Reader(body, 1)
    msg = read(r)
    r.end()
    return msg


#: Types whose first field is the id that an answer to a bad body of theirs carries.
_ID_FIRST = frozenset(
    {
        MessageType.REGISTER_SENDER,
        MessageType.UNREGISTER_SENDER,
        MessageType.LISTEN,
        MessageType.UNLISTEN,
        MessageType.TRIGGER,
        MessageType.SENDER_REGISTERED,
        MessageType.LISTENING,
        MessageType.REQUEST,
        MessageType.RESPONSE,
    }
)


def error_answer(body: bytes, exc: RemoteProtocolError) -> Error | Response | None:
    """What a receiver sends back for a body :func:`decode` refused (PROTOCOL.md section 2).

    None for an ERROR (never answered, even a bad one: that could loop); a
    RESPONSE(request_id, code) for a REQUEST whose request_id parses, so that
    the requester can match it; otherwise ERROR(code, about = its type, ref),
    with ref the type byte (UNKNOWN_TYPE), the version this side speaks
    (UNSUPPORTED_VERSION), the body's leading id when it parses, else 0.
    """
    about = body[0] & TYPE_MASK if body else 0
    if about == MessageType.ERROR:
        return None
    text = str(exc)
    if exc.code is ErrorCode.UNKNOWN_TYPE:
        return Error(exc.code, body[0], text, about)
    if exc.code is ErrorCode.UNSUPPORTED_VERSION:
        return Error(exc.code, PROTOCOL_VERSION, text, about)
    ref = 0
    if about in _ID_FIRST and not body[0] & (FLAG_AUTH | FLAG_SEQ):
        try:
            ref = _Reader(body, 1).varint()
        except RemoteProtocolError:
            ref = -1  # not even the id parses
    if about == MessageType.REQUEST and ref >= 0:
        return Response(ref, exc.code, text)
    return Error(exc.code, max(ref, 0), text, about)


def _bad_header(header: int) -> RemoteProtocolError:
    """The error for a header byte no reader takes: flags set, or an unknown type."""
    if header & (FLAG_AUTH | FLAG_SEQ):
        return RemoteProtocolError(
            f"header flags 0x{header & 0xC0:02x} not negotiated", ErrorCode.UNSUPPORTED_FEATURE
        )
    return RemoteProtocolError(f"unknown message type 0x{header:02x}", ErrorCode.UNKNOWN_TYPE)


#: The smallest ``max_body`` a HELLO or WELCOME may announce (PROTOCOL.md section 3).
MIN_MAX_BODY = 8


def _max_body(r: _Reader) -> int:
    value = r.varint()
    if value < MIN_MAX_BODY:
        raise RemoteProtocolError(f"max_body {value} is below the minimum of {MIN_MAX_BODY}")
    return value


_ReadFn = Callable[[_Reader], Message]


def _read_hello(r: _Reader) -> Hello:
    version = _version(r)
    return Hello(
        version=version,
        name=r.name(),
        max_body=_max_body(r),
        keepalive_ms=r.varint(),
        features=r.varint(),
        credentials=r.raw(r.varint()),
    )


def _read_welcome(r: _Reader) -> Welcome:
    version = _version(r)
    return Welcome(
        version=version,
        name=r.name(),
        max_body=_max_body(r),
        keepalive_ms=r.varint(),
        features=r.varint(),
    )


def _read_register(r: _Reader) -> RegisterSender:
    sender_ref = r.ref()
    name = r.name()
    flags = r.byte()
    if flags & ~0x01:
        raise RemoteProtocolError(f"unknown REGISTER_SENDER flags 0x{flags:02x}")
    events = tuple((r.ref(), r.name()) for _ in range(_count(r)))
    methods = tuple(r.name() for _ in range(_count(r)))
    return RegisterSender(sender_ref, name, events, methods, bool(flags & 0x01), r.rest())


def _read_listen(r: _Reader) -> Listen:
    listener_id, sender, event = r.ref(), r.optional_name(), r.optional_name()
    options = r.varint() if r.pos < len(r.body) else 0
    if options & ~LISTEN_OPTIONS_MASK or options & POLICY_MASK == POLICY_MASK:
        raise RemoteProtocolError(f"unknown LISTEN options 0x{options:x}")
    return Listen(listener_id, sender, event, options)


def _read_trigger(r: _Reader) -> Trigger:
    return Trigger(r.ref(), r.rest())


def _read_event(r: _Reader) -> Event:
    return Event(r.name(), r.name(), r.rest())


def _read_request(r: _Reader) -> Request:
    return Request(r.varint(), r.name(), r.name(), r.rest())


def _read_response(r: _Reader) -> Response:
    return Response(r.varint(), r.varint(), r.text(), r.rest())


def _read_retained(r: _Reader) -> Retained:
    sender, event, flags = r.name(), r.name(), r.byte()
    if flags & ~RETAINED_STALE:
        raise RemoteProtocolError(f"unknown RETAINED flags 0x{flags:02x}")
    return Retained(sender, event, r.rest(), bool(flags & RETAINED_STALE))


def _read_error(r: _Reader) -> Error:
    code, about = r.varint(), r.varint()
    if about > TYPE_MASK:
        raise RemoteProtocolError(f"ERROR about 0x{about:x} is not a message type")
    return Error(code, r.varint(), r.text(), about)


def _one_varint(
    cls: Callable[[int], Message], *, ref: bool = False
) -> Callable[[_Reader], Message]:
    """Reader of a message whose only field is one varint (PING, ACK, LISTENING, ...).

    ``ref``: the varint is an id (LISTENING, UNLISTEN, ...), so 0 is MALFORMED.
    """

    def read(r: _Reader) -> Message:
        return cls(r.ref() if ref else r.varint())

    return read


#: Header byte -> reader. A byte with flags set, or an unknown type, is absent.
_READERS: dict[int, _ReadFn] = {
    MessageType.HELLO: _read_hello,
    MessageType.WELCOME: _read_welcome,
    MessageType.PING: _one_varint(Ping),
    MessageType.PONG: _one_varint(Pong),
    MessageType.INVITE: lambda r: Invite(),
    MessageType.ERROR: _read_error,
    MessageType.ACK: _one_varint(Ack),
    MessageType.REGISTER_SENDER: _read_register,
    MessageType.SENDER_REGISTERED: _one_varint(SenderRegistered, ref=True),
    MessageType.UNREGISTER_SENDER: _one_varint(UnregisterSender, ref=True),
    MessageType.LISTEN: _read_listen,
    MessageType.LISTENING: _one_varint(Listening, ref=True),
    MessageType.UNLISTEN: _one_varint(Unlisten, ref=True),
    MessageType.TRIGGER: _read_trigger,
    MessageType.EVENT: _read_event,
    MessageType.REQUEST: _read_request,
    MessageType.RESPONSE: _read_response,
    MessageType.RETAINED: _read_retained,
}


def _count(r: _Reader) -> int:
    n = r.varint()
    if n > len(r.body) - r.pos:  # every element takes at least one byte
        raise RemoteProtocolError(f"count {n} exceeds the bytes left")
    return n


def _version(r: _Reader) -> int:
    version = r.varint()
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"protocol version {version} is not supported (this peer speaks {PROTOCOL_VERSION})",
            ErrorCode.UNSUPPORTED_VERSION,
        )
    return version
