"""The sig wire protocol (PROTOCOL.md): frames, messages and CBOR data. No I/O.

This module is the supported API for tools and bridges: what a program uses to
speak to a gateway without sig's client (a test rig, a bridge to another bus,
a peer in a language-agnostic harness). It never does I/O itself: you bring
the byte stream (a socket, a serial port) and it turns bytes into messages and
back. The names below are stable; the submodules' other names are not.

* Frames: :func:`encode_frame` wraps one body for the wire;
  :class:`FrameDecoder` takes bytes in any chunking and returns whole bodies
  (``feed(data) -> list[bytes]``), counting every dropped frame in ``.stats``.
* Messages: one frozen dataclass per :class:`MessageType` (:class:`Hello`,
  :class:`Trigger`, :class:`Event`, ...); :func:`encode` turns one into a body,
  :func:`decode` a body into one (raising :class:`RemoteProtocolError` with the
  wire :class:`ErrorCode`).
* Fast paths, for code that handles many events: :func:`trigger_prefix` (add
  the CBOR data to get a TRIGGER body), :func:`event_head` (the same for
  EVENT), :func:`split_event` and :func:`split_trigger` (the fields of the
  common EVENT / TRIGGER body, or None: then :func:`decode` it).
* Data: :func:`pack` / :func:`unpack` between Python values and the CBOR item
  a TRIGGER, EVENT, REQUEST or RESPONSE carries.
* Signed frames (PROTOCOL.md section 5, a serial port with a key):
  :class:`Signer` is one end of one link (``seal`` what it sends, ``unseal``
  what it receives, raising :class:`SignatureError`); :func:`parse_key`
  reads a key file's content.
* Reliable UART mode (PROTOCOL.md section 5, a serial session with
  Feature.RELIABLE): :func:`add_seq` puts the sequence header on a plain body
  (before signing), :func:`strip_seq` takes it off (after verifying) and
  returns ``(seq, plain body)``, seq 0 for a best-effort body.

A worked example, over TCP: open a session, register a sender with one event,
listen to it, trigger it and read the EVENT the gateway routes back (``port``
is a gateway's TCP port, :data:`DEFAULT_PORT` unless it was told otherwise)::

    >>> import socket
    >>> from sig import protocol as p
    >>> sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    >>> decoder, inbox = p.FrameDecoder(), []
    >>> def send(msg):
    ...     sock.sendall(p.encode_frame(p.encode(msg)))
    >>> def receive():
    ...     '''The next message from the gateway; answers its keepalive PINGs.'''
    ...     while True:
    ...         while not inbox:
    ...             data = sock.recv(4096)
    ...             if not data:
    ...                 raise ConnectionError("the gateway closed the connection")
    ...             inbox.extend(decoder.feed(data))
    ...         msg = p.decode(inbox.pop(0))
    ...         if not isinstance(msg, p.Ping):
    ...             return msg
    ...         send(p.Pong(msg.token))
    >>> send(p.Hello("thermo", max_body=4096, keepalive_ms=10000))
    >>> welcome = receive()
    >>> type(welcome).__name__, welcome.version == p.PROTOCOL_VERSION
    ('Welcome', True)
    >>> send(p.RegisterSender(1, "thermo", events=((1, "temperature"),)))
    >>> receive()
    SenderRegistered(sender_ref=1)
    >>> send(p.Listen(1, "thermo", "temperature"))
    >>> receive()
    Listening(listener_id=1)
    >>> sock.sendall(p.encode_frame(p.trigger_prefix(1) + p.pack(21.5)))
    >>> event = receive()
    >>> event.sender, event.event, p.unpack(event.data)
    ('thermo', 'temperature', 21.5)
    >>> send(p.Trigger(7))  # an event_ref this link never registered
    >>> error = receive()
    >>> p.ErrorCode(error.code).name, error.ref
    ('UNKNOWN_REF', 7)
    >>> sock.close()
"""

from sig.errors import (
    DecodeError,
    EncodeError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from sig.protocol.constants import (
    DEFAULT_MAX_BODY,
    DEFAULT_PORT,
    GATEWAY_SENDER,
    MAX_BODY_LIMIT,
    MAX_NAME,
    PROTOCOL_VERSION,
)
from sig.protocol.data import pack, unpack
from sig.protocol.frame import FrameDecoder, FrameStats, encode_frame
from sig.protocol.messages import (
    Ack,
    Error,
    Event,
    Feature,
    Hello,
    Invite,
    Listen,
    Listening,
    Message,
    MessageType,
    Ping,
    Pong,
    RegisterSender,
    Request,
    Response,
    Retained,
    SenderRegistered,
    Trigger,
    Unlisten,
    UnregisterSender,
    Welcome,
    decode,
    encode,
    event_head,
    split_event,
    split_trigger,
    trigger_prefix,
)
from sig.protocol.reliable import add_seq, strip_seq
from sig.protocol.signing import Signer, parse_key

#: The supported API (the docstring groups it); pinned by tests/unit/test_protocol_api.py.
__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "GATEWAY_SENDER",
    "MAX_BODY_LIMIT",
    "MAX_NAME",
    "PROTOCOL_VERSION",
    "Ack",
    "DecodeError",
    "EncodeError",
    "Error",
    "ErrorCode",
    "Event",
    "Feature",
    "FrameDecoder",
    "FrameStats",
    "Hello",
    "Invite",
    "Listen",
    "Listening",
    "LocalProtocolError",
    "Message",
    "MessageType",
    "Ping",
    "Pong",
    "RegisterSender",
    "RemoteProtocolError",
    "Request",
    "Response",
    "Retained",
    "SenderRegistered",
    "SignatureError",
    "Signer",
    "Trigger",
    "Unlisten",
    "UnregisterSender",
    "Welcome",
    "add_seq",
    "decode",
    "encode",
    "encode_frame",
    "event_head",
    "pack",
    "parse_key",
    "split_event",
    "split_trigger",
    "strip_seq",
    "trigger_prefix",
    "unpack",
]
