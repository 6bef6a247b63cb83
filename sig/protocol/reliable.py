"""The sequence header of the reliable UART mode (PROTOCOL.md section 5), no I/O.

In a session that negotiated Feature.RELIABLE, a sequenced body is the plain
body with the SEQ flag (0x80) set in its header byte and a ``seq`` varint
right after the header; the message's fields follow unchanged::

    header|0x80, seq varint, fields...

``seq`` counts 1, 2, 3, ... per direction per session (0 is MALFORMED). The
receiver answers every sequenced frame with a cumulative ``ACK(n)``: "I have
accepted 1..n in order" (ACK itself is never sequenced). With signing too,
the sequence header goes on first and the signature over it (the signer
treats the seq varint as part of the fields)::

    header|0xC0, counter (4), [nonce (8)], seq varint, fields..., tag (8)

:func:`add_seq` and :func:`strip_seq` are the whole wire format; the state
machine (window, ACKs, retransmission) is :mod:`sig.core.reliable`.
"""

from __future__ import annotations

from sig.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from sig.protocol.constants import FLAG_AUTH, FLAG_SEQ, MAX_VARINT, TYPE_MASK
from sig.protocol.messages import MessageType

__all__ = [
    "ALWAYS_SEQUENCED",
    "MAX_SEQ",
    "MAX_SEQ_LEN",
    "NEVER_SEQUENCED",
    "add_seq",
    "is_sequenced",
    "seq_len",
    "strip_seq",
]

#: Largest sequence number; a side whose next seq would pass it ends the session.
MAX_SEQ = MAX_VARINT
#: Most bytes the sequence header adds to a body (a 5-byte varint).
MAX_SEQ_LEN = 5

_T = MessageType
#: Types a reliable session always sends sequenced, both directions, after WELCOME.
ALWAYS_SEQUENCED = frozenset(
    {
        _T.REGISTER_SENDER,
        _T.SENDER_REGISTERED,
        _T.UNREGISTER_SENDER,
        _T.LISTEN,
        _T.LISTENING,
        _T.UNLISTEN,
        _T.REQUEST,
        _T.RESPONSE,
        _T.ERROR,
    }
)
#: Types that are never sequenced: the SEQ flag on one of them is MALFORMED.
#: (TRIGGER is sequenced when the device marks its event reliable; EVENT and
#: RETAINED stay best effort: a command that must arrive is a REQUEST.)
NEVER_SEQUENCED = frozenset(
    {_T.HELLO, _T.WELCOME, _T.PING, _T.PONG, _T.INVITE, _T.ACK, _T.EVENT, _T.RETAINED}
)


def is_sequenced(body: bytes) -> bool:
    """True when the header byte has the SEQ flag."""
    return bool(body) and bool(body[0] & FLAG_SEQ)


def seq_len(seq: int) -> int:
    """Bytes of ``seq`` as a varint (1 for 1..127)."""
    n = 1
    while seq >= 0x80:
        seq >>= 7
        n += 1
    return n


def add_seq(body: bytes, seq: int) -> bytes:
    """The sequenced body of the plain ``body`` (not signed yet): header|0x80, seq, fields."""
    if not body:
        raise LocalProtocolError("empty body")
    header = body[0]
    if header & (FLAG_SEQ | FLAG_AUTH):
        raise LocalProtocolError("add the sequence header to a plain body, before signing")
    if header & TYPE_MASK in NEVER_SEQUENCED:
        raise LocalProtocolError(f"type 0x{header & TYPE_MASK:02x} is never sequenced")
    if not 1 <= seq <= MAX_SEQ:
        raise LocalProtocolError(f"seq must be 1..{MAX_SEQ}: {seq!r}")
    out = bytearray((header | FLAG_SEQ,))
    while seq >= 0x80:
        out.append((seq & 0x7F) | 0x80)
        seq >>= 7
    out.append(seq)
    out += body[1:]
    return bytes(out)


def strip_seq(body: bytes) -> tuple[int, bytes]:
    """``(seq, plain body)`` of a sequenced body (signature already removed).

    ``seq`` is 0 when the body has no SEQ flag (best effort; the body is
    returned as it is). Raises RemoteProtocolError(MALFORMED) for seq 0, a
    truncated, padded (``81 00``) or oversized varint, or SEQ on a type that
    is never sequenced.
    """
    if not body or not body[0] & FLAG_SEQ:
        return 0, body
    header = body[0]
    if header & TYPE_MASK in NEVER_SEQUENCED:
        raise RemoteProtocolError(
            f"type 0x{header & TYPE_MASK:02x} is never sequenced", ErrorCode.MALFORMED
        )
    seq = 0
    shift = 0
    for i in range(1, 1 + MAX_SEQ_LEN):
        if i >= len(body):
            raise RemoteProtocolError("seq runs past the end of the body")
        byte = body[i]
        seq |= (byte & 0x7F) << shift
        if byte < 0x80:
            if seq > MAX_SEQ:
                break
            if byte == 0 and i > 1:
                raise RemoteProtocolError("seq varint padded with a 0x00 group (not canonical)")
            if seq == 0:
                raise RemoteProtocolError("seq 0 (sequence numbers start at 1)")
            return seq, bytes((header & ~FLAG_SEQ,)) + body[i + 1 :]
        shift += 7
    raise RemoteProtocolError("seq varint longer than 5 bytes or above 2**32-1")
