"""Event and request data <-> the CBOR item carried on the wire (RFC 8949).

No data (``None``) travels as zero bytes, so an event without data costs
nothing. Everything else is one CBOR item in preferred serialisation: floats
in the shortest form that loses nothing (``21.5`` is three bytes), map keys
sorted. Only the API layer calls this module; the gateway forwards the bytes.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from sig.errors import DecodeError, EncodeError

_dumps = cbor2.dumps
_loads = cbor2.loads


def pack(value: Any) -> bytes:
    """Encode ``value`` for the wire; ``None`` is ``b""``. Raises EncodeError."""
    if value is None:
        return b""
    try:
        return _dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise EncodeError(
            f"cannot send {type(value).__name__} as event data: {exc}"
            " (use None, bool, int, float, str, bytes, list, dict)"
        ) from exc


def unpack(raw: bytes) -> Any:
    """Decode data received from the wire; ``b""`` is ``None``. Raises DecodeError.

    A lone number, simple value or string whose size, read from its head, is the
    whole of ``raw`` (most sensor data) takes cbor2.loads directly; everything
    else goes through a decoder that rejects trailing bytes.
    """
    if raw and _cbor_size(raw) == len(raw):
        try:
            return _loads(raw)
        except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
            raise DecodeError(f"event data is not one valid CBOR item: {exc}") from exc
    return _unpack_checked(raw)


def _unpack_checked(raw: bytes) -> Any:
    """Any item, with a check that nothing follows it (cbor2.loads would ignore that)."""
    if not raw:
        return None
    fp = io.BytesIO(raw)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(f"event data is not one valid CBOR item: {exc}") from exc
    if fp.tell() != len(raw):
        raise DecodeError(f"event data has {len(raw) - fp.tell()} bytes after its CBOR item")
    return value


def _cbor_size(raw: bytes) -> int:
    """Size of ``raw``'s first CBOR item if it is a number, simple value or string; else -1."""
    head = raw[0]
    major, info = head >> 5, head & 0x1F
    if info < 24:
        hdr, arg = 1, info
    elif info <= 27:
        hdr = 1 + (1 << (info - 24))
        if len(raw) < hdr:
            return -1
        arg = int.from_bytes(raw[1:hdr], "big")
    else:
        return -1
    if major in (0, 1, 7):
        return hdr
    if major in (2, 3):
        return hdr + arg
    return -1
