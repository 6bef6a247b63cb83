"""Message layer: message objects <-> frame bodies (sans-I/O).

A body is one header byte (message type in bits 0-5, flags in bits 6-7), then
the fields of that type: unsigned LEB128 varints, length-prefixed UTF-8 names,
and, last, the event/request data as the raw bytes of one CBOR item (no bytes
meaning None). Data stays bytes here: the gateway forwards it untouched, and
only the API layer turns it into Python values (:mod:`sig.protocol.data`).

PROTOCOL.md specifies every byte; ``tests/vectors.json`` holds the test vectors
shared with the C library.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from sig.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

#: Protocol version carried in HELLO and WELCOME.
PROTOCOL_VERSION = 1
#: Bits 0-5 of the header byte: the message type.
TYPE_MASK = 0x3F
#: Header flag: an authentication tag ends the body (reserved, needs FEATURE_AUTH).
FLAG_AUTH = 0x40
#: Header flag: a sequence number follows the header byte (reserved, needs FEATURE_RELIABLE).
FLAG_SEQ = 0x80
#: Longest name (sender, event, method, peer) in UTF-8 bytes.
MAX_NAME = 255
#: Largest value a varint may carry (5 bytes of LEB128 at most).
MAX_VARINT = 0xFFFFFFFF


class MessageType(IntEnum):
    """Message types; mirrors ``sig_msg_type_t`` in firmware_bridge."""

    HELLO = 0x01  #: peer -> gateway: open a session
    WELCOME = 0x02  #: gateway -> peer: session open, agreed parameters
    PING = 0x03  #: either way: keepalive probe
    PONG = 0x04  #: answer to PING, same token
    INVITE = 0x05  #: gateway -> peer: (re)send HELLO and all registrations
    ERROR = 0x06  #: either way: something about a previous message was wrong
    ACK = 0x07  #: reserved for the reliable mode (FEATURE_RELIABLE)
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


class Feature(IntFlag):
    """Feature bits negotiated in HELLO/WELCOME; none is required in version 1."""

    NONE = 0
    RELIABLE = 0x01  #: reserved: sequence numbers and ACK on lossy links
    AUTH = 0x02  #: reserved: authentication tag on frames from devices


# --- message classes ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    name: str
    max_body: int
    keepalive_ms: int
    version: int = PROTOCOL_VERSION
    features: int = 0
    credentials: bytes = b""


@dataclass(frozen=True, slots=True)
class Welcome:
    name: str
    max_body: int
    keepalive_ms: int
    version: int = PROTOCOL_VERSION
    features: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    token: int = 0


@dataclass(frozen=True, slots=True)
class Pong:
    token: int = 0


@dataclass(frozen=True, slots=True)
class Invite:
    pass


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    ref: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class RegisterSender:
    sender_ref: int
    name: str
    events: tuple[tuple[int, str], ...]  #: (event_ref, event name)
    methods: tuple[str, ...] = ()
    default_handler: bool = False


@dataclass(frozen=True, slots=True)
class SenderRegistered:
    sender_ref: int


@dataclass(frozen=True, slots=True)
class UnregisterSender:
    sender_ref: int


@dataclass(frozen=True, slots=True)
class Listen:
    listener_id: int
    sender: str | None
    event: str | None


@dataclass(frozen=True, slots=True)
class Listening:
    listener_id: int


@dataclass(frozen=True, slots=True)
class Unlisten:
    listener_id: int


@dataclass(frozen=True, slots=True)
class Trigger:
    event_ref: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Event:
    sender: str
    event: str
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Request:
    request_id: int
    sender: str
    method: str
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    request_id: int
    status: int = 0  #: ErrorCode.OK, or the error code
    message: str = ""  #: error text; empty when status is OK
    data: bytes = b""  #: the result when status is OK


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
)


# --- primitive writers ----------------------------------------------------


def write_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as unsigned LEB128."""
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


# --- encoder --------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Return the frame body of ``msg``. Raises LocalProtocolError on bad fields."""
    out = bytearray()
    if isinstance(msg, Trigger):
        out.append(MessageType.TRIGGER)
        write_varint(out, msg.event_ref)
        out += msg.data
    elif isinstance(msg, Event):
        out.append(MessageType.EVENT)
        _write_name(out, msg.sender)
        _write_name(out, msg.event)
        out += msg.data
    elif isinstance(msg, Request):
        out.append(MessageType.REQUEST)
        write_varint(out, msg.request_id)
        _write_name(out, msg.sender)
        _write_name(out, msg.method)
        out += msg.data
    elif isinstance(msg, Response):
        out.append(MessageType.RESPONSE)
        write_varint(out, msg.request_id)
        write_varint(out, msg.status)
        _write_text(out, msg.message)
        out += msg.data
    elif isinstance(msg, Hello):
        out.append(MessageType.HELLO)
        write_varint(out, msg.version)
        _write_name(out, msg.name)
        write_varint(out, msg.max_body)
        write_varint(out, msg.keepalive_ms)
        write_varint(out, msg.features)
        _write_bytes(out, msg.credentials)
    elif isinstance(msg, Welcome):
        out.append(MessageType.WELCOME)
        write_varint(out, msg.version)
        _write_name(out, msg.name)
        write_varint(out, msg.max_body)
        write_varint(out, msg.keepalive_ms)
        write_varint(out, msg.features)
    elif isinstance(msg, Ping):
        out.append(MessageType.PING)
        write_varint(out, msg.token)
    elif isinstance(msg, Pong):
        out.append(MessageType.PONG)
        write_varint(out, msg.token)
    elif isinstance(msg, Invite):
        out.append(MessageType.INVITE)
    elif isinstance(msg, Error):
        out.append(MessageType.ERROR)
        write_varint(out, msg.code)
        write_varint(out, msg.ref)
        _write_text(out, msg.message)
    elif isinstance(msg, Ack):
        out.append(MessageType.ACK)
        write_varint(out, msg.seq)
    elif isinstance(msg, RegisterSender):
        out.append(MessageType.REGISTER_SENDER)
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
    elif isinstance(msg, SenderRegistered):
        out.append(MessageType.SENDER_REGISTERED)
        write_varint(out, msg.sender_ref)
    elif isinstance(msg, UnregisterSender):
        out.append(MessageType.UNREGISTER_SENDER)
        write_varint(out, msg.sender_ref)
    elif isinstance(msg, Listen):
        out.append(MessageType.LISTEN)
        write_varint(out, msg.listener_id)
        _write_optional_name(out, msg.sender)
        _write_optional_name(out, msg.event)
    elif isinstance(msg, Listening):
        out.append(MessageType.LISTENING)
        write_varint(out, msg.listener_id)
    elif isinstance(msg, Unlisten):
        out.append(MessageType.UNLISTEN)
        write_varint(out, msg.listener_id)
    else:  # pragma: no cover - the union is closed
        raise LocalProtocolError(f"not a message: {msg!r}")
    return bytes(out)


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
                self.pos = pos + i + 1
                return result
            shift += 7
        raise RemoteProtocolError("varint longer than 5 bytes or above 2**32-1")

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
    header = body[0]
    if header & (FLAG_AUTH | FLAG_SEQ):
        raise RemoteProtocolError(
            f"header flags 0x{header & 0xC0:02x} not negotiated", ErrorCode.UNSUPPORTED_FEATURE
        )
    try:
        kind = MessageType(header)
    except ValueError:
        raise RemoteProtocolError(
            f"unknown message type 0x{header:02x}", ErrorCode.UNKNOWN_TYPE
        ) from None
    r = _Reader(body, 1)
    msg: Message
    if kind is MessageType.TRIGGER:
        return Trigger(r.varint(), r.rest())
    if kind is MessageType.EVENT:
        return Event(r.name(), r.name(), r.rest())
    if kind is MessageType.REQUEST:
        return Request(r.varint(), r.name(), r.name(), r.rest())
    if kind is MessageType.RESPONSE:
        return Response(r.varint(), r.varint(), r.text(), r.rest())
    if kind is MessageType.HELLO:
        version = _version(r)
        msg = Hello(
            version=version,
            name=r.name(),
            max_body=r.varint(),
            keepalive_ms=r.varint(),
            features=r.varint(),
            credentials=r.raw(r.varint()),
        )
    elif kind is MessageType.WELCOME:
        version = _version(r)
        msg = Welcome(
            version=version,
            name=r.name(),
            max_body=r.varint(),
            keepalive_ms=r.varint(),
            features=r.varint(),
        )
    elif kind is MessageType.PING:
        msg = Ping(r.varint())
    elif kind is MessageType.PONG:
        msg = Pong(r.varint())
    elif kind is MessageType.INVITE:
        msg = Invite()
    elif kind is MessageType.ERROR:
        msg = Error(r.varint(), r.varint(), r.text())
    elif kind is MessageType.ACK:
        msg = Ack(r.varint())
    elif kind is MessageType.REGISTER_SENDER:
        sender_ref = r.varint()
        name = r.name()
        flags = r.byte()
        if flags & ~0x01:
            raise RemoteProtocolError(f"unknown REGISTER_SENDER flags 0x{flags:02x}")
        events = tuple((r.varint(), r.name()) for _ in range(_count(r)))
        methods = tuple(r.name() for _ in range(_count(r)))
        msg = RegisterSender(sender_ref, name, events, methods, bool(flags & 0x01))
    elif kind is MessageType.SENDER_REGISTERED:
        msg = SenderRegistered(r.varint())
    elif kind is MessageType.UNREGISTER_SENDER:
        msg = UnregisterSender(r.varint())
    elif kind is MessageType.LISTEN:
        msg = Listen(r.varint(), r.optional_name(), r.optional_name())
    elif kind is MessageType.LISTENING:
        msg = Listening(r.varint())
    else:  # UNLISTEN: the enum is exhausted
        msg = Unlisten(r.varint())
    r.end()
    return msg


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
